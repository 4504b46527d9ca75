//! The append rules, shared by both kinds of store: a local store writes a segment of
//! confirmed events; a synced store writes a batch of pending events to its outbox.
//! Checks run against the replica's view: confirmed events, then pending ones.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use crate::codec::{EventRef, SegmentBuilder};
use crate::error::{Error, Result};
use crate::event::{
    Event, EventId, ExpectedVersion, Limits, NewEvent, StreamEnd, MAX_SAFE_INTEGER,
    STREAM_CLOSED_TYPE, STREAM_ERASED_TYPE,
};
use crate::id_index::IdHasher;
use crate::log::{AppendResult, Lifecycle, LogState, NameHasher};
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

    /// The stream's version and lifecycle in the replica: its confirmed events, then its
    /// pending ones (few: the outbox is scanned only when it holds events of the stream).
    pub fn stream_state(&self, stream: &str) -> (u64, Lifecycle) {
        let mut version = self.log.stream_version(stream);
        let mut lifecycle = self.log.lifecycle(stream);
        if self.pending.stream_count(stream) > 0 {
            for event in self.pending.events().filter(|e| e.stream == stream) {
                version += 1;
                lifecycle.record(&event.event_type, version);
            }
        }
        (version, lifecycle)
    }

    pub fn position_of(&self, id: &EventId) -> Option<u64> {
        self.log.position_of(id).or_else(|| {
            self.pending
                .index_of(id)
                .map(|i| self.log.head() + i as u64)
        })
    }

    /// The event at `position` as a read returns it (a pending one at its provisional
    /// position and version, with `origin`, the replica's client id).
    pub fn event_at(&self, position: u64, origin: Option<&str>) -> Result<Option<Event>> {
        if position <= self.log.head() {
            return Ok(self.log.event(position)?.map(|e| e.to_event(false)));
        }
        let mut found = None;
        self.pending.for_each_provisional(self.log, origin, |e| {
            if e.position == position {
                found = Some(e.to_event(true));
            }
        });
        Ok(found)
    }
}

/// The stream lifecycle rule, one place for every writer (appends on any replica, the
/// server's push rules): an event may go to a stream at `version`, whose last event did
/// `end`, with this expectation, if
///
/// - the stream is not closed (a `$StreamClosed` is final: `STREAM_DELETED`; only its
///   erasure, a `$StreamErased`, may still follow), and
/// - the expected version holds; `no_stream` also holds right after a `$StreamDeleted`
///   (the deleted stream starts again, its versions counting on so that expectations
///   taken before the delete stay meaningful).
pub fn check_stream(
    stream: &str,
    event_type: &str,
    version: u64,
    end: Option<StreamEnd>,
    expected: ExpectedVersion,
) -> Result<()> {
    if end == Some(StreamEnd::Closed) && event_type != STREAM_ERASED_TYPE {
        return Err(Error::StreamDeleted(format!(
            "stream `{stream}` was closed at version {version} ({STREAM_CLOSED_TYPE}): it takes \
             no more events"
        )));
    }
    let restart = expected == ExpectedVersion::NoStream && end == Some(StreamEnd::Deleted);
    if expected.accepts(version) || restart {
        Ok(())
    } else {
        Err(Error::WrongExpectedVersion {
            stream: stream.to_owned(),
            expected,
            actual: version,
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
        // The payloads were checked as JSON on the way in: copied, not parsed again.
        let raw = |s: &str| crate::json::checked_raw(s).ok();
        self.0.push(PushEvent {
            id: event.id,
            stream: event.stream.to_owned(),
            event_type: event.event_type.to_owned(),
            schema_version: event.schema_version,
            data: raw(event.data).unwrap_or_else(|| serde_json::value::RawValue::NULL.to_owned()),
            meta: event.meta.and_then(raw),
            time: event.time,
            expected_version: expected,
            erased: event.erased,
        });
    }
}

/// Context of one append.
pub struct AppendContext<'a> {
    pub limits: &'a Limits,
    pub now_ms: u64,
    pub origin: Option<&'a str>,
}

/// What [`plan_append`] decided: one result per event of the batch, and after each the
/// version its stream will be at once the append is stored (the same for every event of
/// a stream: the stream's version after the whole call).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppendPlan {
    pub results: Vec<AppendResult>,
    pub stream_versions: Vec<u64>,
}

/// Checks `batch` against the rules and hands every event to write to `sink`. Changes
/// nothing itself. The rules, in order:
///
/// 1. a batch longer than `limits.max_batch_events` is `TOO_LARGE`;
/// 2. every event must be valid ([`NewEvent::validate`]); one id twice in the batch is
///    `INVALID_EVENT` (an id names one event);
/// 3. an id already in the replica is a retry only if the event is the same: the same
///    stream, type, schema version, and the same `data` and `meta` JSON text, byte for
///    byte (the expected version, time and origin are not compared: a retry may come
///    after the stream moved on). Anything else is `DUPLICATE_ID`, carrying the stored
///    event;
/// 4. a batch is wholly a retry or wholly new: known ids mixed with new events are
///    `DUPLICATE_ID` naming the known ids. A whole retry writes nothing and returns the
///    stored events' positions as [`AppendResult::Duplicate`];
/// 5. otherwise every event must pass [`check_stream`] (a closed stream is
///    `STREAM_DELETED`; every expected version must hold, `no_stream` also right after a
///    delete; one failure fails the whole batch) and the events are written at the next
///    positions.
pub fn plan_append(
    batch: &[NewEvent],
    view: &ReplicaView<'_>,
    context: &AppendContext<'_>,
    next_id: &mut dyn FnMut() -> EventId,
    sink: &mut dyn AppendSink,
) -> Result<AppendPlan> {
    if batch.len() > context.limits.max_batch_events {
        return Err(Error::TooLarge(format!(
            "one append takes at most {} events (`maxBatch`); this batch has {}: split it, \
             or raise the limit",
            context.limits.max_batch_events,
            batch.len()
        )));
    }
    for event in batch {
        event.validate(context.limits)?;
    }
    let mut in_batch: HashMap<EventId, usize, BuildHasherDefault<IdHasher>> = HashMap::default();
    for (index, event) in batch.iter().enumerate() {
        if let Some(id) = event.id {
            if let Some(first) = in_batch.insert(id, index) {
                return Err(Error::InvalidEvent(format!(
                    "event {index}: id {id} is also the id of event {first} of this batch; \
                     an id names one event"
                )));
            }
        }
    }
    if let Some(plan) = plan_retry(batch, view, context)? {
        return Ok(plan);
    }
    // By stream: the app's own names (see `NameHasher`), looked up once or twice an event.
    let mut planned: HashMap<&str, (u64, Lifecycle), BuildHasherDefault<NameHasher>> =
        HashMap::default();
    let mut results = Vec::with_capacity(batch.len());
    for (next_position, event) in (view.head() + 1..).zip(batch) {
        let (current, lifecycle) = planned
            .entry(event.stream.as_str())
            .or_insert_with(|| view.stream_state(&event.stream));
        check_stream(
            &event.stream,
            &event.event_type,
            *current,
            lifecycle.end(*current),
            event.expected_version,
        )?;
        if next_position > MAX_SAFE_INTEGER {
            return Err(Error::InvalidArgument("the log is full".into()));
        }
        let id = event.id.unwrap_or_else(&mut *next_id);
        *current += 1;
        lifecycle.record(&event.event_type, *current);
        let current = *current;
        sink.push(
            &EventRef {
                id,
                position: next_position,
                version: current,
                schema_version: event.schema_version,
                time: event.time.unwrap_or(context.now_ms),
                stream: &event.stream,
                event_type: &event.event_type,
                origin: event.origin.as_deref().or(context.origin),
                meta: event.meta.as_ref().map(|m| m.get()),
                data: event.data.get(),
                erased: event.erased,
            },
            event.expected_version,
        );
        results.push(AppendResult::Appended(next_position));
    }
    let stream_versions = batch
        .iter()
        .map(|e| {
            planned
                .get(e.stream.as_str())
                .map_or(0, |(version, _)| *version)
        })
        .collect();
    Ok(AppendPlan {
        results,
        stream_versions,
    })
}

/// Rules 3 and 4 of [`plan_append`]: `None` when no id of the batch is known (a new
/// batch), the retry's plan when every event is a known one repeated exactly.
fn plan_retry(
    batch: &[NewEvent],
    view: &ReplicaView<'_>,
    context: &AppendContext<'_>,
) -> Result<Option<AppendPlan>> {
    let mut known: Vec<(usize, EventId, u64)> = Vec::new();
    for (index, event) in batch.iter().enumerate() {
        if let Some(id) = event.id {
            if let Some(position) = view.position_of(&id) {
                known.push((index, id, position));
            }
        }
    }
    let Some(&(_, first_id, first_position)) = known.first() else {
        return Ok(None);
    };
    let stored_at = |position: u64, id: EventId| -> Result<Event> {
        view.event_at(position, context.origin)?.ok_or_else(|| {
            Error::Corrupt(format!("event {id} is indexed at {position} but not there"))
        })
    };
    for &(index, id, position) in &known {
        let stored = stored_at(position, id)?;
        if let Some(field) = difference(&batch[index], &stored) {
            return Err(Error::DuplicateId {
                message: format!(
                    "event {index}: id {id} is already in the log (position {position}, stream \
                     {:?}) as another event: its {field} differs. A retry must repeat the event \
                     exactly; a new event needs a new id",
                    stored.stream
                ),
                event: event_json(&stored)?,
                ids: vec![id.to_string()],
            });
        }
    }
    if known.len() < batch.len() {
        let ids: Vec<String> = known.iter().map(|(_, id, _)| id.to_string()).collect();
        return Err(Error::DuplicateId {
            message: format!(
                "the batch mixes retries of events already in the log ({}) with {} new \
                 event(s); a batch is wholly a retry or wholly new: retry it as it was, or \
                 append the new events without the known ones",
                ids.join(", "),
                batch.len() - known.len()
            ),
            event: event_json(&stored_at(first_position, first_id)?)?,
            ids,
        });
    }
    let results = known
        .iter()
        .map(|&(_, _, position)| AppendResult::Duplicate(position))
        .collect();
    let stream_versions = batch
        .iter()
        .map(|e| view.stream_version(&e.stream))
        .collect();
    Ok(Some(AppendPlan {
        results,
        stream_versions,
    }))
}

/// Which part of `event` differs from the `stored` event under its id, if any: the
/// stream, type, schema version, and the `data` and `meta` JSON text byte for byte. A
/// stored event that was erased has no data or meta left to compare: the same stream,
/// type and schema version make the retry (an old copy of the event, appended again by a
/// replica that missed the erasure, never brings its data back).
pub fn difference(event: &NewEvent, stored: &Event) -> Option<&'static str> {
    if event.stream != stored.stream {
        Some("stream")
    } else if event.event_type != stored.event_type {
        Some("type")
    } else if event.schema_version != stored.schema_version {
        Some("schemaVersion")
    } else if stored.erased || event.erased {
        None
    } else if event.data.get() != stored.data.get() {
        Some("data")
    } else if event.meta.as_ref().map(|m| m.get()) != stored.meta.as_ref().map(|m| m.get()) {
        Some("meta")
    } else {
        None
    }
}

/// A stored event as JSON, the shape reads return.
fn event_json(event: &Event) -> Result<String> {
    let mut out = Vec::with_capacity(128);
    EventRef::from_event(event).write_json(&mut out, event.pending);
    String::from_utf8(out).map_err(|e| Error::Corrupt(format!("event text is not UTF-8: {e}")))
}
