//! The event envelope: ids, expected versions, events to append and stored events.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::json::{self, Reader};
pub use crate::version::{ExpectedVersion, MAX_SAFE_INTEGER};

/// Size limits that every event must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Encoded size of one event (stream + type + data + meta), in bytes.
    pub max_event_bytes: usize,
    /// Length of `stream` and `type`, in bytes.
    pub max_name_bytes: usize,
    /// Events in one append. A larger batch is refused (`TOO_LARGE`) rather than holding
    /// the store's writer (every tab) for seconds; the default is what the sync server
    /// takes in one push ([`DEFAULT_MAX_BATCH`]).
    pub max_batch_events: usize,
}

/// The default [`Limits::max_batch_events`]: the sync server's default events per push.
pub const DEFAULT_MAX_BATCH: usize = 1_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 1024 * 1024,
            max_name_bytes: 1024,
            max_batch_events: DEFAULT_MAX_BATCH,
        }
    }
}

/// A 128-bit event id; annals assigns UUIDv7 ids, apps may bring any UUID.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventId(pub [u8; 16]);

impl std::hash::Hash for EventId {
    /// As two words: a hasher that takes words (the log's id index) hashes it in two steps.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let (high, low) = self.0.split_at(8);
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        state.write_u64(word(high));
        state.write_u64(word(low));
    }
}

impl EventId {
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses the canonical hyphenated form (`8-4-4-4-12` hex digits, any case).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidEvent(format!(
                "`id` must be a UUID such as 0190a4c1-7d2e-7c3a-9f10-2b3c4d5e6f70, got {text:?}"
            ))
        };
        let bytes = text.as_bytes();
        if bytes.len() != 36 || HYPHENS.iter().any(|&at| bytes[at] != b'-') {
            return Err(bad());
        }
        // Every byte goes through one table lookup (servers parse one id per pushed event).
        let mut out = [0u8; 16];
        for (byte, &at) in out.iter_mut().zip(PAIRS.iter()) {
            let (high, low) = (
                HEX_VALUE[bytes[at] as usize],
                HEX_VALUE[bytes[at + 1] as usize],
            );
            if (high | low) > 0xf {
                return Err(bad());
            }
            *byte = (high << 4) | low;
        }
        Ok(EventId(out))
    }

    /// The canonical lowercase hyphenated form, as ASCII.
    fn hyphenated(&self) -> [u8; 36] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [b'-'; 36];
        for (b, &at) in self.0.iter().zip(PAIRS.iter()) {
            text[at] = HEX[(b >> 4) as usize];
            text[at + 1] = HEX[(b & 0xf) as usize];
        }
        text
    }

    /// Writes the canonical lowercase hyphenated form into `out`.
    pub fn write_hyphenated(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.hyphenated());
    }

    /// The canonical form as text.
    fn with_text<T>(&self, f: impl FnOnce(&str) -> T) -> T {
        let text = self.hyphenated();
        // Only ASCII hex digits and hyphens are written.
        f(std::str::from_utf8(&text).unwrap_or_default())
    }
}

/// Where the hyphens of the canonical form are.
const HYPHENS: [usize; 4] = [8, 13, 18, 23];

/// Where each byte's two hex digits start in the canonical form.
const PAIRS: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

/// Each ASCII hex digit's value (either case); 0xff for every other byte.
const HEX_VALUE: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_text(|text| f.write_str(text))
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.with_text(|text| s.serialize_str(text))
    }
}

impl EventId {
    /// Reads an id from the next JSON value (a string).
    pub fn read(r: &mut Reader<'_>) -> json::JsonResult<Self> {
        let text = r.string()?;
        EventId::parse(&text).map_err(|e| r.error(e.to_string()))
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // Parsed from the text where it lies: no string is allocated per id.
        struct Text;
        impl de::Visitor<'_> for Text {
            type Value = EventId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> std::result::Result<EventId, E> {
                EventId::parse(text).map_err(E::custom)
            }
        }
        d.deserialize_str(Text)
    }
}

/// An event the app wants to append, validated.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: Option<EventId>,
    pub stream: String,
    pub event_type: String,
    /// The version of the event type's schema that `data` follows (1 unless the app says
    /// otherwise); upcasters bring older ones to the current version when read.
    pub schema_version: u32,
    /// Raw JSON, stored as given.
    pub data: Box<RawValue>,
    /// Raw JSON object, if any.
    pub meta: Option<Box<RawValue>>,
    pub expected_version: ExpectedVersion,
    /// The time to record instead of the append's clock: an event copied from another log
    /// (a bug bundle, an import) keeps the time it had there.
    pub time: Option<u64>,
    /// Likewise the origin to record instead of the appending store's.
    pub origin: Option<String>,
    /// An event copied from a log where it was erased ([`crate::erasure`]; an import of an
    /// export, say): stored erased, without data or meta.
    pub erased: bool,
}

impl NewEvent {
    /// About the bytes the event takes in a segment (its strings and payloads, plus room
    /// for the id, numbers and an origin), to size buffers up front.
    pub fn encoded_size_hint(&self) -> usize {
        self.stream.len()
            + self.event_type.len()
            + self.data.get().len()
            + self.meta.as_ref().map_or(0, |m| m.get().len())
            + 80
    }

    /// A new event with `data` given as any serialisable value.
    pub fn new(
        stream: impl Into<String>,
        event_type: impl Into<String>,
        data: &impl Serialize,
    ) -> Result<Self> {
        let data = serde_json::value::to_raw_value(data)
            .map_err(|e| Error::InvalidEvent(format!("`data` is not JSON-serialisable: {e}")))?;
        Ok(NewEvent {
            id: None,
            stream: stream.into(),
            event_type: event_type.into(),
            schema_version: 1,
            data,
            meta: None,
            expected_version: ExpectedVersion::Any,
            time: None,
            origin: None,
            erased: false,
        })
    }

    pub fn with_id(mut self, id: EventId) -> Self {
        self.id = Some(id);
        self
    }

    /// The event's schema version (at least 1).
    pub fn with_schema_version(mut self, version: u32) -> Self {
        self.schema_version = version.max(1);
        self
    }

    pub fn expecting(mut self, expected: ExpectedVersion) -> Self {
        self.expected_version = expected;
        self
    }

    pub fn with_meta(mut self, meta: &impl Serialize) -> Result<Self> {
        let meta = serde_json::value::to_raw_value(meta)
            .map_err(|e| Error::InvalidEvent(format!("`meta` is not JSON-serialisable: {e}")))?;
        self.meta = Some(meta);
        Ok(self)
    }

    /// Parses a JSON array of events as the bindings receive it:
    /// `[{ id?, stream, type, schemaVersion?, data?, meta?, expectedVersion? }, ...]`.
    pub fn parse_batch(json: &str) -> Result<Vec<NewEvent>> {
        let mut reader = Reader::new(json);
        let mut events = Vec::new();
        // An event's own error (a field of the wrong kind) stops the array read and is
        // reported as it is; the read's error then only says where it stopped.
        let mut failed = None;
        let read = reader
            .array(&mut |r| match NewEvent::read(r) {
                Ok(event) => {
                    events.push(event);
                    Ok(())
                }
                Err(e) => {
                    let error = r.error("invalid event");
                    failed = Some(prefix_index(e, events.len()));
                    Err(error)
                }
            })
            .and_then(|()| reader.end());
        if let Some(e) = failed {
            return Err(e);
        }
        read.map_err(|e| {
            Error::InvalidEvent(format!("a batch must be a JSON array of events: {e}"))
        })?;
        Ok(events)
    }

    /// One event of a batch: the raw text of each field first, then each checked, so that
    /// a field of the wrong kind is named with what it held.
    fn read<'a>(r: &mut Reader<'a>) -> Result<NewEvent> {
        #[derive(Default)]
        struct Wire<'a> {
            id: Option<&'a str>,
            stream: Option<&'a str>,
            event_type: Option<&'a str>,
            schema_version: Option<&'a str>,
            data: Option<&'a str>,
            meta: Option<&'a str>,
            expected_version: Option<&'a str>,
            time: Option<&'a str>,
            origin: Option<Option<String>>,
            erased: Option<Option<bool>>,
        }
        let mut wire = Wire::default();
        r.object(&mut |r, key| match key {
            "id" => r.once(&mut wire.id, key, Reader::raw),
            "stream" => r.once(&mut wire.stream, key, Reader::raw),
            "type" => r.once(&mut wire.event_type, key, Reader::raw),
            "schemaVersion" => r.once(&mut wire.schema_version, key, Reader::raw),
            "data" => r.once(&mut wire.data, key, Reader::raw),
            "meta" => r.once(&mut wire.meta, key, Reader::raw),
            "expectedVersion" => r.once(&mut wire.expected_version, key, Reader::raw),
            "time" => r.once(&mut wire.time, key, Reader::raw),
            "origin" => r.once(&mut wire.origin, key, Reader::opt_string),
            "erased" => r.once(&mut wire.erased, key, Reader::opt_bool),
            _ => Err(r.unknown_field(key)),
        })
        .map_err(|e| Error::InvalidEvent(e.to_string()))?;
        // `null` is a field left out, as serde reads an `Option`.
        let present = |raw: Option<&'a str>| raw.filter(|raw| *raw != "null");
        let text_field = |name: &str, raw: Option<&str>| -> Result<String> {
            let raw = raw.ok_or_else(|| Error::InvalidEvent(format!("`{name}` is required")))?;
            json::parse(raw, |r| r.owned_string())
                .map_err(|_| Error::InvalidEvent(format!("`{name}` must be a string, got {raw}")))
        };
        let id = match present(wire.id) {
            None => None,
            Some(raw) => Some(EventId::parse(&text_field("id", Some(raw))?)?),
        };
        let expected_version = match present(wire.expected_version) {
            None => ExpectedVersion::Any,
            Some(raw) => ExpectedVersion::from_json_text(raw).map_err(Error::InvalidEvent)?,
        };
        let meta = match present(wire.meta) {
            None => None,
            Some(m) if !m.starts_with('{') => {
                return Err(Error::InvalidEvent(format!(
                    "`meta` must be an object, got {m}"
                )));
            }
            Some(m) => Some(raw_json(m)?),
        };
        let data = match present(wire.data) {
            Some(d) => raw_json(d)?,
            None => RawValue::NULL.to_owned(),
        };
        let time = match present(wire.time) {
            None => None,
            Some(raw) => match json::parse(raw, |r| r.u64()) {
                Ok(ms) if ms <= MAX_SAFE_INTEGER => Some(ms),
                _ => {
                    return Err(Error::InvalidEvent(format!(
                        "`time` must be a whole number of milliseconds since the epoch, got {raw}"
                    )))
                }
            },
        };
        let schema_version = match present(wire.schema_version) {
            None => 1,
            Some(raw) => parse_schema_version(raw)?,
        };
        let erased = wire.erased.flatten() == Some(true);
        // An erased copy carries nothing of what it held, whatever the JSON says.
        let (data, meta) = if erased {
            (RawValue::NULL.to_owned(), None)
        } else {
            (data, meta)
        };
        Ok(NewEvent {
            id,
            stream: text_field("stream", present(wire.stream))?,
            event_type: text_field("type", present(wire.event_type))?,
            schema_version,
            data,
            meta,
            expected_version,
            time,
            origin: wire.origin.flatten(),
            erased,
        })
    }

    /// Checks the names (see [`name_problem`]) and the size against `limits`.
    pub fn validate(&self, limits: &Limits) -> Result<()> {
        for (name, value) in [("stream", &self.stream), ("type", &self.event_type)] {
            if let Some(problem) = name_problem(name, value, limits.max_name_bytes) {
                return Err(Error::InvalidEvent(problem));
            }
        }
        let size = self.encoded_size();
        if size > limits.max_event_bytes {
            return Err(Error::InvalidEvent(format!(
                "the event is {size} bytes; the limit is {} bytes",
                limits.max_event_bytes
            )));
        }
        Ok(())
    }

    /// Bytes this event's variable parts take in the log.
    pub fn encoded_size(&self) -> usize {
        self.stream.len()
            + self.event_type.len()
            + self.data.get().len()
            + self.meta.as_ref().map_or(0, |m| m.get().len())
    }
}

/// Names starting with this are annals' own (streams and types): apps cannot append them,
/// except the lifecycle types below, which are how a stream is deleted, closed or erased.
pub const RESERVED_PREFIX: char = '$';

/// The type of the event that soft-deletes its stream ([`crate::engine::Engine::delete_stream`]):
/// reads of the stream skip everything up to it, and `no_stream` may start the stream again.
pub const STREAM_DELETED_TYPE: &str = "$StreamDeleted";
/// The type of the event that closes its stream for good
/// ([`crate::engine::Engine::close_stream`]): every later append to it is `STREAM_DELETED`.
pub const STREAM_CLOSED_TYPE: &str = "$StreamClosed";
/// The type of the event that erases its stream ([`crate::engine::Engine::erase_stream`]):
/// every earlier event of the stream loses its `data` and `meta` (see [`crate::erasure`]),
/// keeping its position, id, type and version. It ends nothing: the stream takes events
/// after it as before (a closed stream can still be erased).
pub const STREAM_ERASED_TYPE: &str = "$StreamErased";

/// Whether `event_type` is one of annals' own lifecycle types (deleted, closed, erased):
/// the only `$` types an event may have.
pub fn is_lifecycle_type(event_type: &str) -> bool {
    event_type == STREAM_ERASED_TYPE || StreamEnd::of_type(event_type).is_some()
}

/// What a lifecycle event does to its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// Soft delete: the stream reads as empty and may start again with `no_stream`.
    Deleted,
    /// Tombstone: the stream takes no more events.
    Closed,
}

impl StreamEnd {
    /// The lifecycle an event of `event_type` records, if it is a lifecycle event.
    pub fn of_type(event_type: &str) -> Option<Self> {
        match event_type {
            STREAM_DELETED_TYPE => Some(StreamEnd::Deleted),
            STREAM_CLOSED_TYPE => Some(StreamEnd::Closed),
            _ => None,
        }
    }
}

/// Why `value` cannot be the `field` (`stream` or `type`) of an event, if it cannot: it is
/// empty, longer than `max_bytes`, starts or ends with whitespace, holds a control
/// character (names are shown, compared and typed by people: `"todo-1 "` and `"todo-1"`
/// must not be two streams), or starts with [`RESERVED_PREFIX`]. Appends and the server's
/// push check the same rules.
pub fn name_problem(field: &str, value: &str, max_bytes: usize) -> Option<String> {
    if value.trim().is_empty() {
        return Some(format!("`{field}` must be a non-empty string"));
    }
    if value.len() > max_bytes {
        return Some(format!(
            "`{field}` is {} bytes long; the limit is {max_bytes} bytes",
            value.len()
        ));
    }
    if value.trim() != value {
        return Some(format!(
            "`{field}` must not start or end with whitespace, got {value:?}"
        ));
    }
    if value.chars().any(char::is_control) {
        return Some(format!(
            "`{field}` must not contain control characters, got {value:?}"
        ));
    }
    // The lifecycle types are annals' own too, but are appended like any event (by
    // `deleteStream`, `closeStream` and `eraseStream`, or pushed by a replica that did),
    // so they pass.
    if value.starts_with(RESERVED_PREFIX) && !(field == "type" && is_lifecycle_type(value)) {
        return Some(format!(
            "`{field}` {value:?} starts with `{RESERVED_PREFIX}`, which is reserved for annals' own {field}s"
        ));
    }
    None
}

impl Error {
    /// The stored event a [`Error::DuplicateId`] carries (the one already in the log under
    /// the reused id).
    pub fn stored_event(&self) -> Option<Event> {
        match self {
            Error::DuplicateId { event, .. } => json::parse(event, Event::read).ok(),
            _ => None,
        }
    }
}

/// A `schemaVersion` as JSON gives it: a whole number from 1 to 2^32 - 1.
fn parse_schema_version(json: &str) -> Result<u32> {
    json::parse(json, |r| r.uint::<u32>())
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| {
            Error::InvalidEvent(format!(
                "`schemaVersion` must be a whole number from 1 to {}, got {json}",
                u32::MAX
            ))
        })
}

/// Serde's default for a schema version left out: 1.
pub fn schema_version_one() -> u32 {
    1
}

/// Whether a schema version is the default one, which JSON leaves out.
pub fn is_schema_version_one(v: &u32) -> bool {
    *v == 1
}

/// Serde for a `schemaVersion` read from the network: at least 1.
pub mod schema_version_serde {
    use serde::{de, Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let v = u32::deserialize(d)?;
        if v == 0 {
            return Err(de::Error::custom("`schemaVersion` must be at least 1"));
        }
        Ok(v)
    }

    pub fn serialize<S: serde::Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(*v)
    }
}

/// A payload the reader checked, as a [`RawValue`] (copied, not parsed again).
fn raw_json(text: &str) -> Result<Box<RawValue>> {
    json::checked_raw(text).map_err(|e| Error::InvalidEvent(e.to_string()))
}

fn prefix_index(e: Error, index: usize) -> Error {
    match e {
        Error::InvalidEvent(msg) => Error::InvalidEvent(format!("event {index}: {msg}")),
        other => other,
    }
}

/// A stored event, owned.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: EventId,
    pub position: u64,
    pub stream: String,
    pub version: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The version of the type's schema that `data` follows; JSON leaves it out at 1.
    #[serde(
        default = "schema_version_one",
        skip_serializing_if = "is_schema_version_one",
        with = "schema_version_serde"
    )]
    pub schema_version: u32,
    pub data: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Box<RawValue>>,
    pub time: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default)]
    pub pending: bool,
    /// The event's stream was erased after it ([`STREAM_ERASED_TYPE`]): its `data` is
    /// `null` and it has no `meta`. JSON names it only when true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub erased: bool,
}

impl Event {
    /// Reads a stored event as reads and pulls give it (the shape it serialises to);
    /// unknown fields are skipped, as serde does for this type.
    pub fn read(r: &mut Reader<'_>) -> json::JsonResult<Self> {
        let (mut id, mut position, mut stream, mut version, mut event_type) =
            (None, None, None, None, None);
        let (mut schema_version, mut data, mut meta, mut time, mut origin) =
            (None, None, None, None, None);
        let (mut pending, mut erased) = (None, None);
        r.object(&mut |r, key| match key {
            "id" => r.once(&mut id, key, EventId::read),
            "position" => r.once(&mut position, key, Reader::u64),
            "stream" => r.once(&mut stream, key, Reader::owned_string),
            "version" => r.once(&mut version, key, Reader::u64),
            "type" => r.once(&mut event_type, key, Reader::owned_string),
            "schemaVersion" => r.once(&mut schema_version, key, read_schema_version),
            "data" => r.once(&mut data, key, Reader::raw_value),
            "meta" => r.once(&mut meta, key, |r| r.opt_raw_object("meta")),
            "time" => r.once(&mut time, key, Reader::u64),
            "origin" => r.once(&mut origin, key, Reader::opt_string),
            "pending" => r.once(&mut pending, key, Reader::bool),
            "erased" => r.once(&mut erased, key, Reader::bool),
            _ => r.raw().map(|_| ()),
        })?;
        Ok(Event {
            id: json::required(r, id, "id")?,
            position: json::required(r, position, "position")?,
            stream: json::required(r, stream, "stream")?,
            version: json::required(r, version, "version")?,
            event_type: json::required(r, event_type, "type")?,
            schema_version: schema_version.unwrap_or(1),
            data: json::required(r, data, "data")?,
            meta: meta.flatten(),
            time: json::required(r, time, "time")?,
            origin: origin.flatten(),
            pending: pending.unwrap_or(false),
            erased: erased.unwrap_or(false),
        })
    }
}

/// A `schemaVersion` read from the network: a whole number of at least 1.
pub fn read_schema_version(r: &mut Reader<'_>) -> json::JsonResult<u32> {
    match r.uint::<u32>()? {
        0 => Err(r.error("`schemaVersion` must be at least 1")),
        v => Ok(v),
    }
}

/// Whether a flag is off, which JSON leaves out.
pub fn is_false(flag: &bool) -> bool {
    !*flag
}

impl PartialEq for NewEvent {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.stream == other.stream
            && self.event_type == other.event_type
            && self.schema_version == other.schema_version
            && self.data.get() == other.data.get()
            && self.meta.as_ref().map(|m| m.get()) == other.meta.as_ref().map(|m| m.get())
            && self.expected_version == other.expected_version
    }
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.position == other.position
            && self.stream == other.stream
            && self.version == other.version
            && self.event_type == other.event_type
            && self.schema_version == other.schema_version
            && self.data.get() == other.data.get()
            && self.meta.as_ref().map(|m| m.get()) == other.meta.as_ref().map(|m| m.get())
            && self.time == other.time
            && self.origin == other.origin
            && self.pending == other.pending
            && self.erased == other.erased
    }
}

impl Event {
    /// Deserialises the payload.
    pub fn data_as<T: for<'de> Deserialize<'de>>(&self) -> Result<T> {
        serde_json::from_str(self.data.get())
            .map_err(|e| Error::InvalidArgument(format!("event data does not match: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        let text = "0190a4c1-7d2e-7c3a-9f10-2b3c4d5e6f70";
        let id = EventId::parse(text).unwrap();
        assert_eq!(id.to_string(), text);
        assert_eq!(EventId::parse(&text.to_uppercase()).unwrap(), id);
    }

    #[test]
    fn ids_in_json_are_their_canonical_text() {
        let text = "0190a4c1-7d2e-7c3a-9f10-2b3c4d5e6f70";
        let id = EventId::parse(text).unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{text}\""));
        // Read where it lies, or unescaped first: the same id.
        assert_eq!(
            serde_json::from_str::<EventId>(&format!("\"{text}\"")).unwrap(),
            id
        );
        let escaped = format!("\"\\u0030{}\"", &text[1..]);
        assert_eq!(serde_json::from_str::<EventId>(&escaped).unwrap(), id);
        assert_eq!(serde_json::from_value::<EventId>(text.into()).unwrap(), id);
        for bad in ["5", "null", "\"0190a4c1\""] {
            assert!(serde_json::from_str::<EventId>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_ids_are_invalid_events() {
        for bad in [
            "",
            "not-a-uuid",
            "0190a4c1x7d2e-7c3a-9f10-2b3c4d5e6f70",
            "0190a4c1-7d2e-7c3a-9f10-2b3c4d5e6f7g",
            "0190a4c1-7d2e-7c3a-9f10-2b3c4d5e6f7\u{e9}",
            "0190a4c1-7d2e-7c3a-9f10_2b3c4d5e6f70",
        ] {
            assert_eq!(
                EventId::parse(bad).unwrap_err().code(),
                "INVALID_EVENT",
                "{bad}"
            );
        }
    }

    #[test]
    fn a_batch_parses_every_field() {
        let batch = NewEvent::parse_batch(
            r#"[{"stream":"todo-1","type":"TodoAdded","data":{"title":"milk"},"meta":{"by":"me"},"expectedVersion":"no_stream"},
                {"id":"0190a4c1-7d2e-7c3a-9f10-2b3c4d5e6f70","stream":"todo-1","type":"TodoDone","expectedVersion":1}]"#,
        )
        .unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].data.get(), r#"{"title":"milk"}"#);
        assert_eq!(batch[0].meta.as_ref().unwrap().get(), r#"{"by":"me"}"#);
        assert_eq!(batch[0].expected_version, ExpectedVersion::NoStream);
        assert_eq!(batch[1].data.get(), "null");
        assert_eq!(batch[1].expected_version, ExpectedVersion::Exact(1));
        assert!(batch[1].id.is_some());
    }

    #[test]
    fn a_copied_event_keeps_its_time_and_origin() {
        let batch = NewEvent::parse_batch(
            r#"[{"stream":"s","type":"T","time":1700000000123,"origin":"tab-a"},{"stream":"s","type":"T"}]"#,
        )
        .unwrap();
        assert_eq!(batch[0].time, Some(1_700_000_000_123));
        assert_eq!(batch[0].origin.as_deref(), Some("tab-a"));
        assert_eq!((batch[1].time, batch[1].origin.as_deref()), (None, None));
        for bad in [r#"-1"#, r#"1.5"#, r#""soon""#, "9007199254740992"] {
            let err =
                NewEvent::parse_batch(&format!(r#"[{{"stream":"s","type":"T","time":{bad}}}]"#))
                    .unwrap_err();
            assert_eq!(err.code(), "INVALID_EVENT", "{bad}");
            assert!(err.to_string().contains("`time`"), "{err}");
        }
    }

    #[test]
    fn a_schema_version_is_a_whole_number_from_1_and_defaults_to_1() {
        let batch = NewEvent::parse_batch(
            r#"[{"stream":"s","type":"T","schemaVersion":3},{"stream":"s","type":"T"},{"stream":"s","type":"T","schemaVersion":4294967295},{"stream":"s","type":"T","schemaVersion":null}]"#,
        )
        .unwrap();
        let versions: Vec<u32> = batch.iter().map(|e| e.schema_version).collect();
        assert_eq!(versions, [3, 1, u32::MAX, 1]); // null, as for `id` and `meta`: absent
        for bad in ["0", "-1", "1.5", r#""2""#, "4294967296"] {
            let err = NewEvent::parse_batch(&format!(
                r#"[{{"stream":"s","type":"T"}},{{"stream":"s","type":"T","schemaVersion":{bad}}}]"#
            ))
            .unwrap_err();
            assert_eq!(err.code(), "INVALID_EVENT", "{bad}");
            assert!(
                err.to_string().contains("event 1: `schemaVersion` must be"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_stored_event_leaves_schema_version_1_out_of_its_json() {
        let mut event: Event = serde_json::from_str(
            r#"{"id":"0190a4c1-7d2e-7c3a-9f10-2b3c4d5e6f70","position":1,"stream":"s","version":1,"type":"T","data":1,"time":5}"#,
        )
        .unwrap();
        assert_eq!(event.schema_version, 1);
        assert!(!serde_json::to_string(&event)
            .unwrap()
            .contains("schemaVersion"));
        event.schema_version = 2;
        let json = serde_json::to_string(&event).unwrap();
        assert!(json.contains(r#""schemaVersion":2"#), "{json}");
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), event);
    }

    #[test]
    fn bad_fields_name_the_event_and_the_field() {
        let cases = [
            (r#"[{"stream":"s"}]"#, "event 0: `type` is required"),
            (
                r#"[{"stream":"s","type":5}]"#,
                "event 0: `type` must be a string",
            ),
            (
                r#"[{"stream":"s","type":"T"},{"stream":7,"type":"T"}]"#,
                "event 1: `stream` must be a string",
            ),
            (
                r#"[{"stream":"s","type":"T","expectedVersion":-1}]"#,
                "`expectedVersion` must be",
            ),
            (
                r#"[{"stream":"s","type":"T","expectedVersion":"later"}]"#,
                "`expectedVersion` must be",
            ),
            (
                r#"[{"stream":"s","type":"T","meta":[1]}]"#,
                "`meta` must be an object",
            ),
            (
                r#"[{"stream":"s","type":"T","extra":1}]"#,
                "unknown field `extra`",
            ),
            (r#"{"stream":"s"}"#, "a batch must be a JSON array"),
        ];
        for (json, expected) in cases {
            let err = NewEvent::parse_batch(json).unwrap_err();
            assert_eq!(err.code(), "INVALID_EVENT");
            assert!(err.to_string().contains(expected), "{json}: {err}");
        }
    }

    #[test]
    fn validation_rejects_empty_names_and_oversize_events() {
        let limits = Limits::default();
        let ok = NewEvent::new("s", "T", &1).unwrap();
        assert!(ok.validate(&limits).is_ok());
        let empty = NewEvent::new(" ", "T", &1).unwrap();
        assert!(empty
            .validate(&limits)
            .unwrap_err()
            .to_string()
            .contains("`stream` must be a non-empty"));
        let big = NewEvent::new("s", "T", &"x".repeat(1024 * 1024)).unwrap();
        assert!(big
            .validate(&limits)
            .unwrap_err()
            .to_string()
            .contains("the limit is 1048576 bytes"));
    }

    #[test]
    fn expected_versions_accept_what_they_promise() {
        assert!(ExpectedVersion::Any.accepts(0) && ExpectedVersion::Any.accepts(9));
        assert!(ExpectedVersion::NoStream.accepts(0) && !ExpectedVersion::NoStream.accepts(1));
        assert!(!ExpectedVersion::Exists.accepts(0) && ExpectedVersion::Exists.accepts(1));
        assert!(ExpectedVersion::Exact(3).accepts(3) && !ExpectedVersion::Exact(3).accepts(2));
    }
}
