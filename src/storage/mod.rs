//! Where the log lives. The engine talks to storage only through [`Storage`], so the same
//! core runs on IndexedDB in a browser and in memory everywhere else.
//!
//! Layout (both backends): `segments` (key: first position, value: one encoded segment
//! per append transaction, see [`crate::codec`]), `snapshots` (key: projection name) and
//! `meta` (head position, format version, and key/value settings such as the sync cursor).

pub mod memory;

#[cfg(target_arch = "wasm32")]
pub mod indexeddb;

use std::ops::Range;
use std::rc::Rc;

use crate::codec;
use crate::error::{Error, Result};

/// The newest storage format this build reads and writes. Opening a store whose
/// format is newer fails with [`crate::Error::FormatTooNew`]; nothing is rewritten.
/// 2: the counters live in one record only (an append writes one record fewer than in
/// format 1, which older builds, reading four keys, need). 3: the store was cut by
/// retention (a fifth counter) or holds erased events (marked segments), which builds of
/// format 2 cannot read: the transaction that first does either raises the format
/// ([`Commit::raises_format`]), so that such a build refuses the store as too new, and a
/// store that never did stays readable by it. 4 (IndexedDB): the head and the outbox's last
/// sequence number may be ahead of the stored counters, by segments and outbox records that
/// a handle holding the [`WriterLock`] wrote alone; builds of format 3 would read a stale
/// head. Every IndexedDB store is moved to it when opened.
pub const FORMAT_VERSION: u32 = 4;

/// The format a new memory store is written in (IndexedDB stores are moved to
/// [`FORMAT_VERSION`] when opened).
pub const FORMAT_BASE: u32 = 2;

/// The format a retention cut or an erased event raises a store to ([`Commit::raises_format`]).
pub const FORMAT_MARKED: u32 = 3;

/// The lock that makes one handle of a store (one tab) its only writer while it holds it, so
/// that its writes need not first read what other handles wrote: the store's counters stay
/// as it last wrote or read them. Every writer of a store takes it, or none does (a
/// backend given no lock reads the counters in every write transaction). Injected by the
/// platform: Web Locks in a browser.
pub trait WriterLock {
    /// Waits until this handle holds the lock, for one write, and returns the lease: a
    /// number that changes whenever the lock was let go and taken again (what was read
    /// under an earlier lease may have changed since). Each lease given is paired with one
    /// [`WriterLock::leave`] once the write is over, committed or not (a failed wait gives
    /// none, and is not left).
    fn enter(&self) -> Entered<'_>;
    /// The write `enter` was for is over: the lock may be let go to another handle.
    fn leave(&self);
}

/// What [`WriterLock::enter`] gives: the lease at once when the lock is held already (the
/// common case costs no allocation), or a wait for it.
pub enum Entered<'a> {
    Held(u64),
    Wait(std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64>> + 'a>>),
}

impl Entered<'_> {
    pub async fn lease(self) -> Result<u64> {
        match self {
            Entered::Held(lease) => Ok(lease),
            Entered::Wait(wait) => wait.await,
        }
    }
}

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

/// One stored batch of pending (unconfirmed) events of a synced store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRecord {
    pub seq: u64,
    pub bytes: Vec<u8>,
    /// Holds erased events (`"erased": true`), which builds from before erasure would push
    /// without their mark: a record written so raises the store's format. Set when the
    /// record is encoded; `false` on records read back (only writes look at it).
    pub erased: bool,
}

/// What a handle has seen of the store. Each counter only grows, so comparing them with
/// the stored ones tells what another handle (tab) changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Known {
    /// Last confirmed position.
    pub head: u64,
    /// Sequence number of the last pending record.
    pub pending_seq: u64,
    /// Bumped whenever pending records are removed or rewritten.
    pub pending_generation: u64,
    /// Bumped when the confirmed log is reset (the server's epoch changed).
    pub log_generation: u64,
    /// Confirmed events up to this position were dropped by retention (0: none): the
    /// stored log starts after it. Only grows, but for a reset, which sets it to 0.
    pub dropped: u64,
}

/// What changed since a [`Known`], read inside the transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fresh {
    /// The whole confirmed log was replaced: `segments` then hold it from position 1.
    pub log_reset: bool,
    /// Segments holding positions after the known head (see [`Storage::changes`]).
    pub segments: Vec<Segment>,
    /// Pending records were removed or rewritten: `pending` holds all of them.
    pub pending_replaced: bool,
    /// Pending records after the known sequence number, or all of them when replaced.
    pub pending: Vec<PendingRecord>,
    /// The store's counters now.
    pub now: Known,
    /// When retention dropped events since the known counters (`now.dropped` above
    /// `known.dropped`): the record the cut left in `meta` ([`META_RETAINED`]).
    pub retained: Option<String>,
}

/// What one transaction writes. Applied in this order: reset, segment, snapshot, pending,
/// meta.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commit {
    /// Drop every confirmed segment and snapshot first (a changed server epoch).
    pub reset_log: bool,
    /// Must start right after the (possibly reset) head. Shared with the writer, which
    /// keeps the segment in memory once it is stored (its bytes are not copied for that).
    pub segment: Option<Rc<Segment>>,
    /// A projection snapshot, written in the same transaction that checked it still fits
    /// the log (no reset in between).
    pub put_snapshot: Option<SnapshotRecord>,
    /// New records (sequence numbers above the stored one) or rewrites of existing ones.
    pub put_pending: Vec<PendingRecord>,
    pub delete_pending: Vec<u64>,
    pub put_meta: Vec<(String, String)>,
    /// Erasure ([`crate::erasure`]): the stored confirmed events at these positions
    /// (ascending) lose their data and meta; the segments holding them are rewritten
    /// after `segment` is written. Positions the store does not hold are skipped.
    pub erase: Vec<u64>,
    /// Erasure: drop every snapshot taken at or after this position (it folded erased
    /// data). Needs [`Scope::LogAndSnapshots`].
    pub drop_snapshots_from: Option<u64>,
    /// Retention: drop the confirmed events up to this position (above the stored
    /// [`Known::dropped`], at most the head), after everything else. A segment holding
    /// positions on both sides of the cut is rewritten to hold only the later ones.
    pub drop_through: Option<u64>,
}

impl Commit {
    /// Whether it writes what only builds of [`FORMAT_MARKED`] or later read: a retention cut,
    /// or erased events (rewritten here, pulled already erased, or waiting in the outbox).
    pub fn raises_format(&self) -> bool {
        self.drop_through.is_some()
            || !self.erase.is_empty()
            || self.put_pending.iter().any(|record| record.erased)
            || self
                .segment
                .as_ref()
                .is_some_and(|s| codec::is_marked(&s.bytes))
    }

    pub fn is_empty(&self) -> bool {
        !self.reset_log
            && self.drop_through.is_none()
            && self.segment.is_none()
            && self.put_snapshot.is_none()
            && self.put_pending.is_empty()
            && self.delete_pending.is_empty()
            && self.put_meta.is_empty()
            && self.erase.is_empty()
            && self.drop_snapshots_from.is_none()
    }
}

/// What a [`Storage::transact`] may touch besides the log, its outbox and its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// An append, a push verdict, a pull that keeps the log: the commit never resets it.
    Log,
    /// The commit may reset the log (`Commit::reset_log`), which drops every snapshot too,
    /// or write a snapshot (`Commit::put_snapshot`).
    LogAndSnapshots,
}

/// Decides, inside the transaction, what to write, given what other handles changed
/// since the caller's [`Known`]. It must not await anything: it runs while the
/// transaction is open. It may be called more than once (a backend may first try assuming
/// that nothing changed): only the last call's commit is written, so whatever it records
/// for the caller must be set anew by each call.
pub type Prepare<'a> = dyn FnMut(&Fresh) -> Result<Commit> + 'a;

/// A storage backend. The methods are `async` because IndexedDB is; the memory backend
/// completes at once. Futures need not be `Send`: a store lives on one thread (one tab).
#[allow(async_fn_in_trait)] // Single-threaded by design; no Send bound wanted.
pub trait Storage {
    /// Opens the store, creating it if needed: checks the format version, writing it on a
    /// new store.
    async fn open(&self) -> Result<()>;

    /// What changed since `known` (read only). With `Known::default()`, everything stored.
    /// Segments: those holding positions after the known head, in order; the first may
    /// start at or before it when compaction merged it with earlier events.
    async fn changes(&self, known: Known) -> Result<Fresh>;

    /// The counters and every pending record, read together, without the segments: what
    /// a lazy open needs first ([`crate::engine::Engine::open_lazy`]). `segments` is empty,
    /// `pending_replaced` true.
    async fn outline(&self) -> Result<Fresh>;

    /// Up to `limit` segments holding positions after `after`, in order (the first may
    /// start at or before it when compaction merged it with earlier events; it is then
    /// returned besides the `limit`), and the counters, read together (read only).
    async fn segments_after(&self, after: u64, limit: usize) -> Result<(Vec<Segment>, Known)>;

    /// One atomic read-decide-write: reads what changed since `known`, calls `prepare`
    /// with it, and writes the returned [`Commit`] and the new counters. Either all of it is
    /// stored or nothing is. Returns the counters after the commit. A commit that resets
    /// the log needs [`Scope::LogAndSnapshots`] (a narrower transaction lets snapshot writes
    /// run beside appends); with [`Scope::Log`] it fails and nothing is written.
    async fn transact(
        &self,
        known: Known,
        scope: Scope,
        prepare: &mut Prepare<'_>,
    ) -> Result<Known>;

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

/// The `meta` key of the record a retention cut leaves ([`crate::retention::Retained`],
/// JSON), written by the engine in the cut's transaction and read back with
/// [`Fresh::retained`] by the handles that learn of the cut.
pub const META_RETAINED: &str = "retained";

/// Keys of `meta` that the backends keep for themselves (the format and the counters of
/// [`Known`]); a [`Commit`] may not write them.
pub const RESERVED_META_KEYS: [&str; 6] = [
    "format",
    "counters",
    "head",
    "pendingSeq",
    "pendingGeneration",
    "logGeneration",
];

/// Refuses the keys the backends keep for themselves.
pub fn check_meta_key(key: &str) -> Result<()> {
    if RESERVED_META_KEYS.contains(&key) {
        return Err(Error::InvalidArgument(format!(
            "`{key}` is reserved in meta"
        )));
    }
    Ok(())
}

/// Checks `commit` against the store's counters `now` and returns the counters after it:
/// the rules every backend applies before writing anything, so that a refused commit
/// writes nothing. The segment must continue the (possibly reset) log; a pending record
/// above the stored sequence number is new, one at or below it a rewrite.
pub fn counters_after(commit: &Commit, scope: Scope, now: Known) -> Result<Known> {
    if (commit.reset_log || commit.put_snapshot.is_some() || commit.drop_snapshots_from.is_some())
        && scope != Scope::LogAndSnapshots
    {
        return Err(Error::Storage(
            "a commit that resets the log or writes or drops snapshots needs \
             Scope::LogAndSnapshots"
                .into(),
        ));
    }
    for (key, _) in &commit.put_meta {
        check_meta_key(key)?;
    }
    let mut counters = now;
    if commit.reset_log {
        counters.head = 0;
        counters.log_generation += 1;
        counters.dropped = 0;
    }
    if let Some(segment) = &commit.segment {
        let (first, count) = codec::header(&segment.bytes)?;
        if first != counters.head + 1 || first != segment.first || count == 0 {
            return Err(Error::Storage(format!(
                "segment starts at position {first}, but the log continues at {}",
                counters.head + 1
            )));
        }
        counters.head = first + u64::from(count) - 1;
    }
    for record in &commit.put_pending {
        if record.seq > counters.pending_seq {
            counters.pending_seq = record.seq;
        } else {
            counters.pending_generation += 1;
        }
    }
    if !commit.delete_pending.is_empty() {
        counters.pending_generation += 1;
    }
    if let Some(through) = commit.drop_through {
        if commit.reset_log || through <= counters.dropped || through > counters.head {
            return Err(Error::Storage(format!(
                "retention may drop positions {} to {} only (asked to drop up to {through}{})",
                counters.dropped + 1,
                counters.head,
                if commit.reset_log {
                    " with a reset"
                } else {
                    ""
                }
            )));
        }
        counters.dropped = through;
    }
    Ok(counters)
}

/// The events after position `after` of an encoded segment, as a segment of their own
/// starting at `after + 1` (or the segment as it is, when it starts later): what retention
/// keeps of a segment it cuts through. `None` when it holds nothing after `after`.
pub fn segment_tail(bytes: &[u8], after: u64) -> Result<Option<Segment>> {
    let (first, count) = codec::header(bytes)?;
    if first + u64::from(count) <= after + 1 {
        return Ok(None);
    }
    let start = after.max(first - 1);
    let mut builder = codec::SegmentBuilder::new(start + 1);
    for event in codec::SegmentReader::new(bytes)? {
        let event = event?;
        if event.position > after {
            builder.push(&event);
        }
    }
    Ok(Some(Segment {
        first: start + 1,
        bytes: builder.finish(),
    }))
}

/// How compaction groups segments of the given sizes (bytes, in log order): runs of
/// consecutive segments, each cut before the segment that would take it past
/// `target_bytes`. A run of one segment is left as it is.
pub fn compaction_runs(sizes: &[usize], target_bytes: usize) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let (mut start, mut run_bytes) = (0usize, 0usize);
    for (i, size) in sizes.iter().enumerate() {
        if i > start && run_bytes + size > target_bytes {
            runs.push(start..i);
            start = i;
            run_bytes = 0;
        }
        run_bytes += size;
    }
    if start < sizes.len() {
        runs.push(start..sizes.len());
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_cuts_a_run_before_the_segment_that_would_pass_the_target() {
        assert_eq!(compaction_runs(&[], 10), Vec::<Range<usize>>::new());
        assert_eq!(
            compaction_runs(&[4, 4, 4, 20, 1], 10),
            vec![0..2, 2..3, 3..4, 4..5]
        );
        assert_eq!(compaction_runs(&[3, 3, 3], 10), vec![0..3]);
    }

    #[test]
    fn a_commit_writing_a_reserved_meta_key_or_a_snapshot_outside_its_scope_is_refused() {
        let meta = Commit {
            put_meta: vec![("head".into(), "9".into())],
            ..Commit::default()
        };
        assert!(matches!(
            counters_after(&meta, Scope::LogAndSnapshots, Known::default()),
            Err(Error::InvalidArgument(_))
        ));
        let reset = Commit {
            reset_log: true,
            ..Commit::default()
        };
        assert!(counters_after(&reset, Scope::Log, Known::default()).is_err());
        let after = counters_after(
            &reset,
            Scope::LogAndSnapshots,
            Known {
                head: 7,
                ..Known::default()
            },
        );
        assert_eq!(after.map(|k| (k.head, k.log_generation)).ok(), Some((0, 1)));
    }
}
