//! annals: an event-sourcing engine for offline-first apps.
//!
//! Four layers; each module imports only from modules before it in this list (checked by
//! `tests/layers.rs`):
//! - **core**, pure Rust that knows nothing of browsers and builds and tests natively:
//!   [`json`] (the JSON reader of what annals decodes itself; imports nothing), [`version`] (expected versions; imports nothing), [`error_code`] (every error code of
//!   every layer, once), [`error`], [`event`] (envelope, ids), [`codec`] (segments),
//!   [`erasure`] (erased events: the rule and the segment rewrites), [`clock`] (`Clock`,
//!   `IdSource`), the [`storage`] trait, [`retention`] (bounded local storage: what a cut
//!   may drop and what it leaves), [`positions`] (an index's list of positions, `u32` while they
//!   fit), [`id_index`] (positions by event id, 12 bytes an event), [`log`] (the in-memory
//!   log),
//!   [`protocol`] (sync messages), [`outbox`] (pending events), [`append`] (the append
//!   rules), [`engine`], [`checkpoints`] (which checkpoints to take, keep and start from;
//!   when a snapshot is trusted), [`fingerprint`] (canonical state hashes for
//!   comparing replicas), [`upcast`] (upcasters: older schema versions of events read as
//!   the current one), [`projection`], [`command_plan`] (a known command id
//!   answers with its earlier result; event ids derived from it), [`command`] (deciders),
//!   [`push`] (the server's push rules and authorities);
//! - **adapters** behind traits: [`storage`] backends (memory; IndexedDB on wasm32) and
//!   [`sync`], the sync client with its transports (`fetch` on wasm32, HTTP natively);
//! - **binding**: [`contract`] (the JSON shapes the binding hands to JavaScript, from which
//!   the package's TypeScript declarations are generated) and `wasm` (wasm32 only), the
//!   `#[wasm_bindgen]` surface JavaScript calls once per batch;
//! - **server**: `server` (feature `server`, native only): axum routes, auth, limits, and
//!   the SQLite and PostgreSQL backends.
//!
//! Test rigs (an in-memory server, an in-process transport, injected faults) are in
//! `testing`, behind the feature `testing` that only the crate's own tests turn on.

pub mod append;
pub mod checkpoints;
pub mod clock;
pub mod codec;
pub mod command;
pub mod command_plan;
pub mod contract;
pub mod engine;
pub mod erasure;
pub mod error;
pub mod error_code;
pub mod event;
pub mod fingerprint;
pub mod id_index;
pub mod json;
pub mod log;
pub mod outbox;
pub mod positions;
pub mod projection;
pub mod protocol;
pub mod push;
pub mod retention;
pub mod storage;
pub mod sync;
pub mod upcast;
pub mod version;

#[cfg(feature = "testing")]
pub mod testing;

#[cfg(target_arch = "wasm32")]
pub mod wasm;

#[cfg(all(feature = "server", not(target_arch = "wasm32")))]
pub mod server;

pub use engine::{AppendOutcome, Bound, Change, Engine, EngineOptions, OnMismatch, SyncTarget};
pub use error::{Error, Result};
pub use error_code::{ErrorCode, ErrorLayer};
pub use event::{Event, EventId, ExpectedVersion, Limits, NewEvent};
pub use log::{AppendResult, ReadQuery};
pub use storage::memory::MemoryStorage;
