//! Core: the sync protocol's messages (HTTP + JSON under `/v1`), plain data shared by the
//! engine, the sync client and `annals-server`. See DESIGN.md §5.
//!
//! ```text
//! POST /v1/stores/{store}/push   PushRequest  -> PushResponse
//! GET  /v1/stores/{store}/pull?after=&limit=&wait=   -> PullResponse
//! ```

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::event::{
    is_false, is_schema_version_one, read_schema_version, schema_version_one, schema_version_serde,
    Event, EventId, ExpectedVersion,
};
use crate::json::{self, JsonResult, Reader};

/// The protocol version in every path (`/v1/...`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Most events one pull returns unless the server is configured otherwise.
pub const DEFAULT_PULL_LIMIT: usize = 1_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushRequest {
    /// The pushing client's persisted id (recorded as the events' `origin`).
    pub client_id: String,
    pub events: Vec<PushEvent>,
}

/// A pending event as the client pushes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushEvent {
    pub id: EventId,
    pub stream: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The version of the type's schema that `data` follows; left out at 1.
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
    #[serde(default, skip_serializing_if = "is_any")]
    pub expected_version: ExpectedVersion,
    /// Its stream was erased while it waited in the outbox ([`crate::erasure`]): `data` is
    /// `null`, there is no `meta`, and the server stores it erased. Left out when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub erased: bool,
}

impl PartialEq for PushEvent {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.stream == other.stream
            && self.event_type == other.event_type
            && self.schema_version == other.schema_version
            && self.data.get() == other.data.get()
            && self.meta.as_ref().map(|m| m.get()) == other.meta.as_ref().map(|m| m.get())
            && self.time == other.time
            && self.expected_version == other.expected_version
            && self.erased == other.erased
    }
}

impl PushEvent {
    /// Reads a pending event as the client pushes it and keeps it (unknown fields are
    /// refused, as serde does for this type).
    pub fn read(r: &mut Reader<'_>) -> JsonResult<Self> {
        let (mut id, mut stream, mut event_type, mut schema_version) = (None, None, None, None);
        let (mut data, mut meta, mut time, mut expected_version, mut erased) =
            (None, None, None, None, None);
        r.object(&mut |r, key| match key {
            "id" => r.once(&mut id, key, EventId::read),
            "stream" => r.once(&mut stream, key, Reader::owned_string),
            "type" => r.once(&mut event_type, key, Reader::owned_string),
            "schemaVersion" => r.once(&mut schema_version, key, read_schema_version),
            "data" => r.once(&mut data, key, Reader::raw_value),
            "meta" => r.once(&mut meta, key, |r| r.opt_raw_object("meta")),
            "time" => r.once(&mut time, key, Reader::u64),
            "expectedVersion" => r.once(&mut expected_version, key, ExpectedVersion::read),
            "erased" => r.once(&mut erased, key, Reader::bool),
            _ => Err(r.unknown_field(key)),
        })?;
        Ok(PushEvent {
            id: json::required(r, id, "id")?,
            stream: json::required(r, stream, "stream")?,
            event_type: json::required(r, event_type, "type")?,
            schema_version: schema_version.unwrap_or(1),
            data: json::required(r, data, "data")?,
            meta: meta.flatten(),
            time: json::required(r, time, "time")?,
            expected_version: expected_version.unwrap_or_default(),
            erased: erased.unwrap_or(false),
        })
    }
}

impl PushEvent {
    /// Bytes this event's variable parts take (stream + type + data + meta), the measure
    /// that the per-event size limit applies to (as [`crate::NewEvent::encoded_size`]).
    pub fn encoded_size(&self) -> usize {
        self.stream.len()
            + self.event_type.len()
            + self.data.get().len()
            + self.meta.as_ref().map_or(0, |m| m.get().len())
    }
}

impl PushEvent {
    /// A digest of what makes this the same event as another under its id: stream, type,
    /// schema version, and the `data` and `meta` JSON text byte for byte (not the time or
    /// expected version: a retry may come later, at another expectation). See
    /// [`content_digest`].
    pub fn content_digest(&self) -> u64 {
        content_digest(
            &self.stream,
            &self.event_type,
            self.schema_version,
            self.data.get(),
            self.meta.as_ref().map(|m| m.get()),
        )
    }

    /// A digest of everything the client sent for this event (id, stream, type, schema
    /// version, payloads, time, expected version). A retry of the same push, or a late copy of it, carries the
    /// same fingerprint; an event appended again under the same id gets a new `time` and
    /// so a new fingerprint. Stable across builds and platforms (FNV-1a over
    /// length-prefixed fields, then a finaliser).
    pub fn fingerprint(&self) -> u64 {
        fn feed(hash: &mut u64, bytes: &[u8]) {
            for chunk in [&(bytes.len() as u64).to_le_bytes()[..], bytes] {
                for b in chunk {
                    *hash ^= u64::from(*b);
                    *hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
                }
            }
        }
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        feed(&mut hash, self.id.as_bytes());
        feed(&mut hash, self.stream.as_bytes());
        feed(&mut hash, self.event_type.as_bytes());
        feed(&mut hash, self.data.get().as_bytes());
        feed(
            &mut hash,
            self.meta.as_ref().map_or(&b""[..], |m| m.get().as_bytes()),
        );
        feed(&mut hash, &self.time.to_le_bytes());
        feed(&mut hash, self.expected_version.to_string().as_bytes());
        // Only when not 1: the fingerprints of events from before schema versions, which
        // servers have stored, stay what they were.
        if self.schema_version != 1 {
            feed(&mut hash, &self.schema_version.to_le_bytes());
        }
        if self.erased {
            feed(&mut hash, b"erased");
        }
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^= hash >> 33;
        hash
    }
}

impl PushEvent {
    /// The digest of what an erased event keeps of its content ([`shape_digest`]).
    pub fn shape_digest(&self) -> u64 {
        shape_digest(&self.stream, &self.event_type, self.schema_version)
    }

    /// This event erased: no data (`null`), no meta, marked.
    pub fn erase(&mut self) {
        if !self.erased {
            self.data = serde_json::value::RawValue::NULL.to_owned();
            self.meta = None;
            self.erased = true;
        }
    }
}

/// The digest of what an erased event keeps of its content: stream, type and schema
/// version. Under an id whose stored event is erased, or for a pushed event that is
/// erased, this is what tells a retry from a reused id (the data is gone).
pub fn shape_digest(stream: &str, event_type: &str, schema_version: u32) -> u64 {
    content_digest(stream, event_type, schema_version, "", None)
}

/// The digest of an event's content ([`PushEvent::content_digest`]), from its stored
/// fields: the server compares a pushed event with the stored one under its id by it.
/// FNV-1a over length-prefixed fields, then a finaliser; only compared within one
/// process, never stored.
pub fn content_digest(
    stream: &str,
    event_type: &str,
    schema_version: u32,
    data: &str,
    meta: Option<&str>,
) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut feed = |bytes: &[u8]| {
        for chunk in [&(bytes.len() as u64).to_le_bytes()[..], bytes] {
            for b in chunk {
                hash ^= u64::from(*b);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    };
    feed(stream.as_bytes());
    feed(event_type.as_bytes());
    feed(&schema_version.to_le_bytes());
    feed(data.as_bytes());
    // An absent meta and an empty one differ: `None` feeds no length prefix at all.
    if let Some(meta) = meta {
        feed(meta.as_bytes());
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash
}

fn is_any(v: &ExpectedVersion) -> bool {
    *v == ExpectedVersion::Any
}

/// The server's verdict on one pushed event. JSON: `{"status":"ok"|"duplicate"|"rejected",
/// "id", ...}` (the fields of the variant beside `status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum PushResult {
    /// Stored now at `position` (server order), `version` in its stream.
    Ok {
        id: EventId,
        position: u64,
        version: u64,
    },
    /// Already stored earlier (a retry): where it is.
    Duplicate {
        id: EventId,
        position: u64,
        version: u64,
    },
    /// Refused; the client removes it from pending and reports it.
    Rejected {
        id: EventId,
        reason: String,
        #[serde(
            rename = "actualVersion",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        actual_version: Option<u64>,
    },
}

/// Read through one flat struct rather than serde's internally tagged enum, which buffers
/// every field first and so brings a second, generic deserializer into the wasm.
impl<'de> Deserialize<'de> for PushResult {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            status: String,
            id: EventId,
            position: Option<u64>,
            version: Option<u64>,
            reason: Option<String>,
            actual_version: Option<u64>,
        }
        let w = Wire::deserialize(d)?;
        let placed = |w: &Wire| -> Result<(u64, u64), D::Error> {
            Ok((
                w.position
                    .ok_or_else(|| D::Error::missing_field("position"))?,
                w.version
                    .ok_or_else(|| D::Error::missing_field("version"))?,
            ))
        };
        match w.status.as_str() {
            "ok" => {
                let (position, version) = placed(&w)?;
                Ok(PushResult::Ok {
                    id: w.id,
                    position,
                    version,
                })
            }
            "duplicate" => {
                let (position, version) = placed(&w)?;
                Ok(PushResult::Duplicate {
                    id: w.id,
                    position,
                    version,
                })
            }
            "rejected" => Ok(PushResult::Rejected {
                id: w.id,
                reason: w.reason.ok_or_else(|| D::Error::missing_field("reason"))?,
                actual_version: w.actual_version,
            }),
            other => Err(D::Error::unknown_variant(
                other,
                &["ok", "duplicate", "rejected"],
            )),
        }
    }
}

impl PushResult {
    /// Reads a verdict as the server answers it.
    pub fn read(r: &mut Reader<'_>) -> JsonResult<Self> {
        let (mut status, mut id, mut position, mut version) = (None, None, None, None);
        let (mut reason, mut actual_version) = (None, None);
        r.object(&mut |r, key| match key {
            "status" => r.once(&mut status, key, Reader::owned_string),
            "id" => r.once(&mut id, key, EventId::read),
            "position" => r.once(&mut position, key, Reader::opt_uint::<u64>),
            "version" => r.once(&mut version, key, Reader::opt_uint::<u64>),
            "reason" => r.once(&mut reason, key, Reader::opt_string),
            "actualVersion" => r.once(&mut actual_version, key, Reader::opt_uint::<u64>),
            _ => r.raw().map(|_| ()),
        })?;
        let id = json::required(r, id, "id")?;
        let (position, version) = (position.flatten(), version.flatten());
        let placed = || -> JsonResult<(u64, u64)> {
            Ok((
                json::required(r, position, "position")?,
                json::required(r, version, "version")?,
            ))
        };
        match json::required(r, status, "status")?.as_str() {
            "ok" => {
                let (position, version) = placed()?;
                Ok(PushResult::Ok {
                    id,
                    position,
                    version,
                })
            }
            "duplicate" => {
                let (position, version) = placed()?;
                Ok(PushResult::Duplicate {
                    id,
                    position,
                    version,
                })
            }
            "rejected" => Ok(PushResult::Rejected {
                id,
                reason: json::required(r, reason.flatten(), "reason")?,
                actual_version: actual_version.flatten(),
            }),
            other => Err(r.error(format!(
                "unknown variant `{other}`, expected one of `ok`, `duplicate`, `rejected`"
            ))),
        }
    }
}

impl PushResult {
    pub fn id(&self) -> &EventId {
        match self {
            PushResult::Ok { id, .. }
            | PushResult::Duplicate { id, .. }
            | PushResult::Rejected { id, .. } => id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushResponse {
    pub results: Vec<PushResult>,
    /// The store's last position after this push.
    pub head: u64,
    /// Identifies this server store's life; a change means "pull from the start again".
    pub epoch: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullResponse {
    /// Confirmed events after `after`, in server order (`pending` is false).
    pub events: Vec<Event>,
    pub head: u64,
    pub epoch: String,
    /// More events are waiting after the last one returned.
    pub more: bool,
}

impl PushResponse {
    /// Reads the answer to a push (unknown fields skipped).
    pub fn read(r: &mut Reader<'_>) -> JsonResult<Self> {
        let (mut results, mut head, mut epoch) = (None, None, None);
        r.object(&mut |r, key| match key {
            "results" => r.once(&mut results, key, |r| r.list(PushResult::read)),
            "head" => r.once(&mut head, key, Reader::u64),
            "epoch" => r.once(&mut epoch, key, Reader::owned_string),
            _ => r.raw().map(|_| ()),
        })?;
        Ok(PushResponse {
            results: json::required(r, results, "results")?,
            head: json::required(r, head, "head")?,
            epoch: json::required(r, epoch, "epoch")?,
        })
    }
}

impl PullResponse {
    /// Reads the answer to a pull (unknown fields skipped).
    pub fn read(r: &mut Reader<'_>) -> JsonResult<Self> {
        let (mut events, mut head, mut epoch, mut more) = (None, None, None, None);
        r.object(&mut |r, key| match key {
            "events" => r.once(&mut events, key, |r| r.list(Event::read)),
            "head" => r.once(&mut head, key, Reader::u64),
            "epoch" => r.once(&mut epoch, key, Reader::owned_string),
            "more" => r.once(&mut more, key, Reader::bool),
            _ => r.raw().map(|_| ()),
        })?;
        Ok(PullResponse {
            events: json::required(r, events, "events")?,
            head: json::required(r, head, "head")?,
            epoch: json::required(r, epoch, "epoch")?,
            more: json::required(r, more, "more")?,
        })
    }
}

/// The body of every error answer: `{ "error": { "code": "...", "message": "..." } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    /// Reads an error answer's body (unknown fields skipped).
    pub fn read(r: &mut Reader<'_>) -> JsonResult<Self> {
        let mut error = None;
        r.object(&mut |r, key| match key {
            "error" => r.once(&mut error, key, ErrorDetail::read),
            _ => r.raw().map(|_| ()),
        })?;
        Ok(ErrorBody {
            error: json::required(r, error, "error")?,
        })
    }
}

impl ErrorDetail {
    fn read(r: &mut Reader<'_>) -> JsonResult<Self> {
        let (mut code, mut message) = (None, None);
        r.object(&mut |r, key| match key {
            "code" => r.once(&mut code, key, Reader::owned_string),
            "message" => r.once(&mut message, key, Reader::owned_string),
            _ => r.raw().map(|_| ()),
        })?;
        Ok(ErrorDetail {
            code: json::required(r, code, "code")?,
            message: json::required(r, message, "message")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_results_use_the_documented_shape() {
        let id = EventId([1; 16]);
        let ok = serde_json::to_value(PushResult::Ok {
            id,
            position: 3,
            version: 1,
        })
        .unwrap();
        assert_eq!(ok["status"], "ok");
        assert_eq!(ok["position"], 3);
        let rejected = serde_json::to_value(PushResult::Rejected {
            id,
            reason: "wrong expected version".into(),
            actual_version: Some(2),
        })
        .unwrap();
        assert_eq!(rejected["status"], "rejected");
        assert_eq!(rejected["actualVersion"], 2);
        let back: PushResult = serde_json::from_value(rejected).unwrap();
        assert!(matches!(
            back,
            PushResult::Rejected {
                actual_version: Some(2),
                ..
            }
        ));
    }

    #[test]
    fn push_results_read_back_as_written() {
        let id = EventId([7; 16]);
        for result in [
            PushResult::Ok {
                id,
                position: 3,
                version: 1,
            },
            PushResult::Duplicate {
                id,
                position: 9,
                version: 4,
            },
            PushResult::Rejected {
                id,
                reason: "no".into(),
                actual_version: None,
            },
        ] {
            let json = serde_json::to_string(&result).unwrap();
            assert_eq!(serde_json::from_str::<PushResult>(&json).unwrap(), result);
            // The client's reader (src/json.rs) reads what the server's serde writes.
            assert_eq!(json::parse(&json, PushResult::read).unwrap(), result);
        }
        let text = id.to_string();
        for bad in [
            format!(r#"{{"status":"ok","id":"{text}","version":1}}"#),
            format!(r#"{{"status":"rejected","id":"{text}"}}"#),
            format!(r#"{{"status":"maybe","id":"{text}","position":1,"version":1}}"#),
            r#"{"status":"ok","id":"x","position":1,"version":1}"#.to_string(),
        ] {
            assert!(serde_json::from_str::<PushResult>(&bad).is_err(), "{bad}");
            assert!(json::parse(&bad, PushResult::read).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_readers_read_what_serde_writes() {
        let event = Event {
            id: EventId([1; 16]),
            position: 7,
            stream: "s\"1".into(),
            version: 2,
            event_type: "T".into(),
            schema_version: 3,
            data: RawValue::from_string(r#"{"a":[1,2.5,"\u00e9"]}"#.into()).unwrap(),
            meta: Some(RawValue::from_string(r#"{"k":null}"#.into()).unwrap()),
            time: 1_700_000_000_000,
            origin: Some("tab".into()),
            pending: false,
            erased: true,
        };
        let pull = PullResponse {
            events: vec![event.clone()],
            head: 9,
            epoch: "e".into(),
            more: true,
        };
        let read = json::parse(&serde_json::to_string(&pull).unwrap(), PullResponse::read).unwrap();
        assert_eq!(
            serde_json::to_string(&read).unwrap(),
            serde_json::to_string(&pull).unwrap()
        );
        let push = PushEvent {
            id: EventId([2; 16]),
            stream: "s".into(),
            event_type: "T".into(),
            schema_version: 1,
            data: RawValue::from_string("null".into()).unwrap(),
            meta: None,
            time: 5,
            expected_version: ExpectedVersion::Exact(4),
            erased: false,
        };
        let text = serde_json::to_string(&push).unwrap();
        assert_eq!(json::parse(&text, PushEvent::read).unwrap(), push);
        // Unknown fields: refused in a pending event (as serde does), skipped in answers.
        let extra = text.replace("{\"id\"", "{\"x\":1,\"id\"");
        let err = json::parse(&extra, PushEvent::read).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unknown field `x` at line 1 column"),
            "{err}"
        );
        let body = r#"{"error":{"code":"UNAUTHORIZED","message":"no","versions":[1]},"x":[]}"#;
        let body = json::parse(body, ErrorBody::read).unwrap();
        assert_eq!(body.error.code, "UNAUTHORIZED");
        let err = json::parse(r#"{"results":[],"head":1}"#, PushResponse::read).unwrap_err();
        assert!(
            err.to_string().starts_with("missing field `epoch`"),
            "{err}"
        );
    }

    #[test]
    fn a_push_request_parses_with_optional_fields_absent() {
        let json = r#"{"clientId":"c1","events":[{"id":"0190a4c1-7d2e-7c3a-9f10-2b3c4d5e6f70","stream":"s","type":"T","data":{"a":1},"time":5}]}"#;
        let req: PushRequest = serde_json::from_str(json).unwrap();
        assert_eq!(req.events[0].expected_version, ExpectedVersion::Any);
        assert_eq!(req.events[0].data.get(), r#"{"a":1}"#);
        assert!(
            serde_json::from_str::<PushRequest>(r#"{"clientId":"c","events":[],"x":1}"#).is_err()
        );
    }
}
