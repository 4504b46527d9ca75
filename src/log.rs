//! The in-memory view of the log and the append rules: positions, stream versions,
//! expected versions and idempotency by event id. Pure and synchronous; the engine runs it
//! inside storage transactions.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::Deserialize;

use crate::codec::{self, EventRef, SegmentBuilder, SegmentReader};
use crate::erasure::{self, Erasure};
use crate::error::{Error, Result};
use crate::event::{Event, EventId, StreamEnd};
use crate::id_index::IdIndex;
use crate::json::{self, JsonResult, Reader};
use crate::positions::Positions;
use crate::retention::{not_retained, Retained, StreamBase};
use crate::storage::Segment;

/// How one event of an append came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendResult {
    /// Newly written at this position.
    Appended(u64),
    /// The same event was already in the log, at this position (a retry: nothing written).
    Duplicate(u64),
}

impl AppendResult {
    pub fn position(&self) -> u64 {
        match *self {
            AppendResult::Appended(p) | AppendResult::Duplicate(p) => p,
        }
    }
}

/// A read request. All bounds are optional; `after` is exclusive, `to` inclusive.
///
/// The bounds and filters (`after`, `to`, `stream`, `fromVersion`, `type`,
/// `correlationId`) choose the events; `backwards` only orders them newest first, and
/// `limit` counts from the end the order starts at (the newest when backwards). So the
/// next page backwards is `to: <the oldest position read> - 1`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReadQuery {
    #[serde(default)]
    pub after: u64,
    pub to: Option<u64>,
    pub limit: Option<usize>,
    pub stream: Option<String>,
    /// With `stream`: its events from this version on (versions are 1-based; 0 is 1).
    pub from_version: Option<u64>,
    /// Newest first.
    #[serde(default)]
    pub backwards: bool,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Events whose `meta.correlationId` is this (a whole command flow).
    pub correlation_id: Option<String>,
}

impl ReadQuery {
    /// Whether the query is well-formed: `fromVersion` needs a `stream`.
    pub fn check(&self) -> Result<()> {
        if self.from_version.is_some() && self.stream.is_none() {
            return Err(Error::InvalidArgument(
                "`fromVersion` counts within a stream: give `stream` too".into(),
            ));
        }
        Ok(())
    }

    /// Whether the query reads a range of positions (no filter to look up in an index).
    pub fn is_range(&self) -> bool {
        self.stream.is_none() && self.event_type.is_none() && self.correlation_id.is_none()
    }

    /// Whether `event` meets the version condition (`fromVersion`), besides
    /// [`ReadQuery::matches`]: for pending events, which no index covers.
    pub fn matches_version(&self, event: &EventRef<'_>) -> bool {
        self.from_version.is_none_or(|v| event.version >= v)
    }

    /// Whether `event` meets the stream, type and correlation conditions (not the bounds).
    pub fn matches(&self, event: &EventRef<'_>) -> bool {
        self.stream.as_deref().is_none_or(|s| s == event.stream)
            && self
                .event_type
                .as_deref()
                .is_none_or(|t| t == event.event_type)
            && self
                .correlation_id
                .as_deref()
                .is_none_or(|c| correlation_of(event.meta).as_deref() == Some(c))
    }

    /// Reads a query (unknown fields refused).
    fn read(r: &mut Reader<'_>) -> JsonResult<Self> {
        let mut query = ReadQuery::default();
        let (mut after, mut to, mut limit, mut stream) = (None, None, None, None);
        let (mut from_version, mut backwards, mut event_type, mut correlation_id) =
            (None, None, None, None);
        r.object(&mut |r, key| match key {
            "after" => r.once(&mut after, key, Reader::u64),
            "to" => r.once(&mut to, key, Reader::opt_uint::<u64>),
            "limit" => r.once(&mut limit, key, Reader::opt_uint::<usize>),
            "stream" => r.once(&mut stream, key, Reader::opt_string),
            "fromVersion" => r.once(&mut from_version, key, Reader::opt_uint::<u64>),
            "backwards" => r.once(&mut backwards, key, Reader::bool),
            "type" => r.once(&mut event_type, key, Reader::opt_string),
            "correlationId" => r.once(&mut correlation_id, key, Reader::opt_string),
            _ => Err(r.unknown_field(key)),
        })?;
        query.after = after.unwrap_or(0);
        query.to = to.flatten();
        query.limit = limit.flatten();
        query.stream = stream.flatten();
        query.from_version = from_version.flatten();
        query.backwards = backwards.unwrap_or(false);
        query.event_type = event_type.flatten();
        query.correlation_id = correlation_id.flatten();
        Ok(query)
    }

    pub fn parse(json: &str) -> Result<Self> {
        if json.trim().is_empty() {
            return Ok(ReadQuery::default());
        }
        let query = json::parse(json, ReadQuery::read)
            .map_err(|e| Error::InvalidArgument(format!("read query: {e}")))?;
        query.check()?;
        Ok(query)
    }
}

#[derive(Debug)]
struct MemSegment {
    first: u64,
    bytes: Vec<u8>,
}

/// Hashes names (streams, types, correlation ids): FNV-1a, much cheaper than SipHash on
/// short keys. The maps hold the app's own names, nothing an outsider chooses.
#[derive(Default)]
pub struct NameHasher(u64);

impl Hasher for NameHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type NameIndex = HashMap<Box<str>, Positions, BuildHasherDefault<NameHasher>>;

/// Where a stream stands in its lifecycle: kept only for streams that ever had a
/// lifecycle event (`$StreamDeleted`, `$StreamClosed`), so it costs nothing for the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lifecycle {
    /// The version of the stream's last `$StreamDeleted` (0: never deleted). Reads of the
    /// stream skip versions up to it.
    pub deleted_at: u64,
    /// The version of its `$StreamClosed` (0: open). Closing is final: it is the last event.
    pub closed_at: u64,
}

impl Lifecycle {
    /// Takes in the stream's event at `version` of type `event_type`.
    pub fn record(&mut self, event_type: &str, version: u64) {
        match StreamEnd::of_type(event_type) {
            Some(StreamEnd::Deleted) => self.deleted_at = version,
            Some(StreamEnd::Closed) => self.closed_at = version,
            None => {}
        }
    }

    /// What the stream's last event (at `version`) did, if it was a lifecycle event: what
    /// the append rules look at.
    pub fn end(&self, version: u64) -> Option<StreamEnd> {
        if self.closed_at != 0 {
            Some(StreamEnd::Closed)
        } else if self.deleted_at != 0 && self.deleted_at == version {
            Some(StreamEnd::Deleted)
        } else {
            None
        }
    }
}

/// The indexes over the log: positions by event id, stream, type and correlation id.
#[derive(Debug, Default)]
struct Index {
    ids: IdIndex,
    streams: NameIndex,
    types: NameIndex,
    correlations: NameIndex,
    lifecycles: HashMap<Box<str>, Lifecycle, BuildHasherDefault<NameHasher>>,
    /// Per stream with events dropped by retention: its version at the cut. Its list in
    /// `streams` holds only the positions after the cut.
    bases: HashMap<Box<str>, u64, BuildHasherDefault<NameHasher>>,
}

impl Index {
    /// An index of nothing but the streams' places at a retention cut.
    fn at_cut(retained: &Retained) -> Self {
        let mut index = Index::default();
        for (stream, base) in &retained.streams {
            index.bases.insert(stream.as_str().into(), base.version);
            if base.deleted_at != 0 || base.closed_at != 0 {
                index.lifecycles.insert(
                    stream.as_str().into(),
                    Lifecycle {
                        deleted_at: base.deleted_at,
                        closed_at: base.closed_at,
                    },
                );
            }
        }
        index
    }

    /// The stream's version at the retention cut (0 when none of its events was dropped).
    fn base(&self, stream: &str) -> u64 {
        self.bases.get(stream).copied().unwrap_or(0)
    }
}

impl Index {
    fn add(&mut self, event: &EventRef<'_>) {
        self.ids.insert(event.id, event.position);
        if StreamEnd::of_type(event.event_type).is_some() {
            self.lifecycles
                .entry(event.stream.into())
                .or_default()
                .record(event.event_type, event.version);
        }
        push_index(&mut self.streams, event.stream, event.position);
        push_index(&mut self.types, event.event_type, event.position);
        if let Some(correlation) = correlation_of(event.meta) {
            push_index(&mut self.correlations, &correlation, event.position);
        }
    }
}

/// Everything known about the log, in memory: the encoded segments and indexes over them.
///
/// It can fill in lazily (see [`crate::engine::Engine::open_lazy`]): the events up to
/// [`LogState::base`] may be missing at first (the segments after a snapshot are read
/// first, the earlier ones later), and the indexes are built once every event is in.
/// Meanwhile the events held can be read; what needs the whole log (stream versions, ids,
/// queries by stream, type or correlation) waits for [`LogState::is_complete`].
#[derive(Debug, Default)]
pub struct LogState {
    /// Positions `..= dropped` were dropped by retention: never held again.
    dropped: u64,
    /// Positions `..= base` are not held (yet); at least `dropped`.
    base: u64,
    head: u64,
    segments: Vec<MemSegment>,
    /// `offsets[p - base - 1]`: byte offset of position `p` inside its segment.
    offsets: Vec<u32>,
    index: Index,
    /// Positions `1 ..= indexed` are in `index`.
    indexed: u64,
    /// The indexes are built by [`LogState::index_more`] once every event is loaded, not
    /// as segments come (a lazily loaded log).
    lazy_index: bool,
    encoded_bytes: usize,
    /// Per erased stream, the version below which its events held here are erased
    /// ([`crate::erasure`]): what the next erasure of the stream need not look at again.
    erased_below: HashMap<Box<str>, u64, BuildHasherDefault<NameHasher>>,
    /// The lowest position erased since [`LogState::take_erased_from`] last looked (0:
    /// none): what folds over the log must fold again from.
    erased_from: u64,
    /// Rewrites that erased events held here, ever (see [`LogState::erasures`]).
    erasures: u64,
}

/// Whether a stored segment adds to the log, and how.
enum Fit {
    /// Nothing new in it.
    Skip,
    /// It starts right after the head.
    Whole,
    /// It overlaps the head (compaction merged it with earlier events): its tail is new.
    Tail,
}

impl LogState {
    /// A log whose first `head` events are yet to be read.
    pub fn unloaded(head: u64) -> Self {
        LogState {
            base: head,
            head,
            lazy_index: true,
            ..LogState::default()
        }
    }

    /// [`LogState::unloaded`] for a log whose events up to `retained.through` were
    /// dropped by retention: its streams start at their places at the cut.
    pub fn unloaded_after_cut(head: u64, retained: &Retained) -> Self {
        LogState {
            dropped: retained.through,
            base: head.max(retained.through),
            head: head.max(retained.through),
            index: Index::at_cut(retained),
            indexed: retained.through,
            lazy_index: true,
            ..LogState::default()
        }
    }

    /// An empty log at `at` (at least the retention cut), to be filled by a lazy load
    /// and joined in front of this one: it starts from this log's cut and the streams'
    /// places there.
    pub fn empty_start_at(&self, at: u64) -> Self {
        let at = at.max(self.dropped);
        LogState {
            dropped: self.dropped,
            base: at,
            head: at,
            index: Index {
                bases: self.index.bases.clone(),
                lifecycles: if self.dropped == 0 {
                    HashMap::default()
                } else {
                    self.index.lifecycles.clone()
                },
                ..Index::default()
            },
            indexed: self.dropped,
            lazy_index: true,
            ..LogState::default()
        }
    }

    /// Positions up to this one were dropped by retention (0: none).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The record a retention cut through `through` leaves: every stream with events up to
    /// it, at its place there. Needs the complete log, held up to `through`.
    pub fn retained_at(&self, through: u64) -> Result<Retained> {
        if !self.is_complete() || through > self.head || through < self.dropped {
            return Err(Error::Storage(format!(
                "a cut through {through} needs the complete log up to it (held: {} to {})",
                self.dropped + 1,
                self.head
            )));
        }
        let mut retained = Retained {
            through,
            ..Retained::default()
        };
        // Every stream with events up to the cut: those with held events, and those an
        // earlier cut dropped wholly (only their base is left).
        let streams = self.index.streams.keys().chain(
            self.index
                .bases
                .keys()
                .filter(|s| !self.index.streams.contains_key(*s)),
        );
        for stream in streams {
            let held = self
                .index
                .streams
                .get(stream)
                .map_or(0, |list| list.partition_point(|p| p <= through))
                as u64;
            let version = self.index.base(stream) + held;
            if version == 0 {
                continue;
            }
            // The lifecycle at the cut. A delete or close after it is held after the cut,
            // and its index entry (rebuilt from the held events) supersedes this one; only
            // the last delete counts, so an earlier delete than a later one is not needed.
            let lifecycle = self.lifecycle(stream);
            let at_cut = |v: u64| if v <= version { v } else { 0 };
            retained.streams.insert(
                stream.to_string(),
                StreamBase {
                    version,
                    deleted_at: at_cut(lifecycle.deleted_at),
                    closed_at: at_cut(lifecycle.closed_at),
                },
            );
        }
        Ok(retained)
    }

    /// Drops the held events up to `retained.through` (a retention cut, here or in another
    /// tab): segments wholly before it go, the one it cuts through keeps its tail, and the
    /// indexes forget the dropped positions (their ids too); the streams' versions and
    /// lifecycles count on from `retained`. A log that ends before the cut (it never held
    /// the events up to it) starts over empty at the cut; the caller reads on from there.
    pub fn drop_through(&mut self, retained: &Retained) -> Result<()> {
        let through = retained.through;
        if through <= self.dropped {
            return Ok(());
        }
        if through >= self.head || !self.is_complete() {
            // Nothing held after the cut (complete at once), or a log still loading, which
            // reads what lies after the cut again.
            let head = self.head.max(through);
            *self = LogState::unloaded_after_cut(head, retained);
            self.lazy_index = head > through;
            return Ok(());
        }
        let keep_from = self.segments.partition_point(|s| s.first <= through) - 1;
        let mut kept: Vec<Segment> = Vec::with_capacity(self.segments.len() - keep_from);
        for (i, segment) in self.segments.drain(..).enumerate().skip(keep_from) {
            if i == keep_from {
                if let Some(tail) = crate::storage::segment_tail(&segment.bytes, through)? {
                    kept.push(tail);
                }
            } else {
                kept.push(Segment {
                    first: segment.first,
                    bytes: segment.bytes,
                });
            }
        }
        let index = std::mem::take(&mut self.index);
        let mut fresh = LogState {
            dropped: through,
            base: through,
            head: through,
            index: Index::at_cut(retained),
            indexed: through,
            lazy_index: false,
            ..LogState::default()
        };
        // The ids, streams, types and correlations after the cut, as indexed already.
        let Index {
            ids,
            streams,
            types,
            correlations,
            lifecycles,
            ..
        } = index;
        let after = |list: Positions| list.tail(list.partition_point(|p| p <= through));
        let mut ids = ids;
        ids.retain(|p| p > through);
        fresh.index.ids = ids;
        for (name, list) in streams {
            if let Some(list) = after(list) {
                fresh.index.streams.insert(name, list);
            }
        }
        for (name, list) in types {
            if let Some(list) = after(list) {
                fresh.index.types.insert(name, list);
            }
        }
        for (name, list) in correlations {
            if let Some(list) = after(list) {
                fresh.index.correlations.insert(name, list);
            }
        }
        // Lifecycles recorded after the cut are the newest; those up to it are in `retained`.
        for (name, lifecycle) in lifecycles {
            let entry = fresh.index.lifecycles.entry(name).or_default();
            entry.deleted_at = entry.deleted_at.max(lifecycle.deleted_at);
            entry.closed_at = entry.closed_at.max(lifecycle.closed_at);
        }
        // Segments are added without indexing (the index above already covers them).
        let held_index = std::mem::take(&mut fresh.index);
        fresh.lazy_index = true;
        fresh.ingest_owned(kept)?;
        fresh.index = held_index;
        fresh.indexed = fresh.head;
        fresh.lazy_index = false;
        *self = fresh;
        Ok(())
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    /// Events `..= base` are not held yet.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Every event is held and indexed.
    pub fn is_complete(&self) -> bool {
        // Once the indexes are built they follow every segment added (`indexed == head`).
        self.base == self.dropped && !self.lazy_index
    }

    /// Bytes of encoded events held in memory.
    pub fn encoded_bytes(&self) -> usize {
        self.encoded_bytes
    }

    /// The version of `stream` (0 if it has no events). Needs the complete log.
    pub fn stream_version(&self, stream: &str) -> u64 {
        debug_assert!(self.is_complete(), "stream versions need the complete log");
        self.index.base(stream) + self.index.streams.get(stream).map_or(0, |p| p.len() as u64)
    }

    /// The version of `stream` at the retention cut: its versions up to this one were
    /// dropped (0 when none). Needs the complete log.
    pub fn stream_base(&self, stream: &str) -> u64 {
        self.index.base(stream)
    }

    /// Where `stream` stands in its lifecycle (deleted, closed). Needs the complete log.
    pub fn lifecycle(&self, stream: &str) -> Lifecycle {
        self.index
            .lifecycles
            .get(stream)
            .copied()
            .unwrap_or_default()
    }

    /// Needs the complete log.
    pub fn position_of(&self, id: &EventId) -> Option<u64> {
        debug_assert!(self.is_complete(), "ids need the complete log");
        // A hit by fingerprint is confirmed against the event the log holds there.
        self.index.ids.get(
            id,
            |position| matches!(self.event(position), Ok(Some(e)) if e.id == *id),
        )
    }

    /// Adds stored segments to the view, skipping events it already has. Segments must
    /// continue the log without a gap.
    pub fn ingest(&mut self, segments: &[Segment]) -> Result<()> {
        for segment in segments {
            match self.fit(&segment.bytes)? {
                Fit::Skip => {}
                Fit::Whole => self.add_segment(self.head + 1, segment.bytes.clone())?,
                Fit::Tail => self.add_tail(&segment.bytes)?,
            }
        }
        Ok(())
    }

    /// [`LogState::ingest`], keeping the segments' bytes rather than copying them.
    pub fn ingest_owned(&mut self, segments: Vec<Segment>) -> Result<()> {
        for segment in segments {
            match self.fit(&segment.bytes)? {
                Fit::Skip => {}
                Fit::Whole => self.add_segment(self.head + 1, segment.bytes)?,
                Fit::Tail => self.add_tail(&segment.bytes)?,
            }
        }
        Ok(())
    }

    /// [`LogState::ingest_owned`] up to position `limit`: events after it are left out
    /// (segments read while the log loads may hold events it has not taken in yet).
    pub fn ingest_until(&mut self, segments: Vec<Segment>, limit: u64) -> Result<()> {
        for segment in segments {
            if self.head >= limit {
                break;
            }
            let (first, count) = codec::header(&segment.bytes)?;
            if first > limit {
                break;
            }
            if first + u64::from(count) - 1 <= limit {
                self.ingest_owned(vec![segment])?;
                continue;
            }
            let mut builder = SegmentBuilder::new(first);
            for event in SegmentReader::new(&segment.bytes)? {
                let event = event?;
                if event.position > limit {
                    break;
                }
                builder.push(&event);
            }
            self.ingest_owned(vec![Segment {
                first,
                bytes: builder.finish(),
            }])?;
        }
        Ok(())
    }

    fn fit(&self, bytes: &[u8]) -> Result<Fit> {
        let (first, count) = codec::header(bytes)?;
        let end = first.checked_add(u64::from(count)).ok_or_else(|| {
            Error::Corrupt(format!("segment at {first} runs past the largest position"))
        })?;
        if end <= self.head + 1 {
            Ok(Fit::Skip)
        } else if first > self.head + 1 {
            Err(Error::Corrupt(format!(
                "segment starts at position {first} but the log ends at {}",
                self.head
            )))
        } else if first == self.head + 1 {
            Ok(Fit::Whole)
        } else {
            Ok(Fit::Tail)
        }
    }

    /// Keeps only the events after the head of a segment that overlaps it.
    fn add_tail(&mut self, bytes: &[u8]) -> Result<()> {
        let mut builder = SegmentBuilder::new(self.head + 1);
        for event in SegmentReader::new(bytes)? {
            let event = event?;
            if event.position > self.head {
                builder.push(&event);
            }
        }
        self.add_segment(self.head + 1, builder.finish())
    }

    fn add_segment(&mut self, first: u64, bytes: Vec<u8>) -> Result<()> {
        if first != self.head + 1 {
            return Err(Error::Corrupt(format!(
                "segment at {first} does not continue the log at {}",
                self.head + 1
            )));
        }
        let before = self.offsets.len();
        let (found, count) = codec::record_offsets(&bytes, &mut self.offsets)?;
        if found != first {
            self.offsets.truncate(before);
            return Err(Error::Corrupt(format!(
                "segment header says {found}, expected {first}"
            )));
        }
        let mut erasures = Vec::new();
        if self.is_complete() && count > 0 {
            // Index as they come once the log is complete; decode everything before
            // touching the indexes, so that a damaged segment changes nothing.
            let decoded: std::result::Result<Vec<EventRef<'_>>, _> =
                SegmentReader::new(&bytes)?.collect();
            match decoded {
                Ok(events) => {
                    for event in &events {
                        self.index.add(event);
                        erasures.extend(Erasure::of(event));
                    }
                }
                Err(e) => {
                    self.offsets.truncate(before);
                    return Err(e.into());
                }
            }
            self.indexed += u64::from(count);
        }
        self.head += u64::from(count);
        self.encoded_bytes += bytes.len();
        self.segments.push(MemSegment { first, bytes });
        // Whoever stored the erasure rewrote the stored events; the copies held here
        // follow the same rule (another tab's erasure, a pulled one, this tab's own).
        for Erasure { stream, before } in erasures {
            self.erase_stream(&stream, before)?;
        }
        Ok(())
    }

    /// The positions of the held events of `stream` below version `before` that are not
    /// erased yet: what [`LogState::erase_stream`] erases, for a commit to rewrite the
    /// same in storage. Needs the complete log (an empty list otherwise).
    pub fn erasable(&self, stream: &str, before: u64) -> Vec<u64> {
        if !self.is_complete() {
            return Vec::new();
        }
        let Some(list) = self.index.streams.get(stream) else {
            return Vec::new();
        };
        // A stream's list holds its events in version order: version v is at v - 1, less
        // the versions retention dropped.
        let base = self.index.base(stream);
        let at = |version: u64| {
            usize::try_from(version.saturating_sub(1).saturating_sub(base))
                .unwrap_or(usize::MAX)
                .min(list.len())
        };
        let done = self.erased_below.get(stream).copied().unwrap_or(0);
        let (from, to) = (at(done), at(before));
        list.slice(from.min(to)..to)
            .filter(|p| *p > self.base)
            .collect()
    }

    /// Erases the held events of `stream` below version `before` ([`crate::erasure`]):
    /// rewrites the segments in memory that hold them. Returns their positions.
    pub fn erase_stream(&mut self, stream: &str, before: u64) -> Result<Vec<u64>> {
        let positions = self.erasable(stream, before);
        self.erase_positions(&positions)?;
        let bound = self.erased_below.entry(stream.into()).or_default();
        *bound = (*bound).max(before);
        Ok(positions)
    }

    /// Counts the rewrites that erased events held here: a state folded while it was `n`
    /// folded no data erased since if it is still `n` (a reset starts it again at 0).
    pub fn erasures(&self) -> u64 {
        self.erasures
    }

    /// The lowest position erased since the last call (0: none), forgotten then.
    pub fn take_erased_from(&mut self) -> u64 {
        std::mem::take(&mut self.erased_from)
    }

    /// Erases the held events at `positions` (ascending), rewriting the segments that
    /// hold them and finding their records' offsets again.
    pub fn erase_positions(&mut self, positions: &[u64]) -> Result<()> {
        let positions: Vec<u64> = positions
            .iter()
            .copied()
            .filter(|p| *p > self.base && *p <= self.head)
            .collect();
        let mut at = 0;
        while at < positions.len() {
            let Some(index) = self
                .segments
                .partition_point(|s| s.first <= positions[at])
                .checked_sub(1)
            else {
                at += 1;
                continue;
            };
            let next_first = self.segments.get(index + 1).map_or(u64::MAX, |s| s.first);
            let end = at + positions[at..].partition_point(|p| *p < next_first);
            let segment = &mut self.segments[index];
            if let Some(bytes) = erasure::at_positions(&segment.bytes, &positions[at..end])? {
                if self.erased_from == 0 || positions[at] < self.erased_from {
                    self.erased_from = positions[at];
                }
                self.erasures += 1;
                let mut fresh = Vec::new();
                codec::record_offsets(&bytes, &mut fresh)?;
                let base = (segment.first - self.base - 1) as usize;
                for (offset, new) in self.offsets.iter_mut().skip(base).zip(fresh) {
                    *offset = new;
                }
                self.encoded_bytes = self.encoded_bytes - segment.bytes.len() + bytes.len();
                segment.bytes = bytes;
            }
            at = end;
        }
        Ok(())
    }

    /// Indexes up to `max_events` more events; true once the log is complete.
    /// Needs every event held ([`LogState::base`] 0).
    pub fn index_more(&mut self, max_events: u64) -> Result<bool> {
        if self.base > self.dropped {
            return Err(Error::Storage(
                "the log is indexed once every event is loaded".into(),
            ));
        }
        let to = self.head.min(self.indexed.saturating_add(max_events));
        let mut index = std::mem::take(&mut self.index);
        // Room for every event still to index, at once: growing the table step by step
        // would leave each smaller one behind in wasm memory, which never shrinks.
        if let Ok(remaining) = usize::try_from(self.head - self.indexed) {
            index.ids.reserve(remaining);
        }
        let result = self.for_each_in(self.indexed, to, |event| index.add(&event));
        self.index = index;
        result?;
        self.indexed = to;
        if to == self.head {
            self.lazy_index = false; // from now on, segments are indexed as they come
        }
        Ok(self.is_complete())
    }

    /// Takes `later`, the log from this one's head on (its own base at or before this
    /// head), as the continuation of this one: the way a log that was read from a
    /// snapshot on gets its earlier events.
    pub fn append_log(&mut self, later: LogState) -> Result<()> {
        if later.base > self.head {
            return Err(Error::Corrupt(format!(
                "the loaded log ends at {} but the rest starts after {}",
                self.head, later.base
            )));
        }
        let segments = later
            .segments
            .into_iter()
            .map(|s| Segment {
                first: s.first,
                bytes: s.bytes,
            })
            .collect();
        self.ingest_owned(segments)
    }

    /// Records a segment that storage has committed.
    pub fn commit(&mut self, segment: Segment) -> Result<()> {
        self.add_segment(segment.first, segment.bytes)
    }

    /// Forgets everything (the confirmed log was reset).
    pub fn clear(&mut self) {
        *self = LogState::default();
    }

    /// Whether the events `after + 1 ..` are held.
    pub fn holds_after(&self, after: u64) -> bool {
        after >= self.base
    }

    fn not_held(&self, position: u64) -> Error {
        if position <= self.dropped {
            return not_retained(&format!("position {position}"), self.dropped, self.head);
        }
        Error::Storage(format!(
            "position {position} is not loaded yet (the log is held from {} on)",
            self.base + 1
        ))
    }

    /// The event at `position`, borrowed from the segment bytes.
    pub fn event(&self, position: u64) -> Result<Option<EventRef<'_>>> {
        if position == 0 || position > self.head {
            return Ok(None);
        }
        if position <= self.base {
            return Err(self.not_held(position));
        }
        let index = self.segments.partition_point(|s| s.first <= position) - 1;
        let segment = &self.segments[index];
        let offset = self.offsets[(position - self.base - 1) as usize] as usize;
        Ok(Some(SegmentReader::record_at(
            &segment.bytes,
            offset,
            position,
        )?))
    }

    /// Calls `f` with every event in `after + 1 ..= to`, in order.
    pub fn for_each_in(&self, after: u64, to: u64, mut f: impl FnMut(EventRef<'_>)) -> Result<()> {
        let to = to.min(self.head);
        if after >= to {
            return Ok(());
        }
        if after < self.base {
            return Err(self.not_held(after + 1));
        }
        let start = self.segments.partition_point(|s| s.first <= after + 1) - 1;
        for segment in &self.segments[start..] {
            if segment.first > to {
                break;
            }
            let position = (after + 1).max(segment.first);
            let offset = self.offsets[(position - self.base - 1) as usize] as usize;
            let reader = SegmentReader::starting_at(&segment.bytes, offset, position)?;
            for event in reader {
                let event = event?;
                if event.position > to {
                    break;
                }
                f(event);
            }
        }
        Ok(())
    }

    /// Calls `f` with the events of `stream` after position `after`, in order.
    pub fn for_each_in_stream(
        &self,
        stream: &str,
        after: u64,
        mut f: impl FnMut(EventRef<'_>),
    ) -> Result<()> {
        if !self.is_complete() {
            return Err(Error::Storage("the log is still loading".into()));
        }
        // Events of the stream dropped by retention that a fold from `after` would need
        // (those before its last delete it would skip anyway).
        let base = self.index.base(stream);
        if after < self.dropped && base > self.lifecycle(stream).deleted_at {
            return Err(not_retained(
                &format!("a fold of stream `{stream}` (versions 1 to {base} dropped)"),
                self.dropped,
                self.head,
            ));
        }
        let Some(list) = self.index.streams.get(stream) else {
            return Ok(());
        };
        let start = list.partition_point(|p| p <= after);
        for position in list.slice(start..list.len()) {
            if let Some(event) = self.event(position)? {
                f(event);
            }
        }
        Ok(())
    }

    /// Whether `query` can be answered now: a query by stream, type or correlation needs
    /// the complete log; a range, the events it covers.
    pub fn check_readable(&self, query: &ReadQuery) -> Result<()> {
        query.check()?;
        if !query.is_range() && !self.is_complete() {
            return Err(Error::Storage(
                "the log is still loading: queries by stream, type or correlation id wait for it"
                    .into(),
            ));
        }
        self.check_retained(query)?;
        // A complete log answers queries by stream, type or correlation from its indexes,
        // which hold no dropped position.
        // The lowest position a range read needs: newest first, only the `limit` newest.
        let to = query.to.unwrap_or(self.head).min(self.head);
        let lowest = match (query.backwards, query.limit) {
            (true, Some(limit)) => query.after.max(to.saturating_sub(limit as u64)),
            _ => query.after,
        };
        if query.is_range() && !self.holds_after(lowest) && to > query.after {
            return Err(self.not_held(lowest + 1));
        }
        Ok(())
    }

    /// Whether `query` can be answered without the events retention dropped: it starts
    /// after the cut, or reads a stream none of whose dropped events it would return (it
    /// starts at a later version, or after a later delete), or reads newest first and the
    /// retained events fill its `limit`. Otherwise `NOT_RETAINED`, naming the range held.
    fn check_retained(&self, query: &ReadQuery) -> Result<()> {
        if self.dropped == 0
            || query.after >= self.dropped
            || query.to.is_some_and(|to| to <= query.after)
        {
            return Ok(());
        }
        if let Some(stream) = query.stream.as_deref() {
            let visible_from = query
                .from_version
                .unwrap_or(1)
                .max(self.lifecycle(stream).deleted_at + 1);
            if self.index.base(stream) < visible_from {
                return Ok(());
            }
        }
        if let (true, Some(limit)) = (query.backwards, query.limit) {
            if self.positions(query).len() >= limit {
                return Ok(());
            }
        }
        let what = match query.stream.as_deref() {
            Some(stream) => format!(
                "a read of stream `{stream}` from version {} (versions 1 to {} dropped)",
                query.from_version.unwrap_or(1).max(1),
                self.index.base(stream)
            ),
            None => format!("a read after position {}", query.after),
        };
        Err(not_retained(&what, self.dropped, self.head))
    }

    /// Positions matching `query`, in its order (newest first when `backwards`), at most
    /// `limit`. Walks the most selective index and checks the other conditions on the
    /// events themselves. Queries by stream, type or correlation need the complete log
    /// ([`LogState::check_readable`]).
    pub fn positions(&self, query: &ReadQuery) -> Vec<u64> {
        let to = query.to.unwrap_or(self.head).min(self.head);
        let limit = query.limit.unwrap_or(usize::MAX);
        static NONE: Positions = Positions::Narrow(Vec::new());
        fn lookup<'a>(index: &'a NameIndex, key: &Option<String>) -> Option<&'a Positions> {
            key.as_deref().map(|k| index.get(k).unwrap_or(&NONE))
        }
        let by_stream = lookup(&self.index.streams, &query.stream);
        let candidates = by_stream
            .or_else(|| lookup(&self.index.correlations, &query.correlation_id))
            .or_else(|| lookup(&self.index.types, &query.event_type));
        let Some(list) = candidates else {
            if query.after >= to {
                return Vec::new();
            }
            let span = to - query.after;
            let count = span.min(limit as u64);
            return if query.backwards {
                (to + 1 - count..=to).rev().collect()
            } else {
                (query.after + 1..=query.after + count).collect()
            };
        };
        let mut start = list.partition_point(|p| p <= query.after);
        if let (Some(_), Some(from)) = (by_stream, query.from_version) {
            // A stream's list holds its events in version order: version v is at
            // v - 1 - base (the versions up to base were dropped by retention).
            let base = query.stream.as_deref().map_or(0, |s| self.index.base(s));
            let at = from.saturating_sub(1).saturating_sub(base);
            start = start.max(usize::try_from(at).unwrap_or(usize::MAX));
        }
        if let (Some(_), Some(stream)) = (by_stream, query.stream.as_deref()) {
            // A deleted stream reads from after its last `$StreamDeleted` (that included).
            let deleted_at = self
                .lifecycle(stream)
                .deleted_at
                .saturating_sub(self.index.base(stream));
            start = start.max(usize::try_from(deleted_at).unwrap_or(usize::MAX));
        }
        let end = list.partition_point(|p| p <= to);
        let slice = list.slice(start.min(end)..end);
        let needs_check = [
            query.stream.is_some(),
            query.correlation_id.is_some(),
            query.event_type.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
            > 1;
        let keep =
            |p: &u64| !needs_check || matches!(self.event(*p), Ok(Some(e)) if query.matches(&e));
        if query.backwards {
            slice.rev().filter(keep).take(limit).collect()
        } else {
            slice.filter(keep).take(limit).collect()
        }
    }

    /// The events matching `query`, owned.
    pub fn read(&self, query: &ReadQuery) -> Result<Vec<Event>> {
        self.check_readable(query)?;
        let mut out = Vec::new();
        for position in self.positions(query) {
            if let Some(e) = self.event(position)? {
                out.push(e.to_event(false));
            }
        }
        Ok(out)
    }

    /// The events matching `query`, as a JSON array.
    pub fn read_json(&self, query: &ReadQuery) -> Result<String> {
        let mut out = Vec::with_capacity(256);
        out.push(b'[');
        self.write_json(query, &mut out, &mut 0)?;
        out.push(b']');
        into_string(out)
    }

    /// Writes the events matching `query` to `out` as comma-separated JSON objects (a
    /// comma first if `out` already holds some), counting them in `count`.
    pub fn write_json(
        &self,
        query: &ReadQuery,
        out: &mut Vec<u8>,
        count: &mut usize,
    ) -> Result<()> {
        self.check_readable(query)?;
        if query.is_range() && !query.backwards {
            let to = query.to.unwrap_or(self.head);
            let to = to.min(
                query
                    .after
                    .saturating_add(query.limit.unwrap_or(usize::MAX) as u64),
            );
            return self.write_range_json(query.after, to, out, count);
        }
        let mut write = |e: EventRef<'_>| {
            if *count > 0 {
                out.push(b',');
            }
            *count += 1;
            e.write_json(out, false);
        };
        for position in self.positions(query) {
            if let Some(e) = self.event(position)? {
                write(e);
            }
        }
        Ok(())
    }

    /// Writes events `after + 1 ..= to` as JSON objects, comma-separated (a comma first
    /// when `count` is not 0), counting them in `count`. Text is copied as stored: the
    /// caller checks the whole output as UTF-8, once.
    fn write_range_json(
        &self,
        after: u64,
        to: u64,
        out: &mut Vec<u8>,
        count: &mut usize,
    ) -> Result<()> {
        let to = to.min(self.head);
        if after >= to {
            return Ok(());
        }
        if after < self.base {
            return Err(self.not_held(after + 1));
        }
        let start = self.segments.partition_point(|s| s.first <= after + 1) - 1;
        for segment in &self.segments[start..] {
            if segment.first > to {
                break;
            }
            let position = (after + 1).max(segment.first);
            let offset = self.offsets[(position - self.base - 1) as usize] as usize;
            codec::write_json_records(&segment.bytes, offset, position, to, false, out, count)?;
        }
        Ok(())
    }

    /// Events `after + 1 ..= to` as a JSON array.
    pub fn range_json(&self, after: u64, to: u64) -> Result<String> {
        self.read_json(&ReadQuery {
            after,
            to: Some(to),
            ..ReadQuery::default()
        })
    }

    /// Number of in-memory segments (compaction merges them).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Merges in-memory segments the way storage compaction does, to keep per-segment
    /// overhead low. Positions are unchanged; offsets move by the header shift (or are
    /// found again where records were re-encoded).
    pub fn compact_memory(&mut self, target_bytes: usize) -> Result<()> {
        let old = std::mem::take(&mut self.segments);
        let mut out: Vec<MemSegment> = Vec::with_capacity(old.len());
        let mut run: Vec<MemSegment> = Vec::new();
        let mut run_bytes = 0;
        let flush = |run: &mut Vec<MemSegment>,
                     out: &mut Vec<MemSegment>,
                     offsets: &mut Vec<u32>|
         -> Result<()> {
            if run.len() <= 1 {
                out.append(run);
                return Ok(());
            }
            let first = run[0].first;
            let parts: Vec<&[u8]> = run.iter().map(|s| s.bytes.as_slice()).collect();
            let merged = codec::merge(&parts)?;
            let bodies: usize = run.iter().map(|s| s.bytes.len() - codec::HEADER_LEN).sum();
            if merged.len() == codec::HEADER_LEN + bodies {
                // A byte copy: a record of part i moves by the body bytes of parts before it.
                let mut shift = 0usize;
                for part in run.iter() {
                    let (_, count) = codec::header(&part.bytes)?;
                    let base = (part.first - self.base - 1) as usize;
                    for offset in offsets.iter_mut().skip(base).take(count as usize) {
                        *offset = (*offset as usize + shift) as u32;
                    }
                    shift += part.bytes.len() - codec::HEADER_LEN;
                }
            } else {
                // Format-1 records were re-encoded (merged with format-2 ones): find them.
                let mut fresh = Vec::new();
                let (_, count) = codec::record_offsets(&merged, &mut fresh)?;
                let base = (first - self.base - 1) as usize;
                for (offset, new) in offsets
                    .iter_mut()
                    .skip(base)
                    .take(count as usize)
                    .zip(fresh)
                {
                    *offset = new;
                }
            }
            out.push(MemSegment {
                first,
                bytes: merged,
            });
            run.clear();
            Ok(())
        };
        for segment in old {
            if !run.is_empty() && run_bytes + segment.bytes.len() > target_bytes {
                flush(&mut run, &mut out, &mut self.offsets)?;
                run_bytes = 0;
            }
            run_bytes += segment.bytes.len();
            run.push(segment);
        }
        flush(&mut run, &mut out, &mut self.offsets)?;
        self.segments = out;
        Ok(())
    }
}

/// `meta.correlationId`, when the event has one. Most events carry no meta, so the
/// substring test keeps this off the hot path.
pub fn correlation_of(meta: Option<&str>) -> Option<String> {
    let meta = meta.filter(|m| m.contains("\"correlationId\""))?;
    json::parse(meta, |r| json::string_field(r, "correlationId"))
        .ok()
        .flatten()
}

fn push_index(index: &mut NameIndex, key: &str, position: u64) {
    match index.get_mut(key) {
        Some(list) => list.push(position),
        None => {
            index.insert(key.into(), Positions::one(position));
        }
    }
}

fn into_string(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| Error::Corrupt(format!("event text is not UTF-8: {e}")))
}
