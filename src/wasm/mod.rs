//! The wasm binding: the only `#[wasm_bindgen]` code. Thin by design: coarse calls, one
//! boundary crossing per batch, JSON strings in and out. The TypeScript wrapper in `pkg/`
//! turns this surface into the public API.
//!
//! Every method that can fail rejects (or throws) a real JS `Error` whose `name` is
//! `"AnnalsError"` and whose `code` is [`Error::code`].

mod storage;

use std::collections::HashSet;
use std::rc::Rc;

use js_sys::{Promise, Reflect};
use serde::Deserialize;
use serde_json::value::RawValue;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::engine::{Engine, EngineOptions};
use crate::error::{Error, Result};
use crate::event::{ExpectedVersion, Limits, NewEvent, MAX_SAFE_INTEGER};
use crate::log::{AppendResult, ReadQuery};
use crate::storage::SnapshotRecord;

pub use storage::AnyStorage;

/// Converts an annals error into a JS `Error` with `name = "AnnalsError"` and a `code`;
/// conflicts also carry `stream`, `expectedVersion` and `actualVersion`.
pub fn to_js_error(err: &Error) -> JsValue {
    let js = js_sys::Error::new(&err.to_string());
    js.set_name("AnnalsError");
    let target: &JsValue = js.as_ref();
    let set = |key: &str, value: &JsValue| {
        // Setting a property on a fresh Error object cannot fail; ignore it if it did.
        let _ = Reflect::set(target, &JsValue::from_str(key), value);
    };
    set("code", &JsValue::from_str(err.code()));
    if let Error::WrongExpectedVersion {
        stream,
        expected,
        actual,
    } = err
    {
        set("stream", &JsValue::from_str(stream));
        let expected = match expected {
            ExpectedVersion::Exact(v) => JsValue::from_f64(*v as f64),
            other => JsValue::from_str(&other.to_string()),
        };
        set("expectedVersion", &expected);
        set("actualVersion", &JsValue::from_f64(*actual as f64));
    }
    js.into()
}

fn js_result<T>(result: Result<T>) -> std::result::Result<T, JsValue> {
    result.map_err(|e| to_js_error(&e))
}

/// Reads a JS number argument as a position or count: a non-negative safe integer.
fn whole_number(name: &str, value: f64) -> Result<u64> {
    if value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value <= MAX_SAFE_INTEGER as f64
    {
        Ok(value as u64)
    } else {
        Err(Error::InvalidArgument(format!(
            "`{name}` must be a non-negative integer, got {value}"
        )))
    }
}

/// `{ maxEventBytes?, maxNameBytes?, origin?, sharedMemory? }`
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct OpenOptions {
    max_event_bytes: Option<usize>,
    max_name_bytes: Option<usize>,
    origin: Option<String>,
    /// Memory storage only: stores opened with the same name share one log, the way tabs
    /// share an IndexedDB database (for tests and for processes that reopen a store).
    shared_memory: bool,
}

impl OpenOptions {
    fn parse(json: &str) -> Result<Self> {
        let json = json.trim();
        if json.is_empty() || json == "null" || json == "undefined" {
            return Ok(OpenOptions::default());
        }
        serde_json::from_str(json).map_err(|e| Error::InvalidArgument(format!("open options: {e}")))
    }

    fn engine_options(&self) -> Result<EngineOptions> {
        let mut limits = Limits::default();
        if let Some(bytes) = self.max_event_bytes {
            if bytes == 0 {
                return Err(Error::InvalidArgument(
                    "`maxEventBytes` must be positive".into(),
                ));
            }
            limits.max_event_bytes = bytes;
        }
        if let Some(bytes) = self.max_name_bytes {
            if bytes == 0 {
                return Err(Error::InvalidArgument(
                    "`maxNameBytes` must be positive".into(),
                ));
            }
            limits.max_name_bytes = bytes;
        }
        Ok(EngineOptions {
            limits,
            origin: self.origin.clone(),
            ..EngineOptions::default()
        })
    }
}

/// One open store, as JavaScript holds it.
#[wasm_bindgen]
pub struct WasmStore {
    engine: Rc<Engine<AnyStorage>>,
}

#[wasm_bindgen]
impl WasmStore {
    /// Opens (creating if needed) the store `name` on `"indexeddb"` or `"memory"` storage.
    /// Resolves to a `WasmStore`.
    pub async fn open(
        name: String,
        storage: String,
        options_json: String,
    ) -> std::result::Result<WasmStore, JsValue> {
        js_result(open_store(&name, &storage, &options_json).await)
    }

    /// The last position in this store's view of the log.
    #[wasm_bindgen(getter)]
    pub fn head(&self) -> f64 {
        self.engine.head() as f64
    }

    #[wasm_bindgen(getter, js_name = isClosed)]
    pub fn is_closed(&self) -> bool {
        self.engine.is_closed()
    }

    /// Appends a JSON array of events atomically. Resolves to
    /// `{"previousHead","head","events":[p+1..=head],"results":[position per input],
    /// "duplicates":[stored events for inputs whose id was already at or before p]}`.
    pub fn append(&self, batch_json: String) -> Promise {
        let engine = self.engine.clone();
        future_to_promise(async move {
            let out = append_json(&engine, &batch_json).await;
            js_result(out).map(|s| JsValue::from_str(&s))
        })
    }

    /// Reads what other tabs appended. Resolves to `{"previousHead","head","events":[...]}`.
    #[wasm_bindgen(js_name = catchUp)]
    pub fn catch_up(&self) -> Promise {
        let engine = self.engine.clone();
        future_to_promise(async move {
            let out = async {
                let change = engine.catch_up().await?;
                change_json(&engine, change.previous_head, change.head)
            }
            .await;
            js_result(out).map(|s| JsValue::from_str(&s))
        })
    }

    /// The events matching a JSON query `{after?, to?, limit?, stream?, type?}`, as a JSON
    /// array.
    pub fn read(&self, query_json: &str) -> std::result::Result<String, JsValue> {
        js_result(ReadQuery::parse(query_json).and_then(|q| self.engine.read_json(&q)))
    }

    /// Events `after + 1 ..= to` as a JSON array.
    pub fn range(&self, after: f64, to: f64) -> std::result::Result<String, JsValue> {
        js_result((|| {
            let after = whole_number("after", after)?;
            let to = whole_number("to", to)?;
            self.engine.range_json(after, to)
        })())
    }

    /// Stores a projection's state (JSON) at `position`, tagged with its version.
    #[wasm_bindgen(js_name = putSnapshot)]
    pub fn put_snapshot(
        &self,
        name: String,
        version: f64,
        position: f64,
        state_json: String,
    ) -> Promise {
        let engine = self.engine.clone();
        future_to_promise(async move {
            let out = async {
                let version = u32::try_from(whole_number("version", version)?).map_err(|_| {
                    Error::InvalidArgument(format!("`version` {version} is too large"))
                })?;
                let position = whole_number("position", position)?;
                if name.is_empty() {
                    return Err(Error::InvalidArgument(
                        "a snapshot needs a non-empty name".into(),
                    ));
                }
                serde_json::from_str::<&RawValue>(&state_json).map_err(|e| {
                    Error::InvalidArgument(format!("snapshot state is not JSON: {e}"))
                })?;
                engine
                    .put_snapshot(&SnapshotRecord {
                        name,
                        version,
                        position,
                        state: state_json,
                    })
                    .await
            }
            .await;
            js_result(out).map(|()| JsValue::UNDEFINED)
        })
    }

    /// Resolves to `{"version","position","state":<json>}`, or `undefined` when none is
    /// stored.
    pub fn snapshot(&self, name: String) -> Promise {
        let engine = self.engine.clone();
        future_to_promise(async move {
            let out = async {
                let Some(record) = engine.snapshot(&name).await? else {
                    return Ok(None);
                };
                let state: &RawValue = serde_json::from_str(&record.state)
                    .map_err(|e| Error::Corrupt(format!("snapshot `{name}` is not JSON: {e}")))?;
                let mut out = String::with_capacity(record.state.len() + 64);
                out.push_str("{\"version\":");
                out.push_str(&record.version.to_string());
                out.push_str(",\"position\":");
                out.push_str(&record.position.to_string());
                out.push_str(",\"state\":");
                out.push_str(state.get());
                out.push('}');
                Ok(Some(out))
            }
            .await;
            js_result(out).map(|s| s.map_or(JsValue::UNDEFINED, |s| JsValue::from_str(&s)))
        })
    }

    #[wasm_bindgen(js_name = deleteSnapshot)]
    pub fn delete_snapshot(&self, name: String) -> Promise {
        let engine = self.engine.clone();
        future_to_promise(async move {
            js_result(engine.delete_snapshot(&name).await).map(|()| JsValue::UNDEFINED)
        })
    }

    /// Merges small segments. Resolves to `{"segmentsBefore","segmentsAfter","events"}`.
    pub fn compact(&self) -> Promise {
        let engine = self.engine.clone();
        future_to_promise(async move {
            js_result(engine.compact().await).map(|r| {
                JsValue::from_str(&format!(
                    "{{\"segmentsBefore\":{},\"segmentsAfter\":{},\"events\":{}}}",
                    r.segments_before, r.segments_after, r.events
                ))
            })
        })
    }

    /// Closes the store once writes in flight are done; later calls fail with `CLOSED`.
    pub fn close(&self) -> Promise {
        let engine = self.engine.clone();
        future_to_promise(async move {
            engine.close().await;
            Ok(JsValue::UNDEFINED)
        })
    }
}

async fn open_store(name: &str, storage: &str, options_json: &str) -> Result<WasmStore> {
    if name.trim().is_empty() {
        return Err(Error::InvalidArgument(
            "a store needs a non-empty `name`".into(),
        ));
    }
    let options = OpenOptions::parse(options_json)?;
    let backend = AnyStorage::choose(name, storage, options.shared_memory)?;
    let engine = Engine::open(backend, options.engine_options()?).await?;
    Ok(WasmStore {
        engine: Rc::new(engine),
    })
}

async fn append_json(engine: &Engine<AnyStorage>, batch_json: &str) -> Result<String> {
    let batch = NewEvent::parse_batch(batch_json)?;
    let outcome = engine.append(batch).await?;
    let (previous_head, head) = (outcome.previous_head, outcome.head);
    let events = engine.range_json(previous_head, head)?;
    let mut out = String::with_capacity(events.len() + 64 + outcome.results.len() * 12);
    out.push_str("{\"previousHead\":");
    out.push_str(&previous_head.to_string());
    out.push_str(",\"head\":");
    out.push_str(&head.to_string());
    out.push_str(",\"events\":");
    out.push_str(&events);
    out.push_str(",\"results\":[");
    for (i, result) in outcome.results.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&result.position().to_string());
    }
    out.push_str("],\"duplicates\":[");
    let mut seen = HashSet::new();
    let mut wrote_any = false;
    for result in &outcome.results {
        if let AppendResult::Duplicate(position) = *result {
            if position <= previous_head && seen.insert(position) {
                let one = engine.range_json(position.saturating_sub(1), position)?;
                // `[{...}]`: keep the object only.
                let inner = one
                    .strip_prefix('[')
                    .and_then(|s| s.strip_suffix(']'))
                    .unwrap_or("");
                if !inner.is_empty() {
                    if std::mem::replace(&mut wrote_any, true) {
                        out.push(',');
                    }
                    out.push_str(inner);
                }
            }
        }
    }
    out.push_str("]}");
    Ok(out)
}

fn change_json(engine: &Engine<AnyStorage>, previous_head: u64, head: u64) -> Result<String> {
    let events = engine.range_json(previous_head, head)?;
    Ok(format!(
        "{{\"previousHead\":{previous_head},\"head\":{head},\"events\":{events}}}"
    ))
}
