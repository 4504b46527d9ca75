//! Sync: the protocol shared by client and server (`protocol`).
pub mod protocol;
