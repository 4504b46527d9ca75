//! The in-memory view of the log and the append rules: positions, stream versions,
//! expected versions and idempotency by event id. Pure and synchronous; the engine runs it
//! inside storage transactions.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::Deserialize;

use crate::codec::{self, EventRef, SegmentBuilder, SegmentReader};
use crate::error::{Error, Result};
use crate::event::{Event, EventId};
use crate::storage::Segment;

/// Hashes event ids cheaply: UUIDs already carry random bits, so folding is enough.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(29) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
}

type IdMap = HashMap<EventId, u64, BuildHasherDefault<IdHasher>>;

/// How one event of an append came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendResult {
    /// Newly written at this position.
    Appended(u64),
    /// Its id was already in the log (or earlier in the batch), at this position.
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReadQuery {
    #[serde(default)]
    pub after: u64,
    pub to: Option<u64>,
    pub limit: Option<usize>,
    pub stream: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Events whose `meta.correlationId` is this (a whole command flow).
    pub correlation_id: Option<String>,
}

impl ReadQuery {
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

    pub fn parse(json: &str) -> Result<Self> {
        if json.trim().is_empty() {
            return Ok(ReadQuery::default());
        }
        serde_json::from_str(json).map_err(|e| Error::InvalidArgument(format!("read query: {e}")))
    }
}

#[derive(Debug)]
struct MemSegment {
    first: u64,
    bytes: Vec<u8>,
}

/// Everything known about the log, in memory: the encoded segments and indexes over them.
#[derive(Debug, Default)]
pub struct LogState {
    head: u64,
    segments: Vec<MemSegment>,
    /// `offsets[p - 1]`: byte offset of position `p` inside its segment.
    offsets: Vec<u32>,
    ids: IdMap,
    streams: HashMap<Box<str>, Vec<u64>>,
    types: HashMap<Box<str>, Vec<u64>>,
    correlations: HashMap<Box<str>, Vec<u64>>,
    encoded_bytes: usize,
}

impl LogState {
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Bytes of encoded events held in memory.
    pub fn encoded_bytes(&self) -> usize {
        self.encoded_bytes
    }

    /// The version of `stream` (0 if it has no events).
    pub fn stream_version(&self, stream: &str) -> u64 {
        self.streams.get(stream).map_or(0, |p| p.len() as u64)
    }

    pub fn position_of(&self, id: &EventId) -> Option<u64> {
        self.ids.get(id).copied()
    }

    /// Adds stored segments to the view, skipping events it already has. Segments must
    /// continue the log without a gap.
    pub fn ingest(&mut self, segments: &[Segment]) -> Result<()> {
        for segment in segments {
            let reader = SegmentReader::new(&segment.bytes)?;
            let (first, count) = (reader.first(), u64::from(reader.event_count()));
            if first + count <= self.head + 1 {
                continue; // nothing new in it
            }
            if first > self.head + 1 {
                return Err(Error::Corrupt(format!(
                    "segment starts at position {first} but the log ends at {}",
                    self.head
                )));
            }
            if first == self.head + 1 {
                self.add_segment(first, segment.bytes.clone())?;
            } else {
                // A compacted segment that overlaps what we have: keep only its new tail.
                let mut builder = SegmentBuilder::new(self.head + 1);
                for event in reader {
                    let event = event?;
                    if event.position > self.head {
                        builder.push(&event);
                    }
                }
                self.add_segment(first.max(self.head + 1), builder.finish())?;
            }
        }
        Ok(())
    }

    fn add_segment(&mut self, first: u64, bytes: Vec<u8>) -> Result<()> {
        let mut reader = SegmentReader::new(&bytes)?;
        if reader.first() != first || first != self.head + 1 {
            return Err(Error::Corrupt(format!(
                "segment header says {}, expected {first}",
                reader.first()
            )));
        }
        // The count comes from stored bytes: reserve no more than the bytes can hold.
        let capacity = (reader.event_count() as usize).min(codec::max_records(bytes.len()));
        let mut new_offsets = Vec::with_capacity(capacity);
        let mut indexed = Vec::with_capacity(capacity);
        loop {
            let offset = reader.offset();
            match reader.next() {
                None => break,
                Some(event) => {
                    let event = event?;
                    let offset = u32::try_from(offset)
                        .map_err(|_| Error::Corrupt("segment over 4 GiB".into()))?;
                    new_offsets.push(offset);
                    indexed.push((
                        event.id,
                        event.position,
                        event.stream,
                        event.event_type,
                        correlation_of(event.meta),
                    ));
                }
            }
        }
        // Decoded fully without error: now commit to the indexes.
        for (id, position, stream, event_type, correlation) in indexed {
            self.ids.insert(id, position);
            push_index(&mut self.streams, stream, position);
            push_index(&mut self.types, event_type, position);
            if let Some(correlation) = correlation {
                push_index(&mut self.correlations, &correlation, position);
            }
        }
        self.head += new_offsets.len() as u64;
        self.offsets.extend(new_offsets);
        self.encoded_bytes += bytes.len();
        self.segments.push(MemSegment { first, bytes });
        Ok(())
    }

    /// Records a segment that storage has committed.
    pub fn commit(&mut self, segment: Segment) -> Result<()> {
        self.add_segment(segment.first, segment.bytes)
    }

    /// Forgets everything (the confirmed log was reset).
    pub fn clear(&mut self) {
        *self = LogState::default();
    }

    /// The event at `position`, borrowed from the segment bytes.
    pub fn event(&self, position: u64) -> Result<Option<EventRef<'_>>> {
        if position == 0 || position > self.head {
            return Ok(None);
        }
        let index = self.segments.partition_point(|s| s.first <= position) - 1;
        let segment = &self.segments[index];
        let offset = self.offsets[(position - 1) as usize] as usize;
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
        let start = self.segments.partition_point(|s| s.first <= after + 1) - 1;
        for segment in &self.segments[start..] {
            if segment.first > to {
                break;
            }
            let position = (after + 1).max(segment.first);
            let offset = self.offsets[(position - 1) as usize] as usize;
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
        let Some(list) = self.streams.get(stream) else {
            return Ok(());
        };
        let start = list.partition_point(|p| *p <= after);
        for position in &list[start..] {
            if let Some(event) = self.event(*position)? {
                f(event);
            }
        }
        Ok(())
    }

    /// Positions matching `query`, in order. Walks the most selective index and checks
    /// the other conditions on the events themselves.
    pub fn positions(&self, query: &ReadQuery) -> Vec<u64> {
        let to = query.to.unwrap_or(self.head).min(self.head);
        let limit = query.limit.unwrap_or(usize::MAX);
        fn lookup<'a>(
            index: &'a HashMap<Box<str>, Vec<u64>>,
            key: &Option<String>,
        ) -> Option<&'a [u64]> {
            key.as_deref()
                .map(|k| index.get(k).map_or(&[][..], |l| l.as_slice()))
        }
        let candidates = lookup(&self.streams, &query.stream)
            .or_else(|| lookup(&self.correlations, &query.correlation_id))
            .or_else(|| lookup(&self.types, &query.event_type));
        let Some(list) = candidates else {
            let end = to.min(query.after.saturating_add(limit as u64));
            return (query.after + 1..=end).collect();
        };
        let start = list.partition_point(|p| *p <= query.after);
        let needs_check = [
            query.stream.is_some(),
            query.correlation_id.is_some(),
            query.event_type.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
            > 1;
        list[start..]
            .iter()
            .copied()
            .take_while(|p| *p <= to)
            .filter(|p| !needs_check || matches!(self.event(*p), Ok(Some(e)) if query.matches(&e)))
            .take(limit)
            .collect()
    }

    /// The events matching `query`, owned.
    pub fn read(&self, query: &ReadQuery) -> Result<Vec<Event>> {
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
        let mut write = |e: EventRef<'_>| {
            if *count > 0 {
                out.push(b',');
            }
            *count += 1;
            e.write_json(out, false);
        };
        if query.stream.is_none() && query.event_type.is_none() && query.correlation_id.is_none() {
            let to = query.to.unwrap_or(self.head);
            let to = to.min(
                query
                    .after
                    .saturating_add(query.limit.unwrap_or(usize::MAX) as u64),
            );
            self.for_each_in(query.after, to, write)
        } else {
            for position in self.positions(query) {
                if let Some(e) = self.event(position)? {
                    write(e);
                }
            }
            Ok(())
        }
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
    /// overhead low. Positions and offsets are unchanged except for the header shift.
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
            // Re-base offsets: a record of part i moves by the body bytes of parts before it.
            let mut shift = 0usize;
            for part in run.iter() {
                let (_, count) = codec::header(&part.bytes)?;
                let base = (part.first - 1) as usize;
                for offset in offsets.iter_mut().skip(base).take(count as usize) {
                    *offset = (*offset as usize + shift) as u32;
                }
                shift += part.bytes.len() - codec::HEADER_LEN;
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
    #[derive(Deserialize)]
    struct Correlated {
        #[serde(rename = "correlationId")]
        correlation_id: Option<String>,
    }
    let meta = meta.filter(|m| m.contains("\"correlationId\""))?;
    serde_json::from_str::<Correlated>(meta)
        .ok()?
        .correlation_id
}

fn push_index(index: &mut HashMap<Box<str>, Vec<u64>>, key: &str, position: u64) {
    match index.get_mut(key) {
        Some(list) => list.push(position),
        None => {
            index.insert(key.into(), vec![position]);
        }
    }
}

fn into_string(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| Error::Corrupt(format!("event text is not UTF-8: {e}")))
}
