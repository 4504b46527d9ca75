//! Where the log lives. The engine talks to storage only through [`Storage`], so the same
//! core runs on IndexedDB in a browser and in memory everywhere else.
//!
//! Layout (both backends): `segments` (key: first position, value: one encoded segment
//! per append transaction, see [`crate::codec`]), `snapshots` (key: projection name) and
//! `meta` (head position, format version, and key/value settings such as the sync cursor).

pub mod memory;

#[cfg(target_arch = "wasm32")]
pub mod indexeddb;

use crate::error::Result;

/// The newest storage format this build reads and writes. Opening a store whose
/// format is newer fails with [`crate::Error::FormatTooNew`]; nothing is rewritten.
pub const FORMAT_VERSION: u32 = 1;

/// One stored segment: the encoded events of positions `first..first + count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub first: u64,
    pub bytes: Vec<u8>,
}

/// A projection's state at a position, as JSON, tagged with the projection's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub name: String,
    pub version: u32,
    pub position: u64,
    pub state: String,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionReport {
    pub segments_before: usize,
    pub segments_after: usize,
    pub events: u64,
}

/// Decides, inside the append transaction, what to write. It receives the segments that
/// other writers (other tabs) committed after the caller's known head, in order, and
/// returns the segment to write, or `None` when there is nothing to write.
/// It must not await anything: it runs while the transaction is open.
pub type PrepareAppend<'a> = dyn FnMut(&[Segment]) -> Result<Option<Segment>> + 'a;

/// A storage backend. The methods are `async` because IndexedDB is; the memory backend
/// completes at once. Futures need not be `Send`: a store lives on one thread (one tab).
#[allow(async_fn_in_trait)] // Single-threaded by design; no Send bound wanted.
pub trait Storage {
    /// Opens the store, creating it if needed: checks the format version (writing it on
    /// a new store) and returns the head position (0 for an empty log).
    async fn open(&self) -> Result<u64>;

    /// The segments holding positions after `after`, in order. The first one may start at
    /// or before `after` when compaction merged it with earlier events.
    async fn read_segments(&self, after: u64) -> Result<Vec<Segment>>;

    /// One atomic append: reads the head; if it moved past `known_head`, reads the
    /// segments written since; calls `prepare` with them; writes the returned segment and
    /// the new head. Either all of that is stored or nothing is. Returns the new head.
    async fn append(&self, known_head: u64, prepare: &mut PrepareAppend<'_>) -> Result<u64>;

    /// Merges runs of consecutive segments smaller than `target_bytes` into segments of up
    /// to about `target_bytes`, in one transaction, keeping every event and its order.
    async fn compact(&self, target_bytes: usize) -> Result<CompactionReport>;

    async fn put_snapshot(&self, snapshot: &SnapshotRecord) -> Result<()>;
    async fn snapshot(&self, name: &str) -> Result<Option<SnapshotRecord>>;
    async fn delete_snapshot(&self, name: &str) -> Result<()>;

    /// A value in `meta` other than the head and format (for example a client id).
    async fn meta(&self, key: &str) -> Result<Option<String>>;
    async fn put_meta(&self, key: &str, value: &str) -> Result<()>;

    /// Releases the backend; later calls fail with [`crate::Error::Closed`].
    fn close(&self);
}
