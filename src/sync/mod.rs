//! Sync: the protocol shared by client and server, the server's push rules, and the
//! client (outbox, pulls, live loop) with its transports.
pub mod authority;
pub mod client;
#[cfg(target_arch = "wasm32")]
pub mod fetch;
#[cfg(all(feature = "http-client", not(target_arch = "wasm32")))]
pub mod http;
pub mod pending;
pub mod protocol;
