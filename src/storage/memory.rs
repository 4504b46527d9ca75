//! The memory backend: the whole store in ordered maps, for Node, Rust apps and tests.
//! Handles made with [`MemoryStorage::another_handle`] share one store, the way two tabs
//! share one IndexedDB database.

use std::cell::{Cell, RefCell, RefMut};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use super::{
    check_meta_key, compaction_runs, counters_after, segment_tail, CompactionReport, Fresh, Known,
    PendingRecord, Prepare, Scope, Segment, SnapshotRecord, Storage, FORMAT_BASE, FORMAT_MARKED,
    FORMAT_VERSION, META_RETAINED,
};
use crate::codec;
use crate::erasure;
use crate::error::{Error, Result};

#[derive(Debug, Default)]
struct State {
    format: Option<u32>,
    counters: Known,
    segments: BTreeMap<u64, Vec<u8>>,
    pending: BTreeMap<u64, Vec<u8>>,
    snapshots: HashMap<String, SnapshotRecord>,
    meta: HashMap<String, String>,
}

#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    shared: Rc<RefCell<State>>,
    closed: Rc<Cell<bool>>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Another handle on the same data, as a second tab would have: closing one handle
    /// leaves the other open.
    pub fn another_handle(&self) -> Self {
        MemoryStorage {
            shared: self.shared.clone(),
            closed: Default::default(),
        }
    }

    /// Stores a format number as a newer annals would (for tests of format checks).
    pub fn set_format_for_tests(&self, format: u32) {
        self.shared.borrow_mut().format = Some(format);
    }

    /// The stored format (for tests of when it is raised).
    pub fn format_for_tests(&self) -> Option<u32> {
        self.shared.borrow().format
    }

    /// Number of stored segments (for tests of compaction).
    pub fn segment_count(&self) -> usize {
        self.shared.borrow().segments.len()
    }

    fn state(&self) -> Result<RefMut<'_, State>> {
        if self.closed.get() {
            return Err(Error::Closed);
        }
        Ok(self.shared.borrow_mut())
    }
}

impl State {
    fn changes(&self, known: Known) -> Fresh {
        let log_reset = known.log_generation != self.counters.log_generation;
        // The stored log starts after what retention dropped.
        let after = if log_reset { 0 } else { known.head }.max(self.counters.dropped);
        let segments = if self.counters.head > after || (log_reset && after == 0) {
            segments_after(&self.segments, after)
        } else {
            Vec::new()
        };
        let pending_replaced = known.pending_generation != self.counters.pending_generation;
        let from = if pending_replaced {
            0
        } else {
            known.pending_seq
        };
        let pending = self
            .pending
            .range(from + 1..)
            .map(|(seq, bytes)| PendingRecord {
                seq: *seq,
                bytes: bytes.clone(),
                erased: false,
            })
            .collect();
        let cut =
            self.counters.dropped != 0 && (log_reset || self.counters.dropped != known.dropped);
        Fresh {
            log_reset,
            segments,
            pending_replaced,
            pending,
            now: self.counters,
            retained: cut.then(|| self.meta.get(META_RETAINED).cloned()).flatten(),
        }
    }
}

impl Storage for MemoryStorage {
    async fn open(&self) -> Result<()> {
        let mut state = self.state()?;
        match state.format {
            Some(found) if found > FORMAT_VERSION => Err(Error::FormatTooNew {
                found,
                supported: FORMAT_VERSION,
            }),
            Some(_) => Ok(()),
            None => {
                state.format = Some(FORMAT_BASE);
                Ok(())
            }
        }
    }

    async fn changes(&self, known: Known) -> Result<Fresh> {
        Ok(self.state()?.changes(known))
    }

    async fn outline(&self) -> Result<Fresh> {
        let state = self.state()?;
        Ok(Fresh {
            pending_replaced: true,
            pending: state
                .pending
                .iter()
                .map(|(seq, bytes)| PendingRecord {
                    seq: *seq,
                    bytes: bytes.clone(),
                    erased: false,
                })
                .collect(),
            now: state.counters,
            ..Fresh::default()
        })
    }

    async fn segments_after(&self, after: u64, limit: usize) -> Result<(Vec<Segment>, Known)> {
        let state = self.state()?;
        let mut found = segments_after(&state.segments, after);
        let holder = usize::from(found.first().is_some_and(|s| s.first <= after));
        found.truncate(limit.saturating_add(holder));
        Ok((found, state.counters))
    }

    async fn transact(
        &self,
        known: Known,
        scope: Scope,
        prepare: &mut Prepare<'_>,
    ) -> Result<Known> {
        let mut state = self.state()?;
        let commit = prepare(&state.changes(known))?;
        // Check everything before changing anything: a commit is whole or absent.
        let counters = counters_after(&commit, scope, state.counters)?;
        let cut = match commit.drop_through {
            Some(through) => Some((through, cut_segment(&state.segments, through)?)),
            None => None,
        };
        let erased = if commit.reset_log {
            Vec::new()
        } else {
            erase_stored(&state.segments, &commit.erase)?
        };
        if commit.raises_format() {
            state.format = Some(state.format.unwrap_or(FORMAT_BASE).max(FORMAT_MARKED));
        }
        if commit.reset_log {
            state.segments.clear();
            state.snapshots.clear();
        }
        if let Some(segment) = commit.segment {
            let segment = Rc::unwrap_or_clone(segment);
            state.segments.insert(segment.first, segment.bytes);
        }
        for segment in erased {
            state.segments.insert(segment.first, segment.bytes);
        }
        if let Some(from) = commit.drop_snapshots_from {
            state
                .snapshots
                .retain(|_, snapshot| snapshot.position < from);
        }
        if let Some(snapshot) = commit.put_snapshot {
            state.snapshots.insert(snapshot.name.clone(), snapshot);
        }
        for record in commit.put_pending {
            state.pending.insert(record.seq, record.bytes);
        }
        for seq in commit.delete_pending {
            state.pending.remove(&seq);
        }
        for (key, value) in commit.put_meta {
            state.meta.insert(key, value);
        }
        if let Some((through, tail)) = cut {
            state.segments = state.segments.split_off(&(through + 1));
            if let Some(tail) = tail {
                state.segments.insert(tail.first, tail.bytes);
            }
        }
        state.counters = counters;
        Ok(counters)
    }

    async fn compact(&self, target_bytes: usize) -> Result<CompactionReport> {
        let mut state = self.state()?;
        let segments: Vec<(&u64, &Vec<u8>)> = state.segments.iter().collect();
        let mut events = 0u64;
        for (_, bytes) in &segments {
            events += u64::from(codec::header(bytes)?.1);
        }
        let sizes: Vec<usize> = segments.iter().map(|(_, b)| b.len()).collect();
        let mut merged = BTreeMap::new();
        for run in compaction_runs(&sizes, target_bytes) {
            let parts = &segments[run];
            let bytes = match parts {
                [(_, one)] => (*one).clone(),
                _ => codec::merge(&parts.iter().map(|(_, b)| b.as_slice()).collect::<Vec<_>>())?,
            };
            merged.insert(*parts[0].0, bytes);
        }
        let before = segments.len();
        // Only now, with every merge done, replace the segments: all or nothing.
        state.segments = merged;
        Ok(CompactionReport {
            segments_before: before,
            segments_after: state.segments.len(),
            events,
        })
    }

    async fn put_snapshot(&self, snapshot: &SnapshotRecord) -> Result<()> {
        self.state()?
            .snapshots
            .insert(snapshot.name.clone(), snapshot.clone());
        Ok(())
    }

    async fn snapshot(&self, name: &str) -> Result<Option<SnapshotRecord>> {
        Ok(self.state()?.snapshots.get(name).cloned())
    }

    async fn delete_snapshot(&self, name: &str) -> Result<()> {
        self.state()?.snapshots.remove(name);
        Ok(())
    }

    async fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self.state()?.meta.get(key).cloned())
    }

    async fn put_meta(&self, key: &str, value: &str) -> Result<()> {
        check_meta_key(key)?;
        self.state()?.meta.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    fn close(&self) {
        self.closed.set(true);
    }
}

/// What retention keeps of the segment that holds position `through` when it holds later
/// positions too (the one segment a cut goes through; `None` when the cut falls between
/// segments).
fn cut_segment(segments: &BTreeMap<u64, Vec<u8>>, through: u64) -> Result<Option<Segment>> {
    match segments.range(..=through).next_back() {
        Some((_, bytes)) => segment_tail(bytes, through),
        None => Ok(None),
    }
}

/// The stored segments holding any of `positions` (ascending), rewritten with those events
/// erased ([`crate::erasure`]); segments with nothing left to erase are not returned.
fn erase_stored(segments: &BTreeMap<u64, Vec<u8>>, positions: &[u64]) -> Result<Vec<Segment>> {
    let mut rewritten = Vec::new();
    let mut at = 0;
    while at < positions.len() {
        let Some((first, bytes)) = segments.range(..=positions[at]).next_back() else {
            at += 1;
            continue;
        };
        let (_, count) = codec::header(bytes)?;
        let end = first + u64::from(count);
        let to = at + positions[at..].partition_point(|p| *p < end);
        if let Some(bytes) = erasure::at_positions(bytes, &positions[at..to])? {
            rewritten.push(Segment {
                first: *first,
                bytes,
            });
        }
        at = to.max(at + 1);
    }
    Ok(rewritten)
}

/// The segments holding positions after `after`: those starting after it, plus the one
/// that contains `after + 1` if it starts earlier (after a compaction merged it).
fn segments_after(segments: &BTreeMap<u64, Vec<u8>>, after: u64) -> Vec<Segment> {
    let start = segments
        .range(..=after + 1)
        .next_back()
        .map_or(after + 1, |(first, _)| *first);
    segments
        .range(start..)
        .filter(|(_, bytes)| {
            codec::header(bytes).map_or(true, |(f, c)| f + u64::from(c) > after + 1)
        })
        .map(|(first, bytes)| Segment {
            first: *first,
            bytes: bytes.clone(),
        })
        .collect()
}
