//! The execute plan, written once for Rust aggregates and the TS wrapper's `execute`:
//! a command id already in its stream answers with the events it wrote then, and the
//! events of a command get ids derived from the command id, so that executing the same
//! command twice (a retry, a process manager handling an event again after a crash, two
//! devices running the same process manager) writes its events once: the log and the sync
//! server treat a known event id as a duplicate.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::codec::EventRef;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::event::{Event, EventId, ExpectedVersion, NewEvent};
use crate::json;
use crate::log::ReadQuery;
use crate::storage::Storage;

/// An event that `decide` wants appended to the aggregate's stream.
#[derive(Debug, Clone)]
pub struct Decision {
    pub event_type: String,
    /// The version of the type's schema `data` follows (1 unless the decider says).
    pub schema_version: u32,
    pub data: Box<RawValue>,
    /// App meta (an object); the command ids are added to it.
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Decision {
    pub fn new(event_type: impl Into<String>, data: &impl Serialize) -> Result<Self> {
        let data = serde_json::value::to_raw_value(data)
            .map_err(|e| Error::InvalidEvent(format!("`data` is not JSON-serialisable: {e}")))?;
        Ok(Decision {
            event_type: event_type.into(),
            schema_version: 1,
            data,
            meta: None,
        })
    }

    /// The decided event at schema version `version` (at least 1).
    pub fn with_schema_version(mut self, version: u32) -> Self {
        self.schema_version = version.max(1);
        self
    }
}

/// The id of the `index`-th event of command `command_id`: a UUIDv8 made of the first 122
/// bits of SHA-256(`annals:command:<command_id>:<index>`), the version and variant bits
/// set. The same everywhere: the TS runtime gets its ids from here (`planCommand`), and
/// `tests/fixtures/command_ids.json` pins the bytes.
pub fn command_event_id(command_id: &str, index: usize) -> EventId {
    let digest = Sha256::new()
        .chain_update(b"annals:command:")
        .chain_update(command_id.as_bytes())
        .chain_update(b":")
        .chain_update(index.to_string().as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8: custom
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // the RFC 9562 variant
    EventId(bytes)
}

/// The ids that tie a command's events to its flow, resolved: an unset correlation or
/// causation id is the command id (a command started by a user begins its own flow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandIds {
    pub command_id: String,
    pub correlation_id: String,
    pub causation_id: String,
}

impl CommandIds {
    pub fn new(
        command_id: String,
        correlation_id: Option<String>,
        causation_id: Option<String>,
    ) -> Self {
        CommandIds {
            correlation_id: correlation_id.unwrap_or_else(|| command_id.clone()),
            causation_id: causation_id.unwrap_or_else(|| command_id.clone()),
            command_id,
        }
    }
}

/// `meta.commandId`, when the event has one (the substring test keeps events without
/// meta off the parser).
pub fn command_id_of(meta: Option<&str>) -> Option<String> {
    let meta = meta.filter(|m| m.contains("\"commandId\""))?;
    json::parse(meta, |r| json::string_field(r, "commandId"))
        .ok()
        .flatten()
}

/// The batch that carries `decisions` to `stream`: ids derived from the command id, the
/// app's meta with `aggregate` (when named), `commandId`, `correlationId` and
/// `causationId` added, and the first event expecting the stream at `expected_version`
/// (the batch is atomic, so one check covers it).
pub fn plan_batch(
    stream: &str,
    aggregate: Option<&str>,
    ids: &CommandIds,
    expected_version: u64,
    decisions: Vec<Decision>,
) -> Result<Vec<NewEvent>> {
    let mut batch = Vec::with_capacity(decisions.len());
    for (i, decision) in decisions.into_iter().enumerate() {
        let mut meta: Map<String, Value> = decision.meta.unwrap_or_default();
        if let Some(aggregate) = aggregate {
            meta.insert("aggregate".into(), aggregate.into());
        }
        meta.insert("commandId".into(), ids.command_id.clone().into());
        meta.insert("correlationId".into(), ids.correlation_id.clone().into());
        meta.insert("causationId".into(), ids.causation_id.clone().into());
        let event = NewEvent {
            id: Some(command_event_id(&ids.command_id, i)),
            stream: stream.to_owned(),
            event_type: decision.event_type,
            schema_version: decision.schema_version,
            data: decision.data,
            meta: None,
            expected_version: if i == 0 {
                ExpectedVersion::Exact(expected_version)
            } else {
                ExpectedVersion::Any
            },
            time: None,
            erased: false,
            origin: None,
        }
        .with_meta(&meta)?;
        batch.push(event);
    }
    Ok(batch)
}

/// Where command `command_id` wrote to `stream` before: the positions of its events
/// (confirmed, then pending), with the stream's version after its last one; `None` when the
/// stream holds none of its events. Needs the complete log.
pub fn command_positions<S: Storage>(
    engine: &Engine<S>,
    stream: &str,
    command_id: &str,
) -> Result<Option<(Vec<u64>, u64)>> {
    if command_id.is_empty() {
        return Err(Error::InvalidArgument(
            "a command id must be a non-empty string".into(),
        ));
    }
    if !engine.is_complete() {
        return Err(Error::InvalidArgument(
            "the log is still loading: a command's earlier result waits for it".into(),
        ));
    }
    let mut positions = Vec::new();
    let mut version = 0;
    let mut visit = |event: EventRef<'_>| {
        if command_id_of(event.meta).as_deref() == Some(command_id) {
            positions.push(event.position);
            version = event.version;
        }
    };
    engine.fold_stream(stream, 0, &mut visit)?;
    engine.fold_pending_stream(stream, &mut visit)?;
    Ok((!positions.is_empty()).then_some((positions, version)))
}

/// The events command `command_id` wrote to `stream` before, with the stream's version
/// after its last one ([`command_positions`]).
pub fn command_result<S: Storage>(
    engine: &Engine<S>,
    stream: &str,
    command_id: &str,
) -> Result<Option<(Vec<Event>, u64)>> {
    let Some((positions, version)) = command_positions(engine, stream, command_id)? else {
        return Ok(None);
    };
    let mut events = Vec::with_capacity(positions.len());
    for position in positions {
        events.extend(engine.read(&ReadQuery {
            after: position - 1,
            to: Some(position),
            ..Default::default()
        })?);
    }
    Ok(Some((events, version)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_uuidv8_derived_from_the_command_id_and_index() {
        let a = command_event_id("cmd-1", 0);
        assert_eq!(a, command_event_id("cmd-1", 0));
        assert_ne!(a, command_event_id("cmd-1", 1));
        assert_ne!(a, command_event_id("cmd-2", 0));
        let text = a.to_string();
        assert_eq!(&text[14..15], "8", "version 8: {text}");
        assert!("89ab".contains(&text[19..20]), "RFC variant: {text}");
    }

    #[test]
    fn unset_flow_ids_default_to_the_command_id() {
        let ids = CommandIds::new("c".into(), None, Some("e".into()));
        assert_eq!(ids.correlation_id, "c");
        assert_eq!(ids.causation_id, "e");
    }

    #[test]
    fn the_command_id_is_read_from_meta() {
        assert_eq!(
            command_id_of(Some(r#"{"commandId":"x"}"#)).as_deref(),
            Some("x")
        );
        assert_eq!(command_id_of(Some(r#"{"other":1}"#)), None);
        assert_eq!(command_id_of(None), None);
    }
}
