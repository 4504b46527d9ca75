//! The wasm binding: the only `#[wasm_bindgen]` code. Thin by design: coarse calls, one
//! boundary crossing per batch, JSON strings in and out. The TypeScript wrapper in `pkg/`
//! turns this surface into the public API.
//!
//! Every method that can fail rejects (or throws) a real JS `Error` whose `name` is
//! `"AnnalsError"` and whose `code` is [`Error::code`].

mod retention;
mod rules;
mod storage;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use crate::json;
use js_sys::{Function, Promise, Reflect};
use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::contract::{
    AppendReply, ChangeMessage, CommandResultReply, CompactionReply, JsonFragment, OpenOptions,
    OutboxEvent, OwnAppend, RejectionMessage, SnapshotReply, SyncAuth, SyncConfig, SyncReportReply,
    SyncStatusMessage,
};
use crate::engine::{Change, Engine, EngineOptions, OnMismatch, Rejection, SyncTarget};
use crate::error::{Error, Result};
use crate::event::{ExpectedVersion, Limits, NewEvent, MAX_SAFE_INTEGER};
use crate::log::{AppendResult, ReadQuery};
use crate::storage::memory::MemoryStorage;
use crate::storage::SnapshotRecord;
use crate::sync::client::{SyncClient, SyncOptions};
use crate::sync::fetch::{FetchTransport, TimeoutTimer};

pub use rules::WasmCheckpointPlan;
pub use storage::AnyStorage;

/// Converts an annals error into a JS `Error` with `name = "AnnalsError"` and a `code`;
/// conflicts also carry `stream`, `expectedVersion` and `actualVersion`.
pub fn to_js_error(err: &Error) -> JsValue {
    let js = coded_js_error(err.code(), &err.to_string());
    let target: &JsValue = js.as_ref();
    let set = |key: &str, value: &JsValue| {
        // Setting a property on a fresh Error object cannot fail; ignore it if it did.
        let _ = Reflect::set(target, &JsValue::from_str(key), value);
    };
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
    if let Error::DuplicateId { event, ids, .. } = err {
        // The stored event as reads return it; JSON the engine wrote, so it parses.
        if let Ok(stored) = js_sys::JSON::parse(event) {
            set("event", &stored);
        }
        let list = js_sys::Array::new();
        for id in ids {
            list.push(&JsValue::from_str(id));
        }
        set("ids", &list);
    }
    if let Error::NotRetained { dropped, .. } = err {
        // The first position the replica still holds.
        set("retainedFrom", &JsValue::from_f64((*dropped + 1) as f64));
    }
    js.into()
}

/// A JS `Error` named `"AnnalsError"` with this `code`: the one shape every failure takes.
fn coded_js_error(code: &str, message: &str) -> js_sys::Error {
    let js = js_sys::Error::new(message);
    js.set_name("AnnalsError");
    // Setting a property on a fresh Error object cannot fail; ignore it if it did.
    let _ = Reflect::set(&js, &JsValue::from_str("code"), &JsValue::from_str(code));
    js
}

/// Serialises a contract type (`src/contract.rs`) into the JSON string JS receives.
fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Storage(format!("reply not serialisable: {e}")))
}

/// The Promise of an async method. The body is boxed so that one copy of
/// `future_to_promise`'s glue (spawning, waking, settling the Promise) serves every method
/// instead of one per method's future type (-2 KB brotli); one allocation per call.
fn promise(body: impl Future<Output = std::result::Result<JsValue, JsValue>> + 'static) -> Promise {
    let body: Pin<Box<dyn Future<Output = std::result::Result<JsValue, JsValue>>>> = Box::pin(body);
    wasm_bindgen_futures::future_to_promise(body)
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
            "`{name}` must be a non-negative integer, got {}",
            number_text(value)
        )))
    }
}

/// A JS number as JavaScript writes it (`1.5`, `NaN`, `-Infinity`): Rust's own float
/// formatting would add 5 KB (brotli) to the wasm for these error messages alone.
fn number_text(value: f64) -> String {
    js_sys::Number::from(value)
        .to_string_with_radix(10)
        .map(String::from)
        .unwrap_or_else(|_| "a number".into())
}

/// Reading the options of `WasmStore.open` ([`OpenOptions`], in the contract).
trait OpenOptionsExt: Sized {
    fn parse(json: &str) -> Result<Self>;
    fn engine_options(&self) -> Result<EngineOptions>;
}

impl OpenOptionsExt for OpenOptions {
    fn parse(json: &str) -> Result<Self> {
        let json = json.trim();
        if json.is_empty() || json == "null" || json == "undefined" {
            return Ok(OpenOptions::default());
        }
        json::parse(json, OpenOptions::read)
            .map_err(|e| Error::InvalidArgument(format!("open options: {e}")))
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
        if let Some(events) = self.max_batch {
            if events == 0 {
                return Err(Error::InvalidArgument("`maxBatch` must be positive".into()));
            }
            limits.max_batch_events = events;
        }
        Ok(EngineOptions {
            limits,
            origin: self.origin.clone(),
            synced: self.synced.unwrap_or(false),
            ..EngineOptions::default()
        })
    }
}

/// One open store, as JavaScript holds it.
#[wasm_bindgen]
pub struct WasmStore {
    engine: Rc<Engine<AnyStorage>>,
    sync: RefCell<Option<Rc<SyncClient<FetchTransport>>>>,
    /// Counts the changes the engine reported, so that an append's reply can name the
    /// change that carried its events (`seq`).
    changes: Rc<Cell<u64>>,
    /// The tagged appends in flight, with their batch sizes: a change carrying exactly one
    /// of them reaches the listener as stamps ([`OwnAppend`]).
    own_appends: OwnAppends,
    /// Where JS writes a batch's UTF-8 for `append` (see [`WasmStore::input_buffer`]).
    input: RefCell<Vec<u8>>,
}

/// Tagged appends in flight: (tag, events in the batch).
type OwnAppends = Rc<RefCell<Vec<(u64, usize)>>>;

/// An input buffer larger than this is let go once read (a big import's batch), rather
/// than kept for the next append.
const KEPT_INPUT_BYTES: usize = 1 << 20;

impl WasmStore {
    /// The batch in the first `len` bytes of the input buffer, parsed (the buffer is free
    /// for the next append once this returns).
    fn take_input(&self, len: usize) -> Result<Vec<NewEvent>> {
        let mut input = self.input.borrow_mut();
        let bytes = input.get(..len).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "`append` was told the batch is {len} bytes, but the input buffer holds {}: \
                 write the batch into `inputBuffer(len)` first",
                input.len()
            ))
        })?;
        let parsed = std::str::from_utf8(bytes)
            .map_err(|_| Error::InvalidEvent("the batch is not UTF-8 text".into()))
            .and_then(NewEvent::parse_batch);
        if input.len() > KEPT_INPUT_BYTES {
            *input = Vec::new();
        }
        parsed
    }
}

#[wasm_bindgen]
impl WasmStore {
    /// Opens (creating if needed) the store `name` on `"indexeddb"` or `"memory"` storage.
    /// Resolves to a `WasmStore`. `writer`: the store's writer lock, where the platform has
    /// Web Locks (every tab of the store must pass one then).
    pub async fn open(
        name: String,
        storage: String,
        options_json: String,
        writer: Option<storage::JsWriterLock>,
    ) -> std::result::Result<WasmStore, JsValue> {
        js_result(open_store(&name, &storage, &options_json, writer).await)
    }

    /// The last position in this store's view of the log.
    #[wasm_bindgen(getter)]
    pub fn head(&self) -> f64 {
        self.engine.head() as f64
    }

    /// The last confirmed position (the sync cursor of a synced store).
    #[wasm_bindgen(getter, js_name = confirmedHead)]
    pub fn confirmed_head(&self) -> f64 {
        self.engine.confirmed_head() as f64
    }

    /// Events waiting for the server.
    #[wasm_bindgen(getter, js_name = pendingCount)]
    pub fn pending_count(&self) -> f64 {
        self.engine.pending_count() as f64
    }

    #[wasm_bindgen(getter)]
    pub fn synced(&self) -> bool {
        self.engine.is_synced()
    }

    /// The persisted client id of a synced store.
    #[wasm_bindgen(getter, js_name = clientId)]
    pub fn client_id(&self) -> Option<String> {
        self.engine.client_id().map(str::to_owned)
    }

    /// Calls `listener(changeJson)` after every change to the log, whatever caused it (an
    /// append, another tab, a pull), before the call that caused it resolves: a
    /// `ChangeMessage` (src/contract.rs) `{"seq","reset","rebased","previousHead","head",
    /// "confirmed","confirmedEvents":[...],"pendingEvents":[...]}`. Unless `rebased`, the new events are `confirmedEvents` then
    /// `pendingEvents`, at positions `previousHead + 1 ..= head`; when `rebased`,
    /// `pendingEvents` is the whole outbox, to fold again on the confirmed state (which
    /// `reset` starts from scratch). `seq` numbers the changes (1, 2, ...).
    #[wasm_bindgen(js_name = setListener)]
    pub fn set_listener(&self, listener: Function) {
        let engine = Rc::downgrade(&self.engine);
        let changes = self.changes.clone();
        let own_appends = self.own_appends.clone();
        self.engine.subscribe(move |change| {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            let own = own_appends
                .borrow()
                .iter()
                .find(|(tag, _)| change.append_tag != 0 && *tag == change.append_tag)
                .copied();
            match change_json(&engine, change, changes.get(), own) {
                Ok(json) => {
                    // A throwing listener is the wrapper's bug to report; the log is fine.
                    let _ = listener.call1(&JsValue::NULL, &JsValue::from_str(&json));
                }
                Err(e) => {
                    let _ = listener.call2(&JsValue::NULL, &JsValue::NULL, &to_js_error(&e));
                }
            }
        });
    }

    /// Calls `listener(reason)` once if an IndexedDB store loses its database connection
    /// without `close()`: `"deleted"` (another tab deleted the database), `"upgraded"`
    /// (another tab opened it at a newer version) or `"lost"` (the browser closed it).
    /// Every later call that needs the database fails with `CLOSED`; what is in memory
    /// still reads (see `outbox`). Memory stores never lose theirs.
    #[wasm_bindgen(js_name = setOnClosed)]
    pub fn set_on_closed(&self, listener: Function) {
        if let AnyStorage::IndexedDb(storage) = self.engine.storage() {
            storage.on_connection_lost(move |reason| {
                // A throwing listener is the wrapper's bug to report; nothing to undo here.
                let _ = listener.call1(&JsValue::NULL, &JsValue::from_str(reason));
            });
        }
    }

    /// The events waiting for the server, in push order, as a JSON array of `{ id, stream,
    /// type, data, meta?, time, expectedVersion? }`: what to append again by id into a
    /// database that was deleted under this store.
    pub fn outbox(&self) -> std::result::Result<String, JsValue> {
        let outgoing = self.engine.outgoing(usize::MAX);
        let list: Vec<OutboxEvent<'_>> = outgoing.iter().map(OutboxEvent::from).collect();
        js_result(to_json(&list))
    }

    #[wasm_bindgen(getter, js_name = isClosed)]
    pub fn is_closed(&self) -> bool {
        self.engine.is_closed()
    }

    /// Room for `len` bytes in wasm memory, as a view for JS to write a batch's UTF-8 into
    /// (`TextEncoder.encodeInto`) before [`WasmStore::append`] reads it: the text crosses
    /// the boundary in one native pass, where a `Uint8Array` argument costs an encoding
    /// and a copy, and a string argument a character-by-character loop. The view is good
    /// only until the next call into the module (wasm memory may grow and detach it).
    #[wasm_bindgen(js_name = inputBuffer)]
    pub fn input_buffer(&self, len: usize) -> js_sys::Uint8Array {
        let mut input = self.input.borrow_mut();
        if input.len() < len {
            input.resize(len, 0);
        }
        let memory: js_sys::WebAssembly::Memory = wasm_bindgen::memory().unchecked_into();
        // The vector's bytes, where they lie in linear memory (wasm32 addresses fit u32).
        js_sys::Uint8Array::new_with_byte_offset_and_length(
            &memory.buffer(),
            input.as_ptr() as u32,
            len as u32,
        )
    }

    /// Appends a JSON array of events atomically: the first `len` bytes of the input
    /// buffer (see [`WasmStore::input_buffer`]), read before this returns. Resolves to an
    /// `AppendReply` `{"results":[position per input], "duplicates":[stored events for
    /// inputs whose id was already in the log],"seq":<the listener's change that carried
    /// the new events, or null>}`; the new events reach the listener first. With a `tag`
    /// (not 0, unique among the appends in flight), a change that carries exactly this
    /// batch's events reaches the listener as their stamps (`own`), for the caller to
    /// build the events from its batch.
    pub fn append(&self, len: usize, tag: u32) -> Promise {
        let batch = self.take_input(len);
        let engine = self.engine.clone();
        let changes = self.changes.clone();
        let own_appends = self.own_appends.clone();
        promise(async move {
            let out = match batch {
                Ok(batch) => {
                    append_batch(&engine, &changes, &own_appends, batch, u64::from(tag)).await
                }
                Err(e) => Err(e),
            };
            js_result(out).map(|s| JsValue::from_str(&s))
        })
    }

    /// Whether every event is loaded and indexed (always, unless opened `lazy`).
    #[wasm_bindgen(getter, js_name = isComplete)]
    pub fn is_complete(&self) -> bool {
        self.engine.is_complete()
    }

    /// Counts resets of the confirmed log (a changed server epoch, seen here or in
    /// another tab).
    #[wasm_bindgen(getter, js_name = logGeneration)]
    pub fn log_generation(&self) -> f64 {
        self.engine.log_generation() as f64
    }

    /// Events up to this position are not loaded yet (0 once all are).
    #[wasm_bindgen(getter, js_name = loadedAfter)]
    pub fn loaded_after(&self) -> f64 {
        self.engine.loaded_after() as f64
    }

    /// Starts loading the events after `after` that a lazy open left out (the first part
    /// now, then with `loadStep`), so that `range` can read them before the log is
    /// complete; `readableTo` tells how far.
    #[wasm_bindgen(js_name = loadFrom)]
    pub fn load_from(&self, after: f64) -> Promise {
        let engine = self.engine.clone();
        promise(async move {
            let out = async {
                let after = whole_number("after", after)?;
                engine.load_from(after).await
            }
            .await;
            js_result(out).map(|()| JsValue::UNDEFINED)
        })
    }

    /// How far the events after `after` can be read now (`after` when none can).
    #[wasm_bindgen(js_name = readableTo)]
    pub fn readable_to(&self, after: f64) -> std::result::Result<f64, JsValue> {
        let after = js_result(whole_number("after", after))?;
        Ok(self.engine.readable_to(after) as f64)
    }

    /// One step of completing a lazily opened log; resolves to true once complete.
    #[wasm_bindgen(js_name = loadStep)]
    pub fn load_step(&self) -> Promise {
        let engine = self.engine.clone();
        promise(async move { js_result(engine.load_step().await).map(JsValue::from) })
    }

    /// Loads and indexes everything a lazy open left out.
    pub fn complete(&self) -> Promise {
        let engine = self.engine.clone();
        promise(async move { js_result(engine.complete().await).map(|()| JsValue::UNDEFINED) })
    }

    /// Reads what other tabs changed; the listener hears of it.
    #[wasm_bindgen(js_name = catchUp)]
    pub fn catch_up(&self) -> Promise {
        let engine = self.engine.clone();
        promise(async move { js_result(engine.catch_up().await).map(|_| JsValue::UNDEFINED) })
    }

    /// The pending events the server refused, as a JSON array of `RejectionMessage`
    /// `{"event","reason","actualVersion"?}`.
    pub fn rejected(&self) -> Promise {
        let engine = self.engine.clone();
        promise(async move {
            let out = async {
                let list = engine.rejected().await?;
                let list: Vec<RejectionMessage<'_>> =
                    list.iter().map(RejectionMessage::from).collect();
                to_json(&list)
            }
            .await;
            js_result(out).map(|s| JsValue::from_str(&s))
        })
    }

    /// Starts keeping this store in sync with a server (JSON config `{url, store, token,
    /// headers?, pushBatch?, pullLimit?, longPollSeconds?}`; a refused token waits for
    /// [`WasmStore::set_sync_auth`]). `on_status(statusJson)` hears every
    /// status change, `on_rejected(rejectionJson)` every refused event. Resolves when
    /// [`WasmStore::stop_sync`] ends the loop. The wrapper holds a Web Lock meanwhile, so
    /// one tab per store syncs.
    #[wasm_bindgen(js_name = startSync)]
    pub fn start_sync(
        &self,
        config_json: &str,
        on_status: Function,
        on_rejected: Function,
    ) -> std::result::Result<Promise, JsValue> {
        let client = js_result(self.sync_client(config_json))?;
        client.on_status(move |status| {
            if let Ok(json) = to_json(&SyncStatusMessage::from(status)) {
                let _ = on_status.call1(&JsValue::NULL, &JsValue::from_str(&json));
            }
        });
        client.on_rejected(move |rejection: &Rejection| {
            if let Ok(json) = to_json(&RejectionMessage::from(rejection)) {
                let _ = on_rejected.call1(&JsValue::NULL, &JsValue::from_str(&json));
            }
        });
        let engine = self.engine.clone();
        Ok(promise(async move {
            client
                .run(&engine, &TimeoutTimer, js_sys::Math::random)
                .await;
            Ok(JsValue::UNDEFINED)
        }))
    }

    fn sync_client(&self, config_json: &str) -> Result<Rc<SyncClient<FetchTransport>>> {
        if !self.engine.is_synced() {
            return Err(Error::InvalidArgument(
                "open the store with `sync` to sync it".into(),
            ));
        }
        let config = json::parse(config_json, SyncConfig::read)
            .map_err(|e| Error::InvalidArgument(format!("sync options: {e}")))?;
        if config.url.trim().is_empty() || config.store.trim().is_empty() {
            return Err(Error::InvalidArgument(
                "sync needs a `url` and a `store`".into(),
            ));
        }
        let defaults = SyncOptions::default();
        let options = SyncOptions {
            push_batch: config.push_batch.unwrap_or(defaults.push_batch).max(1),
            pull_limit: config.pull_limit.unwrap_or(defaults.pull_limit).max(1),
            long_poll_seconds: config
                .long_poll_seconds
                .unwrap_or(defaults.long_poll_seconds),
            ..defaults
        };
        let credentials = SyncAuth {
            token: config.token,
            headers: config.headers,
        }
        .credentials();
        let client = Rc::new(SyncClient::new(
            FetchTransport::new(&config.url, &config.store, credentials),
            options,
        ));
        if let Some(old) = self.sync.borrow_mut().replace(client.clone()) {
            old.stop();
        }
        Ok(client)
    }

    /// Pushes the outbox and pulls everything new, now. Resolves to a `SyncReportReply`
    /// `{"pushed","pulled","rejected","restarts"}`; fails with the sync error's code
    /// (`OFFLINE`, `UNAUTHORIZED`, ...). Needs [`WasmStore::start_sync`] first.
    #[wasm_bindgen(js_name = syncNow)]
    pub fn sync_now(&self) -> Promise {
        let engine = self.engine.clone();
        let client = self.sync.borrow().clone();
        promise(async move {
            let Some(client) = client else {
                return Err(to_js_error(&Error::InvalidArgument(
                    "sync is not started in this tab".into(),
                )));
            };
            match client.sync(&engine).await {
                Ok(report) => js_result(to_json(&SyncReportReply {
                    pushed: report.pushed,
                    pulled: report.pulled,
                    rejected: report.rejected.len(),
                    restarts: report.restarts,
                }))
                .map(|s| JsValue::from_str(&s)),
                Err(e) => Err(coded_js_error(e.code(), &e.to_string()).into()),
            }
        })
    }

    /// The current sync status as JSON (`CoreSyncStatus`: `{"online","syncing","pending",
    /// "lastPulled","lastError","lastErrorCode"}`), or `undefined` when sync is not started
    /// in this tab.
    #[wasm_bindgen(js_name = syncStatus)]
    pub fn sync_status(&self) -> Option<String> {
        let client = self.sync.borrow().clone()?;
        to_json(&SyncStatusMessage::from(&client.status())).ok()
    }

    /// Sends the next requests with other credentials (JSON `WasmSyncAuth` `{token,
    /// headers?}`: a refreshed token) and retries at once if a refused token stopped sync.
    #[wasm_bindgen(js_name = setSyncAuth)]
    pub fn set_sync_auth(&self, auth_json: &str) -> std::result::Result<(), JsValue> {
        let auth = js_result(
            json::parse(auth_json, SyncAuth::read)
                .map_err(|e| Error::InvalidArgument(format!("sync credentials: {e}"))),
        )?;
        if let Some(client) = self.sync.borrow().as_ref() {
            client.transport().set_credentials(auth.credentials());
            client.credentials_changed();
        }
        Ok(())
    }

    /// `navigator.onLine` changed.
    #[wasm_bindgen(js_name = setOnline)]
    pub fn set_online(&self, online: bool) {
        if let Some(client) = self.sync.borrow().as_ref() {
            client.set_online(online);
        }
    }

    /// Something to push: sync soon instead of waiting for the long poll.
    #[wasm_bindgen(js_name = wakeSync)]
    pub fn wake_sync(&self) {
        if let Some(client) = self.sync.borrow().as_ref() {
            client.wake();
        }
    }

    /// Ends the sync loop after its current step.
    #[wasm_bindgen(js_name = stopSync)]
    pub fn stop_sync(&self) {
        if let Some(client) = self.sync.borrow_mut().take() {
            client.stop();
        }
    }

    /// The events matching a JSON query `{after?, to?, limit?, stream?, fromVersion?,
    /// backwards?, type?, correlationId?}` (`ReadQuery`), as a JSON array.
    pub fn read(&self, query_json: &str) -> std::result::Result<String, JsValue> {
        js_result(ReadQuery::parse(query_json).and_then(|q| self.engine.read_json(&q)))
    }

    /// The version of `stream` in this replica (confirmed and pending events; 0 when it
    /// has none), from the stream index: no event is read. Needs the complete log.
    #[wasm_bindgen(js_name = streamVersion)]
    pub fn stream_version(&self, stream: &str) -> std::result::Result<f64, JsValue> {
        js_result(self.engine.try_stream_version(stream)).map(|v| v as f64)
    }

    /// Events `after + 1 ..= to` as a JSON array.
    pub fn range(&self, after: f64, to: f64) -> std::result::Result<String, JsValue> {
        js_result((|| {
            let after = whole_number("after", after)?;
            let to = whole_number("to", to)?;
            self.engine.range_json(after, to)
        })())
    }

    /// The positions of these event ids in the replica's log (pending ones at their
    /// provisional positions), 0 for an id it does not hold or that is not an id. One
    /// crossing for a what-if's whole set of skipped events.
    #[wasm_bindgen(js_name = positionsOf)]
    pub fn positions_of(&self, ids: Vec<String>) -> std::result::Result<Vec<f64>, JsValue> {
        let parsed: Vec<Option<crate::event::EventId>> = ids
            .iter()
            .map(|id| crate::event::EventId::parse(id).ok())
            .collect();
        let known: Vec<crate::event::EventId> = parsed.iter().flatten().copied().collect();
        let mut positions = js_result(self.engine.positions_of(&known))?.into_iter();
        Ok(parsed
            .iter()
            .map(|id| match id {
                Some(_) => positions.next().flatten().map_or(0.0, |p| p as f64),
                None => 0.0,
            })
            .collect())
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
        // The state was folded from the log as it is now: a reset after this call (a new
        // server epoch) makes the write fail rather than store a snapshot of a gone log.
        let generation = engine.log_generation();
        // Likewise an erasure after it (the state folded data that is gone).
        let erasures = engine.erasures();
        promise(async move {
            let out = async {
                let version = u32::try_from(whole_number("version", version)?).map_err(|_| {
                    Error::InvalidArgument(format!(
                        "`version` {} is too large",
                        number_text(version)
                    ))
                })?;
                let position = whole_number("position", position)?;
                if name.is_empty() {
                    return Err(Error::InvalidArgument(
                        "a snapshot needs a non-empty name".into(),
                    ));
                }
                json::validate(&state_json).map_err(|e| {
                    Error::InvalidArgument(format!("snapshot state is not JSON: {e}"))
                })?;
                engine
                    .put_snapshot_from(
                        &SnapshotRecord {
                            name,
                            version,
                            position,
                            state: state_json,
                        },
                        generation,
                        erasures,
                    )
                    .await
            }
            .await;
            js_result(out).map(|()| JsValue::UNDEFINED)
        })
    }

    /// Resolves to a `SnapshotReply` `{"version","position","state":<json>}`, or
    /// `undefined` when none is stored. Whether to trust it: `snapshotTrusted`.
    pub fn snapshot(&self, name: String) -> Promise {
        let engine = self.engine.clone();
        promise(async move {
            let out = async {
                let Some(record) = engine.snapshot(&name).await? else {
                    return Ok(None);
                };
                json::validate(&record.state)
                    .map_err(|e| Error::Corrupt(format!("snapshot `{name}` is not JSON: {e}")))?;
                to_json(&SnapshotReply {
                    version: record.version,
                    position: record.position,
                    state: JsonFragment::trusted(&record.state),
                })
                .map(Some)
            }
            .await;
            js_result(out).map(|s| s.map_or(JsValue::UNDEFINED, |s| JsValue::from_str(&s)))
        })
    }

    #[wasm_bindgen(js_name = deleteSnapshot)]
    pub fn delete_snapshot(&self, name: String) -> Promise {
        let engine = self.engine.clone();
        promise(async move {
            js_result(engine.delete_snapshot(&name).await).map(|()| JsValue::UNDEFINED)
        })
    }

    /// Merges small segments. Resolves to a `CompactionReply`
    /// `{"segmentsBefore","segmentsAfter","events"}`.
    pub fn compact(&self) -> Promise {
        let engine = self.engine.clone();
        promise(async move {
            let out = async {
                let r = engine.compact().await?;
                to_json(&CompactionReply {
                    segments_before: r.segments_before,
                    segments_after: r.segments_after,
                    events: r.events,
                })
            }
            .await;
            js_result(out).map(|s| JsValue::from_str(&s))
        })
    }

    /// What command `commandId` wrote to `stream` before, from the log's stream index
    /// (confirmed and pending events): a `CommandResultReply` `{"events":[...],"version"}`,
    /// or `undefined` when the stream holds no event of that command, so `execute` must
    /// decide. Needs the complete log (`isComplete`), like every read by stream.
    #[wasm_bindgen(js_name = commandResult)]
    pub fn command_result(
        &self,
        stream: &str,
        command_id: &str,
    ) -> std::result::Result<Option<String>, JsValue> {
        js_result((|| {
            let Some((positions, version)) =
                crate::command_plan::command_positions(&self.engine, stream, command_id)?
            else {
                return Ok(None);
            };
            let events = events_at(&self.engine, &positions)?;
            to_json(&CommandResultReply {
                events: JsonFragment::trusted(&events),
                version,
            })
            .map(Some)
        })())
    }

    /// Closes the store once writes in flight are done; later calls fail with `CLOSED`.
    pub fn close(&self) -> Promise {
        let engine = self.engine.clone();
        promise(async move {
            engine.close().await;
            Ok(JsValue::UNDEFINED)
        })
    }
}

async fn open_store(
    name: &str,
    storage: &str,
    options_json: &str,
    writer: Option<storage::JsWriterLock>,
) -> Result<WasmStore> {
    if name.trim().is_empty() {
        return Err(Error::InvalidArgument(
            "a store needs a non-empty `name`".into(),
        ));
    }
    let options = OpenOptions::parse(options_json)?;
    let backend = AnyStorage::choose(
        name,
        storage,
        options.shared_memory.unwrap_or(false),
        writer,
    )?;
    let engine_options = options.engine_options()?;
    let open = async {
        if options.lazy.unwrap_or(false) {
            Engine::open_lazy(backend, engine_options).await
        } else {
            Engine::open(backend, engine_options).await
        }
    };
    // The warm-up runs once the open has asked for the database, while the browser opens
    // it; a store opens whether or not it ran through.
    let (engine, _) = futures::future::join(open, warm_up()).await;
    let engine = engine?;
    if let (Some(server), Some(store)) = (&options.sync_server, &options.sync_store) {
        let on_mismatch = if options.reset_on_mismatch.unwrap_or(false) {
            OnMismatch::Reset
        } else {
            OnMismatch::Fail
        };
        if let Err(e) = engine
            .bind_sync_target(SyncTarget::new(server, store), on_mismatch)
            .await
        {
            // Let go of the database: the app may delete it next.
            engine.close().await;
            return Err(e);
        }
    }
    let changes = Rc::new(Cell::new(0u64));
    let counter = changes.clone();
    // Registered first, so the count is current when the app's listener hears a change.
    engine.subscribe(move |_| counter.set(counter.get() + 1));
    Ok(WasmStore {
        engine: Rc::new(engine),
        sync: RefCell::new(None),
        changes,
        own_appends: OwnAppends::default(),
        input: RefCell::default(),
    })
}

/// Runs the append and load paths once on a throwaway in-memory log. The browser compiles
/// a wasm function when it is first called; without this, an app's first append and a
/// store's replay pay for compiling their paths (10-30 ms in Chromium 156) rather than the
/// open, which mostly waits for IndexedDB. Fails if a path did not run through.
pub async fn warm_up() -> Result<()> {
    const BATCH: &str = r#"[{"id":"00000000-0000-4000-8000-000000000001","stream":"warm-up",
        "type":"WarmedUp","data":{"n":1,"x":1.5,"s":"text","b":true,"a":[null,{}]},
        "meta":{"correlationId":"c"},"expectedVersion":"no_stream"}]"#;
    let storage = MemoryStorage::new();
    let engine = Engine::open(
        AnyStorage::Memory(storage.another_handle()),
        EngineOptions::default(),
    )
    .await?;
    let seen = Rc::new(Cell::new(None));
    let heard = seen.clone();
    let listener = engine.subscribe(move |change| heard.set(Some(change)));
    // What an app's first append runs: the append, its change message (as stamps, and as
    // the events other changes carry) and its reply.
    let reply = append_json(&engine, &Cell::new(0), &OwnAppends::default(), BATCH, 1).await;
    let messages = seen.take().map(|change| {
        change_json(&engine, change, 1, Some((1, 1)))
            .and_then(|_| change_json(&engine, change, 1, None))
    });
    engine.unsubscribe(listener);
    engine.close().await;
    match (reply, messages) {
        (Ok(_), Some(Ok(_))) => {}
        (Err(e), _) | (_, Some(Err(e))) => return Err(e),
        (Ok(_), None) => return Err(Error::Storage("the warm-up append changed nothing".into())),
    }
    // What a store's open and replay run: loading the log and reading it as JSON.
    let reopened = Engine::open(AnyStorage::Memory(storage), EngineOptions::default()).await?;
    let read = reopened.range_json(0, reopened.head());
    reopened.close().await;
    match read {
        Ok(json) if json.len() > 2 => Ok(()),
        Ok(_) => Err(Error::Storage("the warm-up log read back empty".into())),
        Err(e) => Err(e),
    }
}

async fn append_json(
    engine: &Engine<AnyStorage>,
    changes: &Cell<u64>,
    own_appends: &OwnAppends,
    batch_json: &str,
    tag: u64,
) -> Result<String> {
    let batch = NewEvent::parse_batch(batch_json)?;
    append_batch(engine, changes, own_appends, batch, tag).await
}

/// Appends `batch` (tagged unless `tag` is 0) and writes the reply as `AppendReply` JSON.
async fn append_batch(
    engine: &Engine<AnyStorage>,
    changes: &Cell<u64>,
    own_appends: &OwnAppends,
    batch: Vec<NewEvent>,
    tag: u64,
) -> Result<String> {
    let outcome = if tag == 0 {
        engine.append(batch).await?
    } else {
        /// Takes the tag out of the appends in flight however the append ends.
        struct InFlight<'a>(&'a OwnAppends, u64);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.borrow_mut().retain(|(tag, _)| *tag != self.1);
            }
        }
        own_appends.borrow_mut().push((tag, batch.len()));
        let _in_flight = InFlight(own_appends, tag);
        engine.append_tagged(batch, tag).await?
    };
    // The engine notified its listeners just before returning: no other change came since.
    let seq = (!outcome.change.is_empty()).then(|| changes.get());
    // The stored events of a retry (a batch is wholly a retry or wholly new), each once.
    let mut seen = HashSet::new();
    let known: Vec<u64> = outcome
        .results
        .iter()
        .filter_map(|result| match *result {
            AppendResult::Duplicate(position) => Some(position),
            AppendResult::Appended(_) => None,
        })
        .filter(|position| seen.insert(*position))
        .collect();
    let duplicates = events_at(engine, &known)?;
    to_json(&AppendReply {
        results: outcome.results.iter().map(|r| r.position()).collect(),
        duplicates: JsonFragment::trusted(&duplicates),
        stream_versions: outcome.stream_versions.clone(),
        seq,
    })
}

/// The events at `positions`, in that order, as one JSON array (payloads copied verbatim).
fn events_at(engine: &Engine<AnyStorage>, positions: &[u64]) -> Result<String> {
    let mut out = String::from("[");
    for &position in positions {
        let one = engine.range_json(position.saturating_sub(1), position)?;
        // `[{...}]`: keep the object only.
        let inner = one
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or("");
        if !inner.is_empty() {
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(inner);
        }
    }
    out.push(']');
    Ok(out)
}

fn change_json(
    engine: &Engine<AnyStorage>,
    change: Change,
    seq: u64,
    own: Option<(u64, usize)>,
) -> Result<String> {
    if let Some((tag, len)) = own {
        if let Some(json) = own_change_json(engine, change, seq, tag, len)? {
            return Ok(json);
        }
    }
    let confirmed = engine.range_json(change.previous_confirmed, change.confirmed)?;
    let pending = engine.pending_json(change.pending_from)?;
    to_json(&ChangeMessage {
        seq,
        reset: change.log_reset,
        rebased: change.rebased,
        previous_head: change.previous_head(),
        head: change.head(),
        confirmed: change.confirmed,
        erased_from: change.erased_from,
        confirmed_events: JsonFragment::trusted(&confirmed),
        pending_events: JsonFragment::trusted(&pending),
        own: None,
    })
}

/// The change of a tagged append as stamps ([`OwnAppend`]), when its new events are exactly
/// the batch's `len` events, all confirmed or all pending, with one time and origin and
/// none erased; `None` otherwise (the change took in other writers' events too, say).
fn own_change_json(
    engine: &Engine<AnyStorage>,
    change: Change,
    seq: u64,
    tag: u64,
    len: usize,
) -> Result<Option<String>> {
    if change.log_reset || change.rebased || change.erased_from != 0 {
        return Ok(None);
    }
    let confirmed = change.confirmed - change.previous_confirmed;
    let pending = change.pending.saturating_sub(change.pending_from) as u64;
    if confirmed.min(pending) != 0 || confirmed + pending != len as u64 {
        return Ok(None);
    }
    let mut ids = Vec::with_capacity(2 + 39 * len);
    let mut versions = Vec::with_capacity(len);
    let mut stamp: Option<(u64, Option<String>)> = None;
    let mut uniform = true;
    let mut take = |e: crate::codec::EventRef<'_>| {
        match &stamp {
            None => stamp = Some((e.time, e.origin.map(str::to_owned))),
            Some((time, origin)) => {
                uniform &= *time == e.time && origin.as_deref() == e.origin;
            }
        }
        uniform &= !e.erased;
        ids.push(if versions.is_empty() { b'[' } else { b',' });
        ids.push(b'"');
        e.id.write_hyphenated(&mut ids);
        ids.push(b'"');
        versions.push(e.version);
    };
    if confirmed > 0 {
        engine.fold_range(change.previous_confirmed, change.confirmed, &mut take)?;
    } else {
        let after = change.previous_head();
        engine.fold_pending(|e| {
            if e.position > after {
                take(e)
            }
        })?;
    }
    ids.push(b']');
    let Some((time, origin)) = stamp.filter(|_| uniform && versions.len() == len) else {
        return Ok(None);
    };
    let ids = String::from_utf8(ids).map_err(|e| Error::Corrupt(e.to_string()))?;
    to_json(&ChangeMessage {
        seq,
        reset: false,
        rebased: false,
        previous_head: change.previous_head(),
        head: change.head(),
        confirmed: change.confirmed,
        erased_from: 0,
        confirmed_events: JsonFragment::trusted("[]"),
        pending_events: JsonFragment::trusted("[]"),
        own: Some(OwnAppend {
            tag,
            ids: JsonFragment::trusted(&ids),
            versions,
            time,
            origin: origin.as_deref(),
        }),
    })
    .map(Some)
}
