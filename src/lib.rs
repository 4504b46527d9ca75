//! annals: an event-sourcing engine for offline-first apps.
//!
//! Three layers:
//! - the pure core ([`event`], [`codec`], [`log`], [`engine`], [`projection`]), which knows
//!   nothing of browsers and builds and tests natively;
//! - adapters behind traits: [`storage`] (memory, IndexedDB on wasm32) and [`clock`]
//!   (wall clock and id source);
//! - the thin `wasm` binding that JavaScript calls, once per batch.

pub mod append;
pub mod checkpoints;
pub mod clock;
pub mod codec;
pub mod command;
pub mod command_plan;
pub mod contract;
pub mod engine;
pub mod error;
pub mod error_code;
pub mod event;
pub mod log;
pub mod projection;
pub mod storage;
pub mod sync;

#[cfg(target_arch = "wasm32")]
pub mod wasm;

#[cfg(all(feature = "server", not(target_arch = "wasm32")))]
pub mod server;

pub use engine::{AppendOutcome, Change, Engine, EngineOptions};
pub use error::{Error, Result};
pub use error_code::{ErrorCode, ErrorLayer};
pub use event::{Event, EventId, ExpectedVersion, Limits, NewEvent};
pub use log::{AppendResult, ReadQuery};
pub use storage::memory::MemoryStorage;
