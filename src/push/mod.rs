//! Core: what a sync server decides about a push, written once for every backend
//! (SQLite, PostgreSQL) and the in-memory test server: the push rules ([`rules`]) and the
//! authorities that re-check events of the streams they claim ([`authority`]).
pub mod authority;
pub mod rules;

pub use authority::{Authorities, Authority, DeciderAuthority};
pub use rules::{plan_push, reused_id_reason, Placed, PushCheck, PushPlan, Refusal, Stored};
