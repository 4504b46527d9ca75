//! Adapters: the sync client (pushes the outbox, pulls, the live loop) and its transports
//! (`fetch` on wasm32, `http` natively). The messages it exchanges are [`crate::protocol`].
pub mod client;
#[cfg(target_arch = "wasm32")]
pub mod fetch;
#[cfg(all(feature = "http-client", not(target_arch = "wasm32")))]
pub mod http;
