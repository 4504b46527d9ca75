//! Sync: the protocol shared by client and server, and the client's outbox.
pub mod pending;
pub mod protocol;
