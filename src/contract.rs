//! The wasm binding's contract: every JSON reply and message `src/wasm/mod.rs` hands to
//! JavaScript (and the option objects it reads), as Rust types serialised with serde.
//!
//! The TypeScript declarations in `pkg/src/generated/contract.ts` are generated from these
//! types (ts-rs, feature `ts`, run by `scripts/build-pkg.sh`), so the two sides cannot
//! drift. Event arrays and states stay pre-encoded JSON ([`JsonFragment`], `RawValue`): the
//! engine copies stored payloads verbatim, and nothing here parses them again.
//!
//! The types borrow from the engine's own (`Rejection`, `SyncStatus`, `PushEvent`, ...) so
//! that the wire shape lives here, once, while the internals stay free to change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::event::{EventId, ExpectedVersion};
use crate::json::{self, JsonResult, Reader};

#[cfg(feature = "ts")]
use ts_rs::TS;

/// JSON the engine produced (an event array from its codec, a stored state), written out
/// verbatim: validating it again would cost a scan of every payload on the hottest path
/// (each change reaches JavaScript this way).
///
/// It goes through serde_json's raw-value channel, the mechanism `RawValue` itself uses;
/// `tests::a_fragment_is_written_verbatim` fails if serde_json ever changes it.
#[derive(Debug, Clone, Copy)]
pub struct JsonFragment<'a>(&'a str);

/// serde_json recognises a struct of this name as "raw JSON, write it as is".
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

impl<'a> JsonFragment<'a> {
    /// `json` must be one well-formed JSON value, produced by annals itself (the engine's
    /// `range_json`, `pending_json`, `read_json`), never by an app or the network.
    pub fn trusted(json: &'a str) -> Self {
        debug_assert!(
            serde_json::from_str::<&RawValue>(json).is_ok(),
            "not JSON: {json}"
        );
        JsonFragment(json)
    }

    pub fn get(&self) -> &'a str {
        self.0
    }
}

impl Serialize for JsonFragment<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct(RAW_VALUE_TOKEN, 1)?;
        s.serialize_field(RAW_VALUE_TOKEN, self.0)?;
        s.end()
    }
}

/// The reply of `append`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "ts", derive(TS))]
#[serde(rename_all = "camelCase")]
pub struct AppendReply<'a> {
    /// The position of each input event, in order (an input whose id was known: the
    /// stored event's position).
    #[cfg_attr(feature = "ts", ts(type = "number[]"))]
    pub results: Vec<u64>,
    /// The stored events of a retry (a batch whose events were all in the log already,
    /// each the same event), each once.
    #[cfg_attr(feature = "ts", ts(type = "AnnalsEvent[]"))]
    pub duplicates: JsonFragment<'a>,
    /// Per input event: its stream's version after the call.
    #[cfg_attr(feature = "ts", ts(type = "number[]"))]
    pub stream_versions: Vec<u64>,
    /// The listener's change (`ChangeMessage.seq`) that carried the new events, or null
    /// when nothing was new.
    #[cfg_attr(feature = "ts", ts(type = "number | null"))]
    pub seq: Option<u64>,
}

/// What the listener of `setListener` hears after every change to the log. Unless
/// `rebased`, the new events are `confirmedEvents` then `pendingEvents`, at positions
/// `previousHead + 1 ..= head`; when `rebased`, `pendingEvents` is the whole outbox, to
/// fold again on the confirmed state (which `reset` starts from scratch).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "ts", derive(TS))]
#[serde(rename_all = "camelCase")]
pub struct ChangeMessage<'a> {
    /// Numbers the changes: 1, 2, ...
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub seq: u64,
    /// The confirmed log restarted (a new server epoch): fold from the initial state.
    pub reset: bool,
    /// Every pending event moved: recompute optimistic state from the confirmed state.
    pub rebased: bool,
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub previous_head: u64,
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub head: u64,
    /// The confirmed head after the change.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub confirmed: u64,
    /// The lowest confirmed position this change erased (`eraseStream`; 0: none): state
    /// folded from there on held data that is gone, and is folded again.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub erased_from: u64,
    #[cfg_attr(feature = "ts", ts(type = "AnnalsEvent[]"))]
    pub confirmed_events: JsonFragment<'a>,
    #[cfg_attr(feature = "ts", ts(type = "AnnalsEvent[]"))]
    pub pending_events: JsonFragment<'a>,
    /// Set when the new events are exactly those of one tagged `append` call: the event
    /// arrays are then empty, and the caller builds the events from the batch it passed
    /// and these stamps (no round trip of their payloads through JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub own: Option<OwnAppend<'a>>,
}

/// What the core added to the events of a tagged `append` ([`ChangeMessage::own`]): the
/// events are at positions `previousHead + 1 ..= head`, confirmed when `head` is the
/// confirmed head, else pending.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "ts", derive(TS))]
pub struct OwnAppend<'a> {
    /// The tag the `append` call was given.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub tag: u64,
    /// Every event's id, in order (given or generated).
    #[cfg_attr(feature = "ts", ts(type = "string[]"))]
    pub ids: JsonFragment<'a>,
    /// Every event's version in its stream, in order.
    #[cfg_attr(feature = "ts", ts(type = "number[]"))]
    pub versions: Vec<u64>,
    /// The time recorded on every event of the batch.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub time: u64,
    /// The origin recorded on every event of the batch, if any.
    pub origin: Option<&'a str>,
}

/// The reply of `snapshot` (or `undefined` when none is stored).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "ts", derive(TS))]
pub struct SnapshotReply<'a> {
    /// The projection version the state was folded with.
    pub version: u32,
    /// The last position folded into the state.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub position: u64,
    #[cfg_attr(feature = "ts", ts(type = "unknown"))]
    pub state: JsonFragment<'a>,
}

/// The reply of `syncNow`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "ts", derive(TS))]
pub struct SyncReportReply {
    /// Events the server accepted.
    pub pushed: usize,
    /// Confirmed events received.
    pub pulled: usize,
    /// Pending events the server refused (each also reported to `onRejected`).
    pub rejected: usize,
    /// Times the server's epoch changed and the log was pulled again from the start.
    pub restarts: usize,
}

/// The reply of `compact`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "ts", derive(TS))]
#[serde(rename_all = "camelCase")]
pub struct CompactionReply {
    pub segments_before: usize,
    pub segments_after: usize,
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub events: u64,
}

/// The core's sync status (`syncStatus()`, and every `onStatus` call); the wrapper adds
/// `leader`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "ts", derive(TS))]
#[cfg_attr(feature = "ts", ts(rename = "CoreSyncStatus"))]
#[serde(rename_all = "camelCase")]
pub struct SyncStatusMessage<'a> {
    /// The last request reached the server (and the platform says it is online).
    pub online: bool,
    /// A sync step is running.
    pub syncing: bool,
    /// Events waiting in the outbox.
    pub pending: usize,
    /// The last confirmed position pulled.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub last_pulled: u64,
    pub last_error: Option<&'a str>,
    #[cfg_attr(feature = "ts", ts(type = "AnnalsErrorCode | null"))]
    pub last_error_code: Option<&'a str>,
    /// Requests refused for the token (401/403) since the last success; each one is a
    /// change, so the token provider hears every refusal.
    pub auth_failures: u32,
}

impl<'a> From<&'a crate::sync::client::SyncStatus> for SyncStatusMessage<'a> {
    fn from(s: &'a crate::sync::client::SyncStatus) -> Self {
        SyncStatusMessage {
            online: s.online,
            syncing: s.syncing,
            pending: s.pending,
            last_pulled: s.last_pulled,
            last_error: s.last_error.as_deref(),
            last_error_code: s.last_error_code.as_deref(),
            auth_failures: s.auth_failures,
        }
    }
}

/// An event waiting for the server (`outbox()`), as it is pushed: what to append again by
/// id into a database that was deleted under the store.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "ts", derive(TS))]
#[serde(rename_all = "camelCase")]
pub struct OutboxEvent<'a> {
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub id: EventId,
    pub stream: &'a str,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    /// The version of the type's schema `data` follows; absent: 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional, type = "number"))]
    pub schema_version: Option<u32>,
    #[cfg_attr(feature = "ts", ts(type = "unknown"))]
    pub data: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional, type = "Record<string, unknown>"))]
    pub meta: Option<&'a RawValue>,
    /// When it was appended (ms since the epoch, client clock).
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub time: u64,
    /// Absent for `"any"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "ts",
        ts(optional, type = "number | \"no_stream\" | \"exists\"")
    )]
    pub expected_version: Option<ExpectedVersion>,
    /// Present (true) when its stream was erased after it ([`crate::erasure`]): `data` is
    /// `null` and there is no `meta`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional, type = "true"))]
    pub erased: Option<bool>,
}

impl<'a> From<&'a crate::protocol::PushEvent> for OutboxEvent<'a> {
    fn from(e: &'a crate::protocol::PushEvent) -> Self {
        OutboxEvent {
            id: e.id,
            stream: &e.stream,
            event_type: &e.event_type,
            schema_version: (e.schema_version != 1).then_some(e.schema_version),
            data: &e.data,
            meta: e.meta.as_deref(),
            time: e.time,
            expected_version: (e.expected_version != ExpectedVersion::Any)
                .then_some(e.expected_version),
            erased: e.erased.then_some(true),
        }
    }
}

/// A pending event the server refused (`rejected()`, and every `onRejected` call).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "ts", derive(TS))]
#[cfg_attr(feature = "ts", ts(rename = "RejectionMessage"))]
#[serde(rename_all = "camelCase")]
pub struct RejectionMessage<'a> {
    pub event: OutboxEvent<'a>,
    /// The server's reason.
    pub reason: &'a str,
    /// The stream's version on the server, for a version conflict.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional, type = "number"))]
    pub actual_version: Option<u64>,
}

impl<'a> From<&'a crate::engine::Rejection> for RejectionMessage<'a> {
    fn from(r: &'a crate::engine::Rejection) -> Self {
        RejectionMessage {
            event: OutboxEvent::from(&r.event),
            reason: &r.reason,
            actual_version: r.actual_version,
        }
    }
}

/// The options of `WasmStore.open` (JSON; every field optional).
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "ts", derive(TS))]
#[cfg_attr(feature = "ts", ts(rename = "WasmOpenOptions", optional_fields))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct OpenOptions {
    /// Largest event (stream + type + data + meta bytes).
    pub max_event_bytes: Option<usize>,
    /// Largest stream or type name, in bytes.
    pub max_name_bytes: Option<usize>,
    /// Most events in one append (`TOO_LARGE` above).
    pub max_batch: Option<usize>,
    /// Recorded as the events' `origin`.
    pub origin: Option<String>,
    /// Memory storage only: stores opened with the same name share one log, the way tabs
    /// share an IndexedDB database (for tests and for processes that reopen a store).
    pub shared_memory: Option<bool>,
    /// Keep appends in an outbox until a sync server confirms them.
    pub synced: Option<bool>,
    /// Read no event at open: `loadFrom`, `loadStep`, `complete`.
    pub lazy: Option<bool>,
    /// The server URL and store name a synced store syncs with: recorded the first time,
    /// checked on every later open (`STORE_MISMATCH` when they differ).
    pub sync_server: Option<String>,
    pub sync_store: Option<String>,
    /// When the stored server store differs: drop the local copy of its log instead of
    /// failing (the outbox stays).
    pub reset_on_mismatch: Option<bool>,
}

/// The configuration of `startSync` (JSON).
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "ts", derive(TS))]
#[cfg_attr(feature = "ts", ts(rename = "WasmSyncConfig", optional_fields))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SyncConfig {
    /// The server's base URL.
    pub url: String,
    /// The store's name on the server.
    pub store: String,
    /// The bearer token.
    pub token: String,
    /// Extra request headers, sent with every request.
    #[cfg_attr(feature = "ts", ts(optional, type = "Record<string, string>"))]
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    /// Most events per push.
    pub push_batch: Option<usize>,
    /// Most events per pull.
    pub pull_limit: Option<usize>,
    /// How long a pull waits for news (0: no long poll).
    pub long_poll_seconds: Option<u32>,
}

/// The input of `setSyncAuth`: the credentials to send from now on (a refreshed token).
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "ts", derive(TS))]
#[cfg_attr(feature = "ts", ts(rename = "WasmSyncAuth", optional_fields))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SyncAuth {
    pub token: String,
    #[cfg_attr(feature = "ts", ts(optional, type = "Record<string, string>"))]
    pub headers: Option<std::collections::BTreeMap<String, String>>,
}

impl OpenOptions {
    /// Reads the options (unknown fields refused; `null` is a field left out).
    pub fn read(r: &mut Reader<'_>) -> JsonResult<Self> {
        let mut o = OpenOptions::default();
        r.object(&mut |r, key| {
            match key {
                "maxEventBytes" => o.max_event_bytes = r.opt_uint()?,
                "maxNameBytes" => o.max_name_bytes = r.opt_uint()?,
                "maxBatch" => o.max_batch = r.opt_uint()?,
                "origin" => o.origin = r.opt_string()?,
                "sharedMemory" => o.shared_memory = r.opt_bool()?,
                "synced" => o.synced = r.opt_bool()?,
                "lazy" => o.lazy = r.opt_bool()?,
                "syncServer" => o.sync_server = r.opt_string()?,
                "syncStore" => o.sync_store = r.opt_string()?,
                "resetOnMismatch" => o.reset_on_mismatch = r.opt_bool()?,
                _ => return Err(r.unknown_field(key)),
            }
            Ok(())
        })?;
        Ok(o)
    }
}

impl SyncConfig {
    /// Reads the configuration (unknown fields refused).
    pub fn read(r: &mut Reader<'_>) -> JsonResult<Self> {
        let (mut url, mut store, mut token, mut headers) = (None, None, None, None);
        let (mut push_batch, mut pull_limit, mut long_poll_seconds) = (None, None, None);
        r.object(&mut |r, key| match key {
            "url" => r.once(&mut url, key, Reader::owned_string),
            "store" => r.once(&mut store, key, Reader::owned_string),
            "token" => r.once(&mut token, key, Reader::owned_string),
            "headers" => r.once(&mut headers, key, read_headers),
            "pushBatch" => r.once(&mut push_batch, key, Reader::opt_uint::<usize>),
            "pullLimit" => r.once(&mut pull_limit, key, Reader::opt_uint::<usize>),
            "longPollSeconds" => r.once(&mut long_poll_seconds, key, Reader::opt_uint::<u32>),
            _ => Err(r.unknown_field(key)),
        })?;
        Ok(SyncConfig {
            url: json::required(r, url, "url")?,
            store: json::required(r, store, "store")?,
            token: json::required(r, token, "token")?,
            headers: headers.flatten(),
            push_batch: push_batch.flatten(),
            pull_limit: pull_limit.flatten(),
            long_poll_seconds: long_poll_seconds.flatten(),
        })
    }
}

/// Request headers: an object of strings, or `null` for none.
fn read_headers(r: &mut Reader<'_>) -> JsonResult<Option<BTreeMap<String, String>>> {
    if r.null()? {
        return Ok(None);
    }
    let mut headers = BTreeMap::new();
    r.object(&mut |r, name| {
        let value = r.owned_string()?;
        headers.insert(name.to_owned(), value);
        Ok(())
    })?;
    Ok(Some(headers))
}

impl SyncAuth {
    /// Reads the credentials (unknown fields refused).
    pub fn read(r: &mut Reader<'_>) -> JsonResult<Self> {
        let (mut token, mut headers) = (None, None);
        r.object(&mut |r, key| match key {
            "token" => r.once(&mut token, key, Reader::owned_string),
            "headers" => r.once(&mut headers, key, read_headers),
            _ => Err(r.unknown_field(key)),
        })?;
        Ok(SyncAuth {
            token: json::required(r, token, "token")?,
            headers: headers.flatten(),
        })
    }

    pub fn credentials(self) -> crate::sync::client::Credentials {
        crate::sync::client::Credentials {
            token: self.token,
            headers: self.headers.unwrap_or_default().into_iter().collect(),
        }
    }
}

/// The reply of `commandResult`: what a command id executed before left in its stream.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "ts", derive(TS))]
pub struct CommandResultReply<'a> {
    /// The command's events, in stream order.
    #[cfg_attr(feature = "ts", ts(type = "AnnalsEvent[]"))]
    pub events: JsonFragment<'a>,
    /// The stream's version after the command's last event.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub version: u64,
}

/// The input of `planCommand`: what `decide` returned for a command, to turn into the
/// batch to append.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "ts", derive(TS))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CommandPlanRequest {
    /// The aggregate's stream.
    pub stream: String,
    /// The aggregate kind, recorded as `meta.aggregate` (what routes a refused event back
    /// to its `onRejected`).
    #[cfg_attr(feature = "ts", ts(optional))]
    pub aggregate: Option<String>,
    pub command_id: String,
    /// Defaults to the command id.
    #[cfg_attr(feature = "ts", ts(optional))]
    pub correlation_id: Option<String>,
    /// Defaults to the command id.
    #[cfg_attr(feature = "ts", ts(optional))]
    pub causation_id: Option<String>,
    /// The stream version `decide` saw: the first event expects it.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub expected_version: u64,
    /// The decided events, in order.
    pub events: Vec<DecidedEvent>,
}

/// One event `decide` returned.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "ts", derive(TS))]
#[serde(deny_unknown_fields)]
pub struct DecidedEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    /// The version of the type's schema `data` follows (1 to 2^32 - 1); absent: 1.
    #[serde(rename = "schemaVersion", default)]
    #[cfg_attr(feature = "ts", ts(optional, type = "number"))]
    pub schema_version: Option<u32>,
    /// Absent: `null`.
    #[serde(default)]
    #[cfg_attr(feature = "ts", ts(optional, type = "unknown"))]
    pub data: Option<Box<RawValue>>,
    /// The app's meta (an object); the command's ids are added to it.
    #[serde(default)]
    #[cfg_attr(feature = "ts", ts(optional, type = "Record<string, unknown>"))]
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
}

impl CommandPlanRequest {
    /// Reads the request (unknown fields refused).
    pub fn read(r: &mut Reader<'_>) -> JsonResult<Self> {
        let (mut stream, mut aggregate, mut command_id, mut correlation_id) =
            (None, None, None, None);
        let (mut causation_id, mut expected_version, mut events) = (None, None, None);
        r.object(&mut |r, key| match key {
            "stream" => r.once(&mut stream, key, Reader::owned_string),
            "aggregate" => r.once(&mut aggregate, key, Reader::opt_string),
            "commandId" => r.once(&mut command_id, key, Reader::owned_string),
            "correlationId" => r.once(&mut correlation_id, key, Reader::opt_string),
            "causationId" => r.once(&mut causation_id, key, Reader::opt_string),
            "expectedVersion" => r.once(&mut expected_version, key, Reader::u64),
            "events" => r.once(&mut events, key, |r| r.list(DecidedEvent::read)),
            _ => Err(r.unknown_field(key)),
        })?;
        Ok(CommandPlanRequest {
            stream: json::required(r, stream, "stream")?,
            aggregate: aggregate.flatten(),
            command_id: json::required(r, command_id, "commandId")?,
            correlation_id: correlation_id.flatten(),
            causation_id: causation_id.flatten(),
            expected_version: json::required(r, expected_version, "expectedVersion")?,
            events: json::required(r, events, "events")?,
        })
    }
}

impl DecidedEvent {
    fn read(r: &mut Reader<'_>) -> JsonResult<Self> {
        let (mut event_type, mut schema_version, mut data, mut meta) = (None, None, None, None);
        r.object(&mut |r, key| match key {
            "type" => r.once(&mut event_type, key, Reader::owned_string),
            "schemaVersion" => r.once(&mut schema_version, key, Reader::opt_uint::<u32>),
            "data" => r.once(&mut data, key, |r| {
                if r.null()? {
                    return Ok(None);
                }
                r.raw_value().map(Some)
            }),
            "meta" => r.once(&mut meta, key, |r| {
                if r.null()? {
                    return Ok(None);
                }
                match r.value()? {
                    serde_json::Value::Object(map) => Ok(Some(map)),
                    _ => Err(r.error("invalid type: `meta` must be an object")),
                }
            }),
            _ => Err(r.unknown_field(key)),
        })?;
        Ok(DecidedEvent {
            event_type: json::required(r, event_type, "type")?,
            schema_version: schema_version.flatten(),
            data: data.flatten(),
            meta: meta.flatten(),
        })
    }
}

/// An event of the batch `planCommand` returns: what `append` takes, id and meta set.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "ts", derive(TS))]
#[serde(rename_all = "camelCase")]
pub struct PlannedEvent<'a> {
    #[cfg_attr(feature = "ts", ts(type = "string"))]
    pub id: EventId,
    pub stream: &'a str,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    /// Absent: 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional, type = "number"))]
    pub schema_version: Option<u32>,
    #[cfg_attr(feature = "ts", ts(type = "unknown"))]
    pub data: &'a RawValue,
    #[cfg_attr(feature = "ts", ts(type = "Record<string, unknown>"))]
    pub meta: &'a RawValue,
    /// On the first event only: the batch is atomic.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional, type = "number"))]
    pub expected_version: Option<u64>,
}

/// The TypeScript module `pkg/src/generated/contract.ts`: one declaration per type above.
#[cfg(feature = "ts")]
pub fn typescript_module() -> String {
    fn decl<T: TS + 'static>(out: &mut String) {
        if let Some(docs) = T::docs() {
            out.push_str(&docs);
        }
        out.push_str("export ");
        out.push_str(&T::decl());
        out.push_str("\n\n");
    }
    let mut out = String::new();
    out.push_str("import type { AnnalsEvent } from \"../types.js\";\n");
    out.push_str("import type { AnnalsErrorCode } from \"./error-codes.js\";\n\n");
    decl::<AppendReply<'static>>(&mut out);
    decl::<ChangeMessage<'static>>(&mut out);
    decl::<OwnAppend<'static>>(&mut out);
    decl::<SnapshotReply<'static>>(&mut out);
    decl::<SyncReportReply>(&mut out);
    decl::<CompactionReply>(&mut out);
    decl::<SyncStatusMessage<'static>>(&mut out);
    decl::<SyncAuth>(&mut out);
    decl::<OutboxEvent<'static>>(&mut out);
    decl::<RejectionMessage<'static>>(&mut out);
    decl::<OpenOptions>(&mut out);
    decl::<SyncConfig>(&mut out);
    decl::<CommandResultReply<'static>>(&mut out);
    decl::<CommandPlanRequest>(&mut out);
    decl::<DecidedEvent>(&mut out);
    decl::<PlannedEvent<'static>>(&mut out);
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fragment_is_written_verbatim() {
        let reply = AppendReply {
            results: vec![1, 2],
            duplicates: JsonFragment::trusted(r#"[{"id":"x","data":{"a" : 1}}]"#),
            stream_versions: vec![4, 4],
            seq: None,
        };
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"results":[1,2],"duplicates":[{"id":"x","data":{"a" : 1}}],"streamVersions":[4,4],"seq":null}"#
        );
    }

    #[test]
    fn an_erased_outbox_event_says_so_and_others_do_not() {
        let mut event: crate::protocol::PushEvent = serde_json::from_str(
            r#"{"id":"0190a4c1-7d2e-7c3a-9f10-2b3c4d5e6f70","stream":"s","type":"T","data":{"a":1},"meta":{"m":1},"time":5}"#,
        )
        .unwrap();
        let plain = serde_json::to_string(&OutboxEvent::from(&event)).unwrap();
        assert!(!plain.contains("erased"), "{plain}");
        event.erase();
        let erased = serde_json::to_string(&OutboxEvent::from(&event)).unwrap();
        assert!(
            erased.ends_with(r#","data":null,"time":5,"erased":true}"#),
            "{erased}"
        );
    }

    #[test]
    fn a_change_message_names_its_fields_in_camel_case() {
        let message = ChangeMessage {
            seq: 3,
            reset: false,
            rebased: true,
            previous_head: 4,
            head: 6,
            confirmed: 4,
            erased_from: 2,
            confirmed_events: JsonFragment::trusted("[]"),
            pending_events: JsonFragment::trusted("[{}]"),
            own: None,
        };
        assert_eq!(
            serde_json::to_string(&message).unwrap(),
            r#"{"seq":3,"reset":false,"rebased":true,"previousHead":4,"head":6,"confirmed":4,"erasedFrom":2,"confirmedEvents":[],"pendingEvents":[{}]}"#
        );
    }

    #[test]
    fn a_change_of_a_tagged_append_carries_its_stamps_instead_of_events() {
        let message = ChangeMessage {
            seq: 1,
            reset: false,
            rebased: false,
            previous_head: 0,
            head: 2,
            confirmed: 2,
            erased_from: 0,
            confirmed_events: JsonFragment::trusted("[]"),
            pending_events: JsonFragment::trusted("[]"),
            own: Some(OwnAppend {
                tag: 7,
                ids: JsonFragment::trusted(r#"["a","b"]"#),
                versions: vec![1, 2],
                time: 5,
                origin: None,
            }),
        };
        assert_eq!(
            serde_json::to_string(&message).unwrap(),
            r#"{"seq":1,"reset":false,"rebased":false,"previousHead":0,"head":2,"confirmed":2,"erasedFrom":0,"confirmedEvents":[],"pendingEvents":[],"own":{"tag":7,"ids":["a","b"],"versions":[1,2],"time":5,"origin":null}}"#
        );
    }

    #[test]
    fn open_options_refuse_unknown_fields() {
        assert!(serde_json::from_str::<OpenOptions>(r#"{"synced":true,"lazy":true}"#).is_ok());
        assert!(serde_json::from_str::<OpenOptions>(r#"{"sync":true}"#).is_err());
    }
}
