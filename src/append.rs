//! The append rules, shared by both kinds of store: a local store writes a segment of
//! confirmed events; a synced store writes a batch of pending events to its outbox.
//! Checks run against the replica's view: confirmed events, then pending ones.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use crate::codec::{EventRef, SegmentBuilder};
use crate::error::{Error, Result};
use crate::event::{EventId, Limits, NewEvent, MAX_SAFE_INTEGER};
use crate::log::{AppendResult, IdHasher, LogState};
use crate::outbox::PendingLog;
use crate::protocol::PushEvent;

/// The replica's log as an append sees it.
pub struct ReplicaView<'a> {
    pub log: &'a LogState,
    pub pending: &'a PendingLog,
}

impl ReplicaView<'_> {
    pub fn head(&self) -> u64 {
        self.log.head() + self.pending.len() as u64
    }

    pub fn stream_version(&self, stream: &str) -> u64 {
        self.log.stream_version(stream) + self.pending.stream_count(stream)
    }

    pub fn position_of(&self, id: &EventId) -> Option<u64> {
        self.log.position_of(id).or_else(|| {
            self.pending
                .index_of(id)
                .map(|i| self.log.head() + i as u64)
        })
    }
}

/// Where planned events go.
pub trait AppendSink {
    fn push(&mut self, event: &EventRef<'_>, expected: crate::event::ExpectedVersion);
}

impl AppendSink for SegmentBuilder {
    fn push(&mut self, event: &EventRef<'_>, _expected: crate::event::ExpectedVersion) {
        SegmentBuilder::push(self, event);
    }
}

/// Pending events as they will be pushed.
#[derive(Default)]
pub struct OutboxBuilder(pub Vec<PushEvent>);

impl AppendSink for OutboxBuilder {
    fn push(&mut self, event: &EventRef<'_>, expected: crate::event::ExpectedVersion) {
        // The payloads were parsed as JSON on the way in; re-wrapping them cannot fail.
        let raw = |s: &str| serde_json::value::RawValue::from_string(s.to_owned()).ok();
        self.0.push(PushEvent {
            id: event.id,
            stream: event.stream.to_owned(),
            event_type: event.event_type.to_owned(),
            schema_version: event.schema_version,
            data: raw(event.data).unwrap_or_else(|| serde_json::value::RawValue::NULL.to_owned()),
            meta: event.meta.and_then(raw),
            time: event.time,
            expected_version: expected,
        });
    }
}

/// Context of one append.
pub struct AppendContext<'a> {
    pub limits: &'a Limits,
    pub now_ms: u64,
    pub origin: Option<&'a str>,
}

/// Checks `batch` against the rules and hands every event to write to `sink`. Events
/// whose id is already in the replica (or earlier in the batch) are duplicates: they come
/// back with their position and are not written. A broken expectation fails the whole
/// batch. Changes nothing itself.
pub fn plan_append(
    batch: &[NewEvent],
    view: &ReplicaView<'_>,
    context: &AppendContext<'_>,
    next_id: &mut dyn FnMut() -> EventId,
    sink: &mut dyn AppendSink,
) -> Result<Vec<AppendResult>> {
    for event in batch {
        event.validate(context.limits)?;
    }
    let mut planned_ids: HashMap<EventId, u64, BuildHasherDefault<IdHasher>> = HashMap::default();
    let mut planned_versions: HashMap<&str, u64> = HashMap::new();
    let mut next_position = view.head() + 1;
    let mut results = Vec::with_capacity(batch.len());
    for event in batch {
        if let Some(id) = event.id {
            if let Some(position) = view
                .position_of(&id)
                .or_else(|| planned_ids.get(&id).copied())
            {
                results.push(AppendResult::Duplicate(position));
                continue;
            }
        }
        let current = *planned_versions
            .entry(event.stream.as_str())
            .or_insert_with(|| view.stream_version(&event.stream));
        if !event.expected_version.accepts(current) {
            return Err(Error::WrongExpectedVersion {
                stream: event.stream.clone(),
                expected: event.expected_version,
                actual: current,
            });
        }
        if next_position > MAX_SAFE_INTEGER {
            return Err(Error::InvalidArgument("the log is full".into()));
        }
        let id = event.id.unwrap_or_else(&mut *next_id);
        planned_ids.insert(id, next_position);
        planned_versions.insert(event.stream.as_str(), current + 1);
        sink.push(
            &EventRef {
                id,
                position: next_position,
                version: current + 1,
                schema_version: event.schema_version,
                time: event.time.unwrap_or(context.now_ms),
                stream: &event.stream,
                event_type: &event.event_type,
                origin: event.origin.as_deref().or(context.origin),
                meta: event.meta.as_ref().map(|m| m.get()),
                data: event.data.get(),
            },
            event.expected_version,
        );
        results.push(AppendResult::Appended(next_position));
        next_position += 1;
    }
    Ok(results)
}
