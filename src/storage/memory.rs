//! The memory backend: the whole store in a `BTreeMap`, for Node, Rust apps and tests.
//! Clones share one store, the way two tabs share one IndexedDB database.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use super::{CompactionReport, PrepareAppend, Segment, SnapshotRecord, Storage, FORMAT_VERSION};
use crate::codec;
use crate::error::{Error, Result};

#[derive(Debug, Default)]
struct State {
    format: Option<u32>,
    head: u64,
    segments: BTreeMap<u64, Vec<u8>>,
    snapshots: HashMap<String, SnapshotRecord>,
    meta: HashMap<String, String>,
}

#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    shared: Rc<RefCell<State>>,
    closed: Rc<std::cell::Cell<bool>>,
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

    /// Number of stored segments (for tests of compaction).
    pub fn segment_count(&self) -> usize {
        self.shared.borrow().segments.len()
    }

    fn state(&self) -> Result<std::cell::RefMut<'_, State>> {
        if self.closed.get() {
            return Err(Error::Closed);
        }
        Ok(self.shared.borrow_mut())
    }
}

impl Storage for MemoryStorage {
    async fn open(&self) -> Result<u64> {
        let mut state = self.state()?;
        match state.format {
            Some(found) if found > FORMAT_VERSION => Err(Error::FormatTooNew {
                found,
                supported: FORMAT_VERSION,
            }),
            Some(_) => Ok(state.head),
            None => {
                state.format = Some(FORMAT_VERSION);
                Ok(state.head)
            }
        }
    }

    async fn read_segments(&self, after: u64) -> Result<Vec<Segment>> {
        let state = self.state()?;
        Ok(segments_after(&state.segments, after))
    }

    async fn append(&self, known_head: u64, prepare: &mut PrepareAppend<'_>) -> Result<u64> {
        let mut state = self.state()?;
        let others = if state.head > known_head {
            segments_after(&state.segments, known_head)
        } else {
            Vec::new()
        };
        let Some(segment) = prepare(&others)? else {
            return Ok(state.head);
        };
        let (first, count) = codec::header(&segment.bytes)?;
        if first != state.head + 1 || first != segment.first {
            return Err(Error::Storage(format!(
                "segment starts at position {first}, but the log continues at {}",
                state.head + 1
            )));
        }
        state.head = first + u64::from(count) - 1;
        state.segments.insert(first, segment.bytes);
        Ok(state.head)
    }

    async fn compact(&self, target_bytes: usize) -> Result<CompactionReport> {
        let mut state = self.state()?;
        let before = state.segments.len();
        let mut events = 0u64;
        let old = std::mem::take(&mut state.segments);
        let mut run: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut run_bytes = 0usize;
        let mut merged = BTreeMap::new();
        let flush =
            |run: &mut Vec<(u64, Vec<u8>)>, merged: &mut BTreeMap<u64, Vec<u8>>| -> Result<()> {
                match run.len() {
                    0 => {}
                    1 => {
                        let (first, bytes) = run.remove(0);
                        merged.insert(first, bytes);
                    }
                    _ => {
                        let first = run[0].0;
                        let parts: Vec<&[u8]> = run.iter().map(|(_, b)| b.as_slice()).collect();
                        merged.insert(first, codec::merge(&parts)?);
                        run.clear();
                    }
                }
                Ok(())
            };
        for (first, bytes) in old {
            let (_, count) = codec::header(&bytes)?;
            events += u64::from(count);
            if !run.is_empty() && run_bytes + bytes.len() > target_bytes {
                flush(&mut run, &mut merged)?;
                run_bytes = 0;
            }
            run_bytes += bytes.len();
            run.push((first, bytes));
        }
        flush(&mut run, &mut merged)?;
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
        self.state()?.meta.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    fn close(&self) {
        self.closed.set(true);
    }
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
        .map(|(first, bytes)| Segment {
            first: *first,
            bytes: bytes.clone(),
        })
        .filter(|s| codec::header(&s.bytes).map_or(true, |(f, c)| f + u64::from(c) > after + 1))
        .collect()
}
