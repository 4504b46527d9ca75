//! The server's storage contract ([`ServerStore`]), the push rules both backends share
//! (re-exported from [`crate::push::rules`]: [`plan_push`]) and the in-process change
//! signal that long polls wait on ([`Changes`]).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

use crate::event::{EventId, StreamEnd};
use crate::protocol::{PullResponse, PushEvent, PushResponse};
pub use crate::push::rules::{plan_push, Placed, PushPlan, Refusal, Stored};

/// A boxed future, so that [`ServerStore`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a storage operation failed. None of these is the client's fault: they map to
/// 500 or 503 in one place ([`crate::server::error::ApiError`]).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The database cannot be reached (connection refused, pool closed, ...).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// `--database` is not a URL this server understands.
    #[error("bad database url: {0}")]
    BadUrl(String),
    /// Stored data does not decode (foreign or damaged database).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A background task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// True when retrying later may help (the database is down or overloaded).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Postgres(e) => {
                // Lost connections, and the SQLSTATE classes that mean "try again later":
                // connection exceptions (08), insufficient resources (53), operator
                // intervention (57P), serialization failures and deadlocks.
                let retryable_state = e.code().is_some_and(|c| {
                    let c = c.code();
                    c.starts_with("08")
                        || c.starts_with("53")
                        || c.starts_with("57P")
                        || c == "40001"
                        || c == "40P01"
                });
                let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
                e.is_closed() || retryable_state || io
            }
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            _ => false,
        }
    }
}

/// A pull stops adding events once its answer holds this many bytes of event payload
/// (always at least one event; `more` tells the client to continue), so that a large
/// `limit` over large events cannot exhaust the server's memory.
pub const PULL_BYTE_BUDGET: usize = 16 * 1024 * 1024;

/// Bytes an event's variable parts take (stream + type + data + meta + origin).
pub fn event_bytes(e: &crate::event::Event) -> usize {
    e.stream.len()
        + e.event_type.len()
        + e.data.get().len()
        + e.meta.as_ref().map_or(0, |m| m.get().len())
        + e.origin.as_ref().map_or(0, String::len)
}

/// A store's identity and extent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreInfo {
    /// Last assigned position (0 = empty).
    pub head: u64,
    /// Random id created with the store; a new epoch means a new life of the store.
    pub epoch: String,
}

/// Server-side event storage. Implementations assign positions under a per-store lock
/// inside the push transaction and commit before they answer.
pub trait ServerStore: Send + Sync + 'static {
    /// "sqlite" or "postgres".
    fn backend(&self) -> &'static str;

    /// Applies `events` in order in one transaction (see [`plan_push`] for the rules) and
    /// commits before returning. Creates the store on first use.
    fn push<'a>(
        &'a self,
        store: &'a str,
        client_id: &'a str,
        events: Vec<PushEvent>,
    ) -> BoxFuture<'a, Result<PushResponse, StoreError>>;

    /// Up to `limit` committed events after position `after`, in order. Creates the store
    /// (and so its epoch) on first use.
    fn pull<'a>(
        &'a self,
        store: &'a str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<PullResponse, StoreError>>;

    /// Head and epoch (creates the store on first use).
    fn info<'a>(&'a self, store: &'a str) -> BoxFuture<'a, Result<StoreInfo, StoreError>>;

    /// Which of `ids` the store holds (none when the store does not exist; it is not
    /// created). For `annals-server import --dry-run`, which counts duplicates without
    /// writing.
    fn stored_ids<'a>(
        &'a self,
        store: &'a str,
        ids: &'a [EventId],
    ) -> BoxFuture<'a, Result<std::collections::HashSet<EventId>, StoreError>>;

    /// Cheap check that the database answers.
    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The change signal: fired after every commit that added events to a store, from this
    /// process or (PostgreSQL) from any instance on the same database.
    fn changes(&self) -> &Changes;
}

/// Per-store change counters that long polls wait on.
///
/// A waiter subscribes *before* it reads, so a commit between its read and its wait still
/// wakes it. Spurious wake-ups are harmless: waiters re-read and wait again.
#[derive(Debug, Default)]
pub struct Changes {
    senders: Mutex<HashMap<String, watch::Sender<u64>>>,
}

/// Past this many idle entries, subscribing sweeps out stores nobody waits on.
const SWEEP_THRESHOLD: usize = 1024;

impl Changes {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, watch::Sender<u64>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.senders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A receiver that changes after the next commit to `store`.
    pub fn subscribe(&self, store: &str) -> watch::Receiver<u64> {
        let mut map = self.lock();
        if map.len() >= SWEEP_THRESHOLD {
            map.retain(|_, tx| tx.receiver_count() > 0);
        }
        match map.entry(store.to_owned()) {
            Entry::Occupied(e) => e.get().subscribe(),
            Entry::Vacant(e) => e.insert(watch::channel(0).0).subscribe(),
        }
    }

    /// Wakes the waiters of `store`.
    pub fn notify(&self, store: &str) {
        let mut map = self.lock();
        if let Some(tx) = map.get(store) {
            if tx.receiver_count() == 0 {
                map.remove(store);
            } else {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// Wakes every waiter (after a lost notification connection, for instance).
    pub fn notify_all(&self) {
        let mut map = self.lock();
        map.retain(|_, tx| tx.receiver_count() > 0);
        for tx in map.values() {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// Distinct streams of a batch, in first-seen order.
pub fn distinct_streams(events: &[PushEvent]) -> Vec<&str> {
    let mut seen: std::collections::HashSet<&str, foldhash::fast::RandomState> =
        std::collections::HashSet::with_capacity_and_hasher(
            events.len(),
            foldhash::fast::RandomState::default(),
        );
    events
        .iter()
        .map(|e| e.stream.as_str())
        .filter(|s| seen.insert(*s))
        .collect()
}

/// A fresh random epoch: 32 lowercase hex digits.
pub fn new_epoch() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| StoreError::Task(format!("no randomness for a new epoch: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Milliseconds since the Unix epoch (informational columns only).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Converts a stored non-negative integer.
pub fn stored_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what}: {value}")))
}

/// A stored schema version: 1 to 2^32 - 1 (as pushes are validated).
pub fn stored_schema_version(value: i64) -> Result<u32, StoreError> {
    u32::try_from(value)
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| StoreError::Corrupt(format!("schema version out of range: {value}")))
}

/// Converts a position, version or time for storage; the request validation keeps them
/// below 2^53, so this only fails on a bug.
pub fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} out of range: {value}")))
}

/// Decodes a stored 16-byte id.
pub fn stored_id(bytes: &[u8]) -> Result<EventId, StoreError> {
    <[u8; 16]>::try_from(bytes)
        .map(EventId)
        .map_err(|_| StoreError::Corrupt(format!("an event id of {} bytes", bytes.len())))
}

/// How `stream_ends.kind` names what a stream's last event did (SQLite and PostgreSQL
/// alike): `open` for an ordinary event again (a deleted stream started anew).
pub fn stream_end_name(end: Option<StreamEnd>) -> &'static str {
    match end {
        Some(StreamEnd::Deleted) => "deleted",
        Some(StreamEnd::Closed) => "closed",
        None => "open",
    }
}

/// What a `stream_ends.kind` names.
pub fn stream_end_from(kind: &str) -> Result<Option<StreamEnd>, StoreError> {
    match kind {
        "deleted" => Ok(Some(StreamEnd::Deleted)),
        "closed" => Ok(Some(StreamEnd::Closed)),
        "open" => Ok(None),
        other => Err(StoreError::Corrupt(format!(
            "stream_ends holds an unknown kind {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_wake_subscribers_and_forget_idle_stores() {
        let changes = Changes::default();
        let mut rx = changes.subscribe("s");
        changes.notify("s");
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        changes.notify_all();
        assert!(rx.has_changed().unwrap());
        drop(rx);
        changes.notify("s");
        assert!(changes.lock().is_empty());
    }

    #[test]
    fn epochs_are_random_hex() {
        let a = new_epoch().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, new_epoch().unwrap());
    }
}
