//! Core: the outbox of a synced store: local events the server has not confirmed yet, in
//! append order, stored as one record per appended batch (key: a local sequence number).
//! The engine keeps it beside the log; the sync client settles it through the engine.
//!
//! Their positions and versions are provisional: position = confirmed head + place in the
//! outbox; version = the stream's confirmed version + earlier pending events of the stream.
//! They move when a pull brings events that the server ordered before them.

use std::collections::{HashMap, HashSet};

use crate::codec::EventRef;
use crate::error::{Error, Result};
use crate::event::{EventId, STREAM_ERASED_TYPE};
use crate::json;
use crate::log::LogState;
use crate::protocol::PushEvent;
use crate::storage::PendingRecord;

/// What a pushed event's JSON adds to its names and payloads (`id`, `time`, keys, quotes,
/// an expected version, escaping of typical text): an upper estimate, so that a push
/// bounded by bytes stays under the server's body limit.
pub const PUSH_ENVELOPE_BYTES: usize = 256;

/// Applies the erasures in `events` (a batch about to enter the outbox) to the batch's own
/// earlier events of the same streams ([`crate::erasure`]).
pub fn erase_within(events: &mut [PushEvent]) {
    for at in 0..events.len() {
        if events[at].event_type == STREAM_ERASED_TYPE {
            let stream = events[at].stream.clone();
            for event in events[..at].iter_mut().filter(|e| e.stream == stream) {
                event.erase();
            }
        }
    }
}

/// One stored batch of pending events.
#[derive(Debug, Clone)]
pub struct PendingBatch {
    pub seq: u64,
    pub events: Vec<PushEvent>,
}

impl PendingBatch {
    pub fn encode(&self) -> Result<PendingRecord> {
        let bytes = serde_json::to_vec(&self.events)
            .map_err(|e| Error::Storage(format!("encoding pending events: {e}")))?;
        Ok(PendingRecord {
            seq: self.seq,
            bytes,
            erased: self.events.iter().any(|e| e.erased),
        })
    }

    pub fn decode(record: &PendingRecord) -> Result<Self> {
        let events = std::str::from_utf8(&record.bytes)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                json::parse(text, |r| r.list(PushEvent::read)).map_err(|e| e.to_string())
            })
            .map_err(|e| Error::Corrupt(format!("pending record {}: {e}", record.seq)))?;
        Ok(PendingBatch {
            seq: record.seq,
            events,
        })
    }
}

/// What a pull or a push verdict does to the outbox, ready to be written in the same
/// transaction as the events and cursor.
#[derive(Debug, Default, Clone)]
pub struct OutboxChange {
    pub delete: Vec<u64>,
    pub rewrite: Vec<PendingBatch>,
}

impl OutboxChange {
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.rewrite.is_empty()
    }
}

/// The outbox in memory.
#[derive(Debug, Default)]
pub struct PendingLog {
    batches: Vec<PendingBatch>,
    ids: HashSet<EventId>,
    per_stream: HashMap<String, u64>,
    len: usize,
}

impl PendingLog {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn last_seq(&self) -> u64 {
        self.batches.last().map_or(0, |b| b.seq)
    }

    pub fn contains(&self, id: &EventId) -> bool {
        self.ids.contains(id)
    }

    /// Pending events of `stream`.
    pub fn stream_count(&self, stream: &str) -> u64 {
        self.per_stream.get(stream).copied().unwrap_or(0)
    }

    pub fn events(&self) -> impl Iterator<Item = &PushEvent> {
        self.batches.iter().flat_map(|b| b.events.iter())
    }

    /// The provisional place of pending event `id` (1-based in the outbox).
    pub fn index_of(&self, id: &EventId) -> Option<usize> {
        self.contains(id)
            .then(|| self.events().position(|e| e.id == *id).map(|i| i + 1))
            .flatten()
    }

    /// Replaces the whole outbox (on open, or when another tab removed records).
    pub fn replace(&mut self, records: &[PendingRecord]) -> Result<()> {
        *self = PendingLog::default();
        self.extend(records)
    }

    /// Adds records appended after the ones known.
    pub fn extend(&mut self, records: &[PendingRecord]) -> Result<()> {
        for record in records {
            if record.seq <= self.last_seq() {
                continue;
            }
            self.push(PendingBatch::decode(record)?);
        }
        Ok(())
    }

    pub fn push(&mut self, batch: PendingBatch) {
        for e in &batch.events {
            self.ids.insert(e.id);
            *self.per_stream.entry(e.stream.clone()).or_default() += 1;
        }
        self.len += batch.events.len();
        self.batches.push(batch);
    }

    /// The first `limit` pending events, in append order (the next push).
    pub fn outgoing(&self, limit: usize) -> Vec<PushEvent> {
        self.events().take(limit).cloned().collect()
    }

    /// The first pending events, in append order, up to `limit` of them and about
    /// `max_bytes` of push body ([`PushEvent::encoded_size`] plus the envelope's
    /// [`PUSH_ENVELOPE_BYTES`] each); always the first one, however large.
    pub fn outgoing_within(&self, limit: usize, max_bytes: usize) -> Vec<PushEvent> {
        let mut bytes = 0usize;
        let mut out = Vec::new();
        for event in self.events().take(limit) {
            bytes = bytes.saturating_add(event.encoded_size() + PUSH_ENVELOPE_BYTES);
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(event.clone());
        }
        out
    }

    /// How the outbox changes when the events `gone` leave it (confirmed or rejected):
    /// records that lose every event are deleted, others are rewritten without them.
    pub fn plan_removal(&self, gone: &HashSet<EventId>) -> OutboxChange {
        let mut change = OutboxChange::default();
        for batch in &self.batches {
            let kept: Vec<PushEvent> = batch
                .events
                .iter()
                .filter(|e| !gone.contains(&e.id))
                .cloned()
                .collect();
            if kept.is_empty() {
                change.delete.push(batch.seq);
            } else if kept.len() != batch.events.len() {
                change.rewrite.push(PendingBatch {
                    seq: batch.seq,
                    events: kept,
                });
            }
        }
        change
    }

    /// How the outbox changes when `streams` are erased after every event in it (a
    /// `$StreamErased` appended after them): the records holding events of those streams
    /// not erased yet are rewritten with those erased ([`crate::erasure`]).
    pub fn plan_erasure(&self, streams: &[&str]) -> OutboxChange {
        let mut change = OutboxChange::default();
        let streams: Vec<&str> = streams
            .iter()
            .copied()
            .filter(|s| self.stream_count(s) > 0)
            .collect();
        if streams.is_empty() {
            return change;
        }
        let erasing = |e: &PushEvent| streams.contains(&e.stream.as_str());
        for batch in &self.batches {
            if batch.events.iter().any(|e| erasing(e) && !e.erased) {
                let mut events = batch.events.clone();
                for event in events.iter_mut().filter(|e| erasing(e)) {
                    event.erase();
                }
                change.rewrite.push(PendingBatch {
                    seq: batch.seq,
                    events,
                });
            }
        }
        change
    }

    /// The erasures waiting in the outbox: each `$StreamErased` pending, as the stream it
    /// erases and the version below which its confirmed events are erased (all of them
    /// held now: the pending erasure comes after them).
    pub fn erasures(&self, confirmed: &LogState) -> Vec<(String, u64)> {
        if !confirmed.is_complete() {
            return Vec::new();
        }
        self.events()
            .filter(|e| e.event_type == STREAM_ERASED_TYPE)
            .map(|e| (e.stream.clone(), confirmed.stream_version(&e.stream) + 1))
            .collect()
    }

    /// Applies a change that storage has committed.
    pub fn apply(&mut self, change: &OutboxChange) {
        let deleted: HashSet<u64> = change.delete.iter().copied().collect();
        let rewritten: HashMap<u64, &PendingBatch> =
            change.rewrite.iter().map(|b| (b.seq, b)).collect();
        let batches = std::mem::take(&mut self.batches);
        *self = PendingLog::default();
        for batch in batches {
            if deleted.contains(&batch.seq) {
                continue;
            }
            match rewritten.get(&batch.seq) {
                Some(new) => self.push((*new).clone()),
                None => self.push(batch),
            }
        }
    }

    /// Calls `f` with every pending event as it appears in the replica's log: positions after
    /// the confirmed head, versions after the stream's confirmed version.
    pub fn for_each_provisional(
        &self,
        confirmed: &LogState,
        origin: Option<&str>,
        mut f: impl FnMut(EventRef<'_>),
    ) {
        let mut versions: HashMap<&str, u64> = HashMap::new();
        for (position, e) in (confirmed.head() + 1..).zip(self.events()) {
            let version = versions
                .entry(e.stream.as_str())
                .or_insert_with(|| confirmed.stream_version(&e.stream));
            *version += 1;
            f(EventRef {
                id: e.id,
                position,
                version: *version,
                schema_version: e.schema_version,
                time: e.time,
                stream: &e.stream,
                event_type: &e.event_type,
                origin,
                meta: e.meta.as_ref().map(|m| m.get()),
                data: e.data.get(),
                erased: e.erased,
            });
        }
    }
}
