//! The server's storage contract ([`ServerStore`]), the push rules both backends share
//! ([`plan_push`]) and the in-process change signal that long polls wait on ([`Changes`]).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

use crate::event::EventId;
use crate::sync::protocol::{PullResponse, PushEvent, PushResponse, PushResult};

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

/// A store's events by id, as far as a push needs them: where they already are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub position: u64,
    pub version: u64,
}

/// The outcome of [`plan_push`]: what to answer and what to write.
#[derive(Debug, Default)]
pub struct PushPlan {
    pub results: Vec<PushResult>,
    /// Indexes into the pushed events of the ones to insert, with their position and
    /// version, in position order.
    pub inserts: Vec<(usize, Placed)>,
    /// Each touched stream's new version (one entry per stream).
    pub stream_versions: Vec<(String, u64)>,
    /// The store's head after the push.
    pub head: u64,
}

/// The push rules, applied event by event in order against the store's state at the
/// start of the push (`head`, the already stored events among the pushed ids, and the
/// current versions of the pushed streams), with the earlier events of the same push
/// taken into account:
///
/// 1. an id already stored (or accepted earlier in this push) answers `duplicate` with
///    the original position and version, and writes nothing;
/// 2. an expected version that the stream's current version does not satisfy answers
///    `rejected` with the actual version, for that event only;
/// 3. otherwise the event is `ok` at head + 1 with its stream's version + 1.
pub fn plan_push(
    head: u64,
    events: &[PushEvent],
    existing: &HashMap<EventId, Placed>,
    versions: &HashMap<String, u64>,
) -> PushPlan {
    let mut plan = PushPlan {
        head,
        ..PushPlan::default()
    };
    let mut accepted: HashMap<EventId, Placed> = HashMap::new();
    let mut current: HashMap<&str, u64> = HashMap::new();
    let mut touched: Vec<&str> = Vec::new();
    for (index, event) in events.iter().enumerate() {
        if let Some(placed) = existing.get(&event.id).or_else(|| accepted.get(&event.id)) {
            plan.results.push(PushResult::Duplicate {
                id: event.id,
                position: placed.position,
                version: placed.version,
            });
            continue;
        }
        let actual = match current.get(event.stream.as_str()) {
            Some(v) => *v,
            None => versions.get(&event.stream).copied().unwrap_or(0),
        };
        if !event.expected_version.accepts(actual) {
            plan.results.push(PushResult::Rejected {
                id: event.id,
                reason: format!(
                    "wrong expected version on stream `{}`: expected {}, actual {}",
                    event.stream, event.expected_version, actual
                ),
                actual_version: Some(actual),
            });
            continue;
        }
        let placed = Placed {
            position: plan.head + 1,
            version: actual + 1,
        };
        plan.head = placed.position;
        if current.insert(&event.stream, placed.version).is_none() {
            touched.push(&event.stream);
        }
        accepted.insert(event.id, placed);
        plan.inserts.push((index, placed));
        plan.results.push(PushResult::Ok {
            id: event.id,
            position: placed.position,
            version: placed.version,
        });
    }
    plan.stream_versions = touched
        .into_iter()
        .filter_map(|s| current.get(s).map(|v| (s.to_owned(), *v)))
        .collect();
    plan
}

/// Distinct streams of a batch, in first-seen order.
pub fn distinct_streams(events: &[PushEvent]) -> Vec<&str> {
    let mut seen = std::collections::HashSet::new();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ExpectedVersion;
    use serde_json::value::RawValue;

    fn ev(n: u8, stream: &str, expected: ExpectedVersion) -> PushEvent {
        PushEvent {
            id: EventId([n; 16]),
            stream: stream.into(),
            event_type: "T".into(),
            data: RawValue::from_string("1".into()).unwrap(),
            meta: None,
            time: 0,
            expected_version: expected,
        }
    }

    #[test]
    fn push_rules_apply_in_order_within_one_batch() {
        let existing = HashMap::from([(
            EventId([9; 16]),
            Placed {
                position: 4,
                version: 2,
            },
        )]);
        let versions = HashMap::from([("a".to_string(), 2u64)]);
        let events = [
            ev(1, "a", ExpectedVersion::Exact(2)),
            ev(2, "a", ExpectedVersion::Exact(2)), // stale: event 1 moved it to 3
            ev(9, "a", ExpectedVersion::NoStream), // duplicate wins over the version check
            ev(3, "b", ExpectedVersion::NoStream),
            ev(1, "a", ExpectedVersion::Any), // duplicate of event 1 of this push
            ev(4, "a", ExpectedVersion::Exact(3)),
        ];
        let plan = plan_push(10, &events, &existing, &versions);
        let statuses: Vec<String> = plan
            .results
            .iter()
            .map(|r| match r {
                PushResult::Ok {
                    position, version, ..
                } => format!("ok {position}/{version}"),
                PushResult::Duplicate {
                    position, version, ..
                } => format!("dup {position}/{version}"),
                PushResult::Rejected { actual_version, .. } => {
                    format!("rejected {}", actual_version.unwrap_or(0))
                }
            })
            .collect();
        assert_eq!(
            statuses,
            [
                "ok 11/3",
                "rejected 3",
                "dup 4/2",
                "ok 12/1",
                "dup 11/3",
                "ok 13/4"
            ]
        );
        assert_eq!(plan.head, 13);
        assert_eq!(
            plan.inserts.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [0, 3, 5]
        );
        assert_eq!(
            plan.stream_versions,
            [("a".to_string(), 4), ("b".to_string(), 1)]
        );
    }

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
