//! The IndexedDB backend (wasm32): one database per store, with the object stores
//! `segments` (key: first position; value: the encoded segment as a `Uint8Array`),
//! `snapshots` (key: projection name; value: `{version, position, state}`), `meta`
//! (`format`, the counters of [`Known`] and string settings) and `pending` (key: sequence
//! number; value: the encoded batch of a synced store's unconfirmed events).
//!
//! Every operation is one transaction. Inside a transaction nothing is awaited but
//! IndexedDB requests: the browser commits a transaction as soon as control returns to the
//! event loop with no request pending, so an await on anything else would let it commit
//! half-done. Request futures are woken from the request's `success` event and polled in the
//! microtask that follows it, while the transaction is still active.
//!
//! Semantics match [`super::memory::MemoryStorage`] exactly; the engine's tests run there.
//!
//! The head and the outbox's last sequence number are derived (format 4): a handle holding
//! the store's [`WriterLock`] knows nobody else writes, so an append of its own is one `put`
//! of the segment (or of the outbox record) without reading or rewriting the counters,
//! which IndexedDB charges about a fifth of a bare transaction's time for each request. The
//! stored counters are therefore a floor: the head is the larger of theirs and the last
//! segment's end, the outbox's last sequence number the larger of theirs and the last
//! outbox key. Every transaction that writes the counters writes the true ones, and so does
//! a compaction that merges segments past them (a merged segment's end is never read).

use std::cell::{Cell, OnceCell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use js_sys::{Array, Object, Reflect, Uint8Array};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{
    DomException, IdbCursorDirection, IdbCursorWithValue, IdbDatabase, IdbFactory, IdbKeyRange,
    IdbObjectStore, IdbOpenDbRequest, IdbRequest, IdbTransaction, IdbTransactionMode,
    IdbVersionChangeEvent,
};

use super::{
    check_meta_key, compaction_runs, counters_after, segment_tail, Commit, CompactionReport, Fresh,
    Known, PendingRecord, Prepare, Scope, Segment, SnapshotRecord, Storage, WriterLock,
    FORMAT_VERSION, META_RETAINED,
};
use crate::codec;
use crate::erasure;
use crate::error::{Error, Result};
use crate::event::MAX_SAFE_INTEGER;

/// The IndexedDB schema version (object stores). A change of schema is always paired with a
/// change of [`FORMAT_VERSION`], so a database with a newer schema holds a newer format.
/// 2: format 4, whose derived head builds of format 3 would misread. Opening at it makes
/// the browser close their connections (`versionchange`) and refuse their later opens, so
/// that no handle of an older build writes beside a lock holder writing alone.
const SCHEMA_VERSION: u32 = 2;

const SEGMENTS: &str = "segments";
const SNAPSHOTS: &str = "snapshots";
const META: &str = "meta";
const PENDING: &str = "pending";
const STORES: [&str; 4] = [SEGMENTS, SNAPSHOTS, META, PENDING];

const FORMAT_KEY: &str = "format";
/// The counters of [`Known`], each a number in `meta`, in format 1 (read when moving to 2).
const COUNTER_KEYS: [&str; 4] = ["head", "pendingSeq", "pendingGeneration", "logGeneration"];
/// The four counters together in one array `[head, pendingSeq, pendingGeneration,
/// logGeneration]`: a transaction reads them with one request and writes them with one.
/// Format-1 stores also kept them in four keys, or only there (read when moving to format 2).
const COUNTERS_KEY: &str = "counters";

/// Where an injected failure aborts a transaction (tests of atomicity). A step is reached
/// only when the transaction issued a request there: the failure then waits for that
/// request to succeed and aborts the transaction, as a crash or a failed write would.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailStep {
    /// `transact`: after the log (and snapshots) were cleared for a reset.
    AfterReset,
    /// `transact`: after the segment `put` succeeded, before the outbox and counters.
    AfterSegmentPut,
    /// `transact`: after the snapshot `put`.
    AfterSnapshotPut,
    /// `transact`: after the outbox records were written, before the counters.
    AfterPendingPut,
    /// `transact`: after outbox records were deleted.
    AfterPendingDelete,
    /// `transact`: after the settings (`put_meta` of the commit) were written.
    AfterMetaPut,
    /// `transact`: after everything, counters included, was written, before commit.
    AfterHeadPut,
    /// `transact` with retention: after the dropped segments were deleted, before the
    /// kept tail of the segment the cut goes through is written.
    AfterDrop,
    /// `compact`: after the merged segments were `put`, before the old ones are deleted.
    CompactAfterPut,
    /// `compact`: after the merged-away segments were deleted.
    CompactAfterDelete,
    /// `put_snapshot` (outside a log transaction): after the `put`.
    SnapshotPut,
    /// `delete_snapshot`: after the `delete`.
    SnapshotDelete,
    /// `put_meta`: after the `put`.
    MetaPut,
    /// `open` of a new or format-1 store: after the counters were written (in one record).
    FormatCountersPut,
    /// `open` of a new or format-1 store: after the format was written.
    FormatPut,
    /// Any readwrite transaction: every request succeeded, then the transaction aborts
    /// instead of committing (as one whose commit fails, for example on quota).
    AtCommit,
}

/// The failure to inject: at the `nth` (0-based) time `step` is reached.
#[derive(Debug, Clone, Copy)]
struct Injection {
    step: FailStep,
    nth: usize,
}

type LostListener = Rc<dyn Fn(&str)>;

/// Marks the store closed and, unless it already was, tells the listener why.
fn lose(closed: &Cell<bool>, on_lost: &RefCell<Option<LostListener>>, reason: &str) {
    if closed.replace(true) {
        return;
    }
    // Cloned out first: the listener may call back into the store.
    let listener = on_lost.borrow().clone();
    if let Some(listener) = listener {
        listener(reason);
    }
}

/// An open connection and the handlers that must live as long as it does.
struct Connection {
    db: IdbDatabase,
    _on_versionchange: Closure<dyn FnMut(web_sys::Event)>,
    _on_close: Closure<dyn FnMut(web_sys::Event)>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Detach the handlers before their closures are freed, then release the database
        // so that other tabs' upgrades and deletions are not blocked by us.
        self.db.set_onversionchange(None);
        self.db.set_onclose(None);
        self.db.close();
    }
}

/// A store kept in an IndexedDB database (see the module documentation for the layout).
pub struct IndexedDbStorage {
    name: String,
    connection: RefCell<Option<Connection>>,
    /// Set by `close()`, by another connection's upgrade or deletion request
    /// (`versionchange`), or by the browser closing the connection (`close`).
    closed: Rc<Cell<bool>>,
    fail: Cell<Option<Injection>>,
    /// Told why, when the connection is lost without `close()`: another connection
    /// deleted the database (`"deleted"`) or upgraded it (`"upgraded"`), or the browser
    /// closed it (`"lost"`, for example when site data was cleared).
    on_lost: Rc<RefCell<Option<LostListener>>>,
    /// The steps reached, in order, while recording (tests of atomicity).
    trace: RefCell<Option<Vec<FailStep>>>,
    /// Object store names of the log's transactions, made once (a JS array each).
    log_scope: Array,
    reset_scope: Array,
    /// The store's writer lock, when the platform has one (see [`WriterLock`]).
    writer: RefCell<Option<Rc<dyn WriterLock>>>,
    /// The counters as this handle last wrote or read them inside a write transaction,
    /// under which lease: while the lease holds, nobody else wrote, so they are the
    /// store's, and a write whose caller knows them need not read first.
    leased: Cell<Option<(u64, Known)>>,
}

impl std::fmt::Debug for IndexedDbStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexedDbStorage")
            .field("name", &self.name)
            .field("open", &self.connection.borrow().is_some())
            .field("closed", &self.closed.get())
            .finish()
    }
}

impl IndexedDbStorage {
    /// A store in the IndexedDB database `database_name`. Nothing is opened until
    /// [`Storage::open`].
    pub fn new(database_name: &str) -> Self {
        IndexedDbStorage {
            name: database_name.to_owned(),
            connection: RefCell::new(None),
            closed: Rc::new(Cell::new(false)),
            fail: Cell::new(None),
            on_lost: Rc::default(),
            trace: RefCell::new(None),
            log_scope: names(&[SEGMENTS, META, PENDING]),
            reset_scope: names(&STORES),
            writer: RefCell::new(None),
            leased: Cell::new(None),
        }
    }

    /// Makes every write of this handle take `lock` first, and lets the writes made under a
    /// lease it already checked skip reading the counters. Every handle of the store must
    /// be given the same lock (or none be given one).
    pub fn set_writer_lock(&self, lock: Rc<dyn WriterLock>) {
        *self.writer.borrow_mut() = Some(lock);
        self.leased.set(None);
    }

    /// The IndexedDB database name.
    pub fn database_name(&self) -> &str {
        &self.name
    }

    /// Calls `listener(reason)` once if the connection is lost other than by
    /// [`Storage::close`]: `"deleted"` (another tab deleted the database), `"upgraded"`
    /// (another tab opened it at a newer schema version) or `"lost"` (the browser closed
    /// it). The connection is already closed then, and every later call fails with
    /// [`Error::Closed`].
    pub fn on_connection_lost(&self, listener: impl Fn(&str) + 'static) {
        *self.on_lost.borrow_mut() = Some(Rc::new(listener));
    }

    /// Makes the next operation that reaches `step` abort its transaction there and fail
    /// with `Error::Storage("injected failure ...")`. One-shot; for tests of atomicity.
    #[doc(hidden)]
    pub fn inject_failure(&self, step: FailStep) {
        self.inject_failure_at(step, 0);
    }

    /// As [`IndexedDbStorage::inject_failure`], at the `nth` (0-based) time `step` is
    /// reached from now on.
    #[doc(hidden)]
    pub fn inject_failure_at(&self, step: FailStep, nth: usize) {
        self.fail.set(Some(Injection { step, nth }));
    }

    /// Whether an injected failure is still waiting for its step.
    #[doc(hidden)]
    pub fn failure_armed(&self) -> bool {
        self.fail.get().is_some()
    }

    /// Starts recording the steps reached (see [`FailStep`]), forgetting earlier ones.
    #[doc(hidden)]
    pub fn record_steps(&self) {
        *self.trace.borrow_mut() = Some(Vec::new());
    }

    /// The steps reached since [`IndexedDbStorage::record_steps`], in order; stops
    /// recording.
    #[doc(hidden)]
    pub fn recorded_steps(&self) -> Vec<FailStep> {
        self.trace.borrow_mut().take().unwrap_or_default()
    }

    /// Number of stored segments (for tests of compaction).
    #[doc(hidden)]
    pub async fn segment_count(&self) -> Result<usize> {
        let tx = self.transaction(&[SEGMENTS], IdbTransactionMode::Readonly)?;
        let count = Request::new(object_store(&tx, SEGMENTS)?.count().map_err(js_error)?).await?;
        Ok(count.as_f64().map_or(0, |n| n as usize))
    }

    fn db(&self) -> Result<IdbDatabase> {
        if self.closed.get() {
            return Err(Error::Closed);
        }
        match &*self.connection.borrow() {
            Some(c) => Ok(c.db.clone()),
            None => Err(Error::Storage(
                "the IndexedDB store is not open; call open() first".into(),
            )),
        }
    }

    fn transaction(&self, stores: &[&str], mode: IdbTransactionMode) -> Result<IdbTransaction> {
        match stores {
            [one] => self.db()?.transaction_with_str_and_mode(one, mode),
            _ => self
                .db()?
                .transaction_with_str_sequence_and_mode(&names(stores), mode),
        }
        .map_err(transaction_error)
    }

    /// A transaction over the log (segments, meta, pending), and the snapshots when asked.
    fn log_transaction(&self, scope: Scope, mode: IdbTransactionMode) -> Result<IdbTransaction> {
        let names = match scope {
            Scope::Log => &self.log_scope,
            Scope::LogAndSnapshots => &self.reset_scope,
        };
        self.db()?
            .transaction_with_str_sequence_and_mode(names, mode)
            .map_err(transaction_error)
    }

    /// Whether the injected failure is due at `step`, reached now; records the step.
    fn due(&self, step: FailStep) -> bool {
        if let Some(trace) = &mut *self.trace.borrow_mut() {
            trace.push(step);
        }
        match self.fail.get() {
            Some(Injection { step: s, nth: 0 }) if s == step => {
                self.fail.set(None);
                true
            }
            Some(Injection { step: s, nth }) if s == step => {
                self.fail.set(Some(Injection { step, nth: nth - 1 }));
                false
            }
            _ => false,
        }
    }

    /// Step `step` of a transaction, reached if `request` was issued there: when the
    /// injected failure is due, waits for the request to succeed, then returns the error
    /// that makes [`IndexedDbStorage::write`] abort the transaction. Costs a `Cell` and a
    /// `RefCell` read when nothing is injected or recorded.
    async fn fail_here(&self, step: FailStep, request: Option<IdbRequest>) -> Result<()> {
        let Some(request) = request else {
            return Ok(());
        };
        if self.fail.get().is_none() && self.trace.borrow().is_none() {
            return Ok(());
        }
        if !self.due(step) {
            return Ok(());
        }
        Request::new(request).await?;
        Err(Error::Storage(format!("injected failure at {step:?}")))
    }

    /// Runs `body`, which issues the requests of readwrite transaction `tx`, and returns
    /// its result once `tx` has committed. If `body` fails, for whatever reason, `tx` is
    /// aborted so that nothing it wrote is kept: every write is all or nothing.
    async fn write<T>(
        &self,
        tx: &IdbTransaction,
        body: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        // Listening from the start: an abort caused by a failed request is not missed.
        let done = Done::new(tx);
        let result = match body.await {
            Ok(value) => {
                let injected = (self.fail.get().is_some() || self.trace.borrow().is_some())
                    && self.due(FailStep::AtCommit);
                if injected {
                    Err(Error::Storage(format!(
                        "injected failure at {:?}",
                        FailStep::AtCommit
                    )))
                } else {
                    commit(tx);
                    return done.await.map(|()| value);
                }
            }
            Err(e) => Err(e),
        };
        // Throws if the transaction already aborted by itself; it is over either way.
        let _ = tx.abort();
        let _ = done.await;
        result
    }

    /// [`Storage::transact`] without waiting for the counters: most transactions find that no
    /// other tab wrote since `known`, so `prepare` is called as if nothing changed and its
    /// commit written while the counters are read, which saves a round trip to the
    /// database inside the transaction (the requests run in order: the read sees the store
    /// before these writes). If the counters did change, the transaction is aborted (its
    /// writes with it) and `None` returned: the caller runs the transaction again, reading
    /// first. With unchanged counters, what `prepare` sees is exactly what reading first
    /// would have given it.
    async fn transact_assuming_unchanged(
        &self,
        known: Known,
        prepare: &mut Prepare<'_>,
    ) -> Result<Option<Known>> {
        let stale = Cell::new(false);
        let tx = self.log_transaction(Scope::Log, IdbTransactionMode::Readwrite)?;
        let written = self
            .write(&tx, async {
                let meta = object_store(&tx, META)?;
                let stored = Request::new(
                    meta.get(&JsValue::from_str(COUNTERS_KEY))
                        .map_err(js_error)?,
                );
                let unchanged = Fresh {
                    now: known,
                    ..Fresh::default()
                };
                let planned = prepare(&unchanged)
                    .and_then(|commit| Ok((counters_after(&commit, Scope::Log, known)?, commit)));
                let planned = match planned {
                    Ok((counters, commit)) if !commit.is_empty() => {
                        self.write_commit(&tx, &commit, Some(&counters)).await?;
                        Ok(counters)
                    }
                    Ok(_) => Ok(known), // nothing to write (every event a duplicate, say)
                    Err(e) => Err(e),
                };
                // An answer, written or refused, holds only if nobody else wrote meanwhile.
                if counters_from_js(&stored.await?)? != Some(known) {
                    stale.set(true);
                    return Err(Error::Storage("the store changed meanwhile".into()));
                }
                planned
            })
            .await;
        match written {
            Err(_) if stale.get() => Ok(None),
            other => other.map(Some),
        }
    }

    /// [`Storage::transact`] by the holder of the writer lock, under a lease whose counters
    /// the caller knows (`known`): nobody else wrote since, so `prepare` sees that nothing
    /// changed without a read, and an append alone (a segment, or one new outbox record) is
    /// written without the counters, which are derived (see the module documentation).
    async fn transact_alone(
        &self,
        known: Known,
        scope: Scope,
        prepare: &mut Prepare<'_>,
    ) -> Result<Known> {
        // Nothing to read, so the commit is decided before the transaction starts, which
        // then spans only the object stores it writes when it is an append alone.
        let unchanged = Fresh {
            now: known,
            ..Fresh::default()
        };
        let commit = prepare(&unchanged)?;
        if commit.is_empty() {
            return Ok(known);
        }
        let counters = counters_after(&commit, scope, known)?;
        let alone = appends_only(&commit, &known);
        let tx = match (alone, &commit.segment) {
            (true, Some(_)) => self.transaction(&[SEGMENTS], IdbTransactionMode::Readwrite)?,
            (true, None) => self.transaction(&[PENDING], IdbTransactionMode::Readwrite)?,
            (false, _) => self.log_transaction(scope, IdbTransactionMode::Readwrite)?,
        };
        self.write(&tx, async {
            self.write_commit(&tx, &commit, (!alone).then_some(&counters))
                .await?;
            Ok(counters)
        })
        .await
    }

    /// [`Storage::transact`] reading what changed first, in the same transaction.
    async fn transact_read_first(
        &self,
        known: Known,
        scope: Scope,
        prepare: &mut Prepare<'_>,
    ) -> Result<Known> {
        let tx = self.log_transaction(scope, IdbTransactionMode::Readwrite)?;
        self.write(&tx, async {
            let fresh = read_fresh(&tx, known).await?;
            let commit = prepare(&fresh)?;
            if commit.is_empty() {
                return Ok(fresh.now); // every event was a duplicate, say: nothing to write
            }
            // Check everything before the first request: a refused commit writes nothing.
            let counters = counters_after(&commit, scope, fresh.now)?;
            self.write_commit(&tx, &commit, Some(&counters)).await?;
            Ok(counters)
        })
        .await
    }

    /// Issues the writes of `commit` (checked already: `counters` are what it leads to) in
    /// transaction `tx`, in the order [`Commit`] documents, with the failure steps of tests.
    /// `counters` is `None` for an append alone by the lock holder: they are derived.
    async fn write_commit(
        &self,
        tx: &IdbTransaction,
        commit: &Commit,
        counters: Option<&Known>,
    ) -> Result<()> {
        let stores = TxStores::new(tx);
        if commit.reset_log {
            stores.segments()?.clear().map_err(js_error)?;
            let cleared = object_store(tx, SNAPSHOTS)?.clear().map_err(js_error)?;
            self.fail_here(FailStep::AfterReset, Some(cleared)).await?;
        }
        if let Some(segment) = &commit.segment {
            let bytes = Uint8Array::from(segment.bytes.as_slice());
            let put = stores
                .segments()?
                .put_with_key(&bytes, &key(segment.first))
                .map_err(js_error)?;
            self.fail_here(FailStep::AfterSegmentPut, Some(put)).await?;
        }
        if !commit.erase.is_empty() && !commit.reset_log {
            erase_stored(stores.segments()?, &commit.erase).await?;
        }
        if let Some(from) = commit.drop_snapshots_from {
            drop_snapshots_from(&object_store(tx, SNAPSHOTS)?, from).await?;
        }
        if let Some(snapshot) = &commit.put_snapshot {
            let put = object_store(tx, SNAPSHOTS)?
                .put_with_key(
                    &snapshot_value(snapshot)?.into(),
                    &JsValue::from_str(&snapshot.name),
                )
                .map_err(js_error)?;
            self.fail_here(FailStep::AfterSnapshotPut, Some(put))
                .await?;
        }
        let mut last = None;
        for record in &commit.put_pending {
            let bytes = Uint8Array::from(record.bytes.as_slice());
            last = Some(
                stores
                    .pending()?
                    .put_with_key(&bytes, &key(record.seq))
                    .map_err(js_error)?,
            );
        }
        self.fail_here(FailStep::AfterPendingPut, last.take())
            .await?;
        for seq in &commit.delete_pending {
            last = Some(stores.pending()?.delete(&key(*seq)).map_err(js_error)?);
        }
        self.fail_here(FailStep::AfterPendingDelete, last.take())
            .await?;
        for (name, value) in &commit.put_meta {
            last = Some(
                stores
                    .meta()?
                    .put_with_key(&JsValue::from_str(value), &JsValue::from_str(name))
                    .map_err(js_error)?,
            );
        }
        self.fail_here(FailStep::AfterMetaPut, last.take()).await?;
        // No format to raise for a cut or an erasure (`Commit::raises_format`): the store
        // was moved to format 4 when it was opened.
        if let Some(through) = commit.drop_through {
            drop_through(stores.segments()?, through, |request| {
                self.fail_here(FailStep::AfterDrop, Some(request))
            })
            .await?;
        }
        match counters {
            Some(counters) => {
                let last = write_counters(stores.meta()?, counters)?;
                self.fail_here(FailStep::AfterHeadPut, Some(last)).await
            }
            None => Ok(()),
        }
    }

    /// One attempt at [`Storage::open`].
    async fn open_once(&self) -> Result<()> {
        self.connect().await?;
        let result = self.check_format().await;
        if matches!(result, Err(Error::FormatTooNew { .. })) {
            // This build cannot use the store; do not hold the database open either.
            self.connection.borrow_mut().take();
        }
        result
    }

    async fn connect(&self) -> Result<IdbDatabase> {
        if let Some(c) = &*self.connection.borrow() {
            return Ok(c.db.clone());
        }
        let factory = idb_factory()?;
        let db = open_database(&factory, &self.name).await?;
        // Whenever another connection asks to upgrade or delete the database, step aside:
        // keeping the connection open would leave that request blocked indefinitely.
        let on_versionchange = {
            let (closed, on_lost) = (self.closed.clone(), self.on_lost.clone());
            Closure::<dyn FnMut(web_sys::Event)>::new(move |event: web_sys::Event| {
                if let Some(db) = event
                    .target()
                    .and_then(|t| t.dyn_into::<IdbDatabase>().ok())
                {
                    db.close();
                }
                // A deletion asks for no new version.
                let deleted = event
                    .dyn_ref::<IdbVersionChangeEvent>()
                    .is_some_and(|e| e.new_version().is_none());
                lose(
                    &closed,
                    &on_lost,
                    if deleted { "deleted" } else { "upgraded" },
                );
            })
        };
        let on_close = {
            let (closed, on_lost) = (self.closed.clone(), self.on_lost.clone());
            Closure::<dyn FnMut(web_sys::Event)>::new(move |_| lose(&closed, &on_lost, "lost"))
        };
        db.set_onversionchange(Some(on_versionchange.as_ref().unchecked_ref()));
        db.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        *self.connection.borrow_mut() = Some(Connection {
            db: db.clone(),
            _on_versionchange: on_versionchange,
            _on_close: on_close,
        });
        Ok(db)
    }

    /// Checks the format, in one transaction: writes it (and zero counters) on a new store,
    /// and moves an older store to format 4 (a format-1 store's counters, which may be in
    /// four keys, into one record first).
    async fn check_format(&self) -> Result<()> {
        let tx = self.transaction(&[META], IdbTransactionMode::Readwrite)?;
        self.write(&tx, async {
            let meta = object_store(&tx, META)?;
            let format_key = JsValue::from_str(FORMAT_KEY);
            let format = Request::new(meta.get(&format_key).map_err(js_error)?);
            let counters = match format_from_js(&format.await?)? {
                // Written by a newer annals: the error aborts the transaction, which has
                // written nothing.
                Some(found) if found > FORMAT_VERSION => {
                    return Err(Error::FormatTooNew {
                        found,
                        supported: FORMAT_VERSION,
                    })
                }
                Some(FORMAT_VERSION) => return Ok(()),
                // Formats 2 and 3 keep the counters in one record already.
                Some(2 | 3) => None,
                Some(_) => Some(read_counters(&meta).await?),
                None => Some(Known::default()),
            };
            if let Some(counters) = counters {
                let put = write_counters(&meta, &counters)?;
                self.fail_here(FailStep::FormatCountersPut, Some(put))
                    .await?;
            }
            let put = meta
                .put_with_key(&JsValue::from(FORMAT_VERSION), &format_key)
                .map_err(js_error)?;
            self.fail_here(FailStep::FormatPut, Some(put)).await
        })
        .await
    }
}

/// How many times [`Storage::open`] tries when the browser aborts it because it is taking the
/// database away at that moment; the pauses between tries double from 50 ms (750 ms in all).
const OPEN_ATTEMPTS: u32 = 5;

/// An IndexedDB request or transaction aborted by the browser (`AbortError`).
fn is_abort(e: &Error) -> bool {
    matches!(e, Error::Storage(m) if m.starts_with("AbortError"))
}

/// Resolves after `ms` milliseconds (`setTimeout`, in windows and workers alike).
async fn sleep_ms(ms: u32) -> Result<()> {
    let set_timeout = Reflect::get(&js_sys::global(), &JsValue::from_str("setTimeout"))
        .map_err(js_error)?
        .dyn_into::<js_sys::Function>()
        .map_err(|_| Error::Storage("setTimeout is not available here".into()))?;
    let mut scheduled = Ok(JsValue::UNDEFINED);
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        scheduled = set_timeout.call2(&JsValue::NULL, &resolve, &JsValue::from(ms));
    });
    scheduled.map_err(js_error)?;
    wasm_bindgen_futures::JsFuture::from(promise)
        .await
        .map(drop)
        .map_err(js_error)
}

fn names(stores: &[&str]) -> Array {
    stores.iter().map(|s| JsValue::from_str(s)).collect()
}

fn transaction_error(e: JsValue) -> Error {
    match e.dyn_ref::<DomException>() {
        // The connection was closed under us (by the browser, or another tab's upgrade).
        Some(d) if d.name() == "InvalidStateError" => Error::Closed,
        _ => js_error(e),
    }
}

/// A write entered under the writer lock: leaves it when dropped.
struct EnteredWrite<'a>(&'a dyn WriterLock);

impl Drop for EnteredWrite<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// The object stores of a write transaction, each looked up when first written to: the lock
/// holder's append alone runs in a transaction over one of them.
struct TxStores<'a> {
    tx: &'a IdbTransaction,
    segments: OnceCell<IdbObjectStore>,
    pending: OnceCell<IdbObjectStore>,
    meta: OnceCell<IdbObjectStore>,
}

impl<'a> TxStores<'a> {
    fn new(tx: &'a IdbTransaction) -> Self {
        TxStores {
            tx,
            segments: OnceCell::new(),
            pending: OnceCell::new(),
            meta: OnceCell::new(),
        }
    }

    fn get<'s>(
        &self,
        cell: &'s OnceCell<IdbObjectStore>,
        name: &str,
    ) -> Result<&'s IdbObjectStore> {
        match cell.get() {
            Some(store) => Ok(store),
            None => {
                let store = object_store(self.tx, name)?;
                Ok(cell.get_or_init(|| store))
            }
        }
    }

    fn segments(&self) -> Result<&IdbObjectStore> {
        self.get(&self.segments, SEGMENTS)
    }

    fn pending(&self) -> Result<&IdbObjectStore> {
        self.get(&self.pending, PENDING)
    }

    fn meta(&self) -> Result<&IdbObjectStore> {
        self.get(&self.meta, META)
    }
}

/// Whether `commit` only adds to the log or the outbox (one segment, or one outbox record
/// after the last one `known`), so that the counters after it are derived from what it
/// writes and need not be written (see the module documentation).
fn appends_only(commit: &Commit, known: &Known) -> bool {
    let one_record = match commit.put_pending.as_slice() {
        [] => None,
        [record] => Some(record.seq > known.pending_seq),
        _ => Some(false),
    };
    let adds = match (&commit.segment, one_record) {
        (Some(_), None) => true,
        (None, Some(new)) => new,
        _ => false,
    };
    adds && !commit.reset_log
        && commit.put_snapshot.is_none()
        && commit.delete_pending.is_empty()
        && commit.put_meta.is_empty()
        && commit.erase.is_empty()
        && commit.drop_snapshots_from.is_none()
        && commit.drop_through.is_none()
}

/// The end (last position) of a stored segment.
fn segment_end(segment: &Segment) -> Result<u64> {
    let (first, count) = codec::header(&segment.bytes)?;
    Ok(first + u64::from(count) - 1)
}

/// The last key of `store` (one backwards key-cursor step); `None` when it is empty.
async fn last_key(store: &IdbObjectStore, what: &str) -> Result<Option<u64>> {
    let cursor = Request::new(
        store
            .open_key_cursor_with_range_and_direction(&JsValue::UNDEFINED, IdbCursorDirection::Prev)
            .map_err(js_error)?,
    )
    .await?;
    cursor
        .dyn_ref::<web_sys::IdbCursor>()
        .map(|cursor| position_from_js(&cursor.key().map_err(js_error)?, what))
        .transpose()
}

/// The head of the stored log, given the stored counters' `head`: theirs, or, when the last
/// segment starts after it (appended by the lock holder alone), that segment's end. A read
/// of that one segment only when needed.
async fn derived_head(segments: &IdbObjectStore, counted: u64) -> Result<u64> {
    match last_key(segments, "segment key").await? {
        Some(last) if last > counted => {
            let value = Request::new(segments.get(&key(last)).map_err(js_error)?).await?;
            segment_end(&segment_from_js(&value)?)
        }
        _ => Ok(counted),
    }
}

/// The outbox's last sequence number, given the stored counters': theirs, or the last
/// record's when the lock holder added records alone.
async fn derived_pending_seq(pending: &IdbObjectStore, counted: u64) -> Result<u64> {
    Ok(counted.max(last_key(pending, "outbox key").await?.unwrap_or(0)))
}

/// Reads the counters: the `counters` array (one request), or, in a store written before
/// it existed, the four keys (four requests issued together).
async fn read_counters(meta: &IdbObjectStore) -> Result<Known> {
    let together = Request::new(
        meta.get(&JsValue::from_str(COUNTERS_KEY))
            .map_err(js_error)?,
    )
    .await?;
    if let Some(counters) = counters_from_js(&together)? {
        return Ok(counters);
    }
    let mut requests = Vec::with_capacity(COUNTER_KEYS.len());
    for name in COUNTER_KEYS {
        requests.push(Request::new(
            meta.get(&JsValue::from_str(name)).map_err(js_error)?,
        ));
    }
    let mut values = [0u64; 4];
    for ((request, value), name) in requests
        .into_iter()
        .zip(values.iter_mut())
        .zip(COUNTER_KEYS)
    {
        *value = position_from_js(&request.await?, name)?;
    }
    let [head, pending_seq, pending_generation, log_generation] = values;
    Ok(Known {
        head,
        pending_seq,
        pending_generation,
        log_generation,
        dropped: 0,
    })
}

/// The `counters` record's value; `None` when there is none (a format-1 store).
fn counters_from_js(together: &JsValue) -> Result<Option<Known>> {
    if together.is_undefined() {
        return Ok(None);
    }
    let array = together
        .dyn_ref::<Array>()
        .filter(|a| a.length() == 4 || a.length() == 5)
        .ok_or_else(|| Error::Corrupt(format!("stored counters: {together:?}")))?;
    let mut values = [0u64; 4];
    for (i, (value, name)) in values.iter_mut().zip(COUNTER_KEYS).enumerate() {
        *value = position_from_js(&array.get(i as u32), name)?;
    }
    let [head, pending_seq, pending_generation, log_generation] = values;
    Ok(Some(Known {
        head,
        pending_seq,
        pending_generation,
        log_generation,
        // A fifth counter only once retention dropped events (a store never cut keeps
        // the four that older builds read).
        dropped: position_from_js(&array.get(4), "dropped")?,
    }))
}

/// Writes the counters, together in one record.
fn write_counters(meta: &IdbObjectStore, counters: &Known) -> Result<IdbRequest> {
    let together = Array::of4(
        &key(counters.head),
        &key(counters.pending_seq),
        &key(counters.pending_generation),
        &key(counters.log_generation),
    );
    if counters.dropped > 0 {
        together.push(&key(counters.dropped));
    }
    meta.put_with_key(&together, &JsValue::from_str(COUNTERS_KEY))
        .map_err(js_error)
}

/// What changed since `known`, read inside transaction `tx` (over segments, meta and
/// pending). Requests are issued before any is awaited where they do not depend on each
/// other.
async fn read_fresh(tx: &IdbTransaction, known: Known) -> Result<Fresh> {
    let segments = object_store(tx, SEGMENTS)?;
    let pending = object_store(tx, PENDING)?;
    let meta = object_store(tx, META)?;
    let stored = read_counters(&meta).await?;
    let log_reset = stored.log_generation != known.log_generation;
    // The stored log starts after what retention dropped.
    let after = if log_reset { 0 } else { known.head }.max(stored.dropped);
    let retained = if stored.dropped != 0 && (log_reset || stored.dropped != known.dropped) {
        Some(Request::new(
            meta.get(&JsValue::from_str(META_RETAINED))
                .map_err(js_error)?,
        ))
    } else {
        None
    };
    // Read whatever the counters say or not: the lock holder's appends do not move them.
    let segment_values = Request::new(
        segments
            .get_all_with_key(&lower_bound(after + 1)?)
            .map_err(js_error)?,
    );
    let pending_replaced = stored.pending_generation != known.pending_generation;
    let from = if pending_replaced {
        0
    } else {
        known.pending_seq
    };
    let range = lower_bound(from + 1)?;
    let pending_keys = Request::new(pending.get_all_keys_with_key(&range).map_err(js_error)?);
    let pending_values = Request::new(pending.get_all_with_key(&range).map_err(js_error)?);
    let found = segments_from_js(&segment_values.await?)?;
    // The head (see the module documentation): at least what the counters say and, in the
    // same log, what was known; the segments after that, when there are any, end at it.
    let mut now = stored;
    if !log_reset {
        now.head = now.head.max(known.head);
    }
    if let Some(last) = found.last() {
        now.head = now.head.max(segment_end(last)?);
    }
    let found = complete_segments(&segments, after, now.head, found).await?;
    let records = pending_from_js(&pending_keys.await?, &pending_values.await?)?;
    if !pending_replaced {
        now.pending_seq = now.pending_seq.max(known.pending_seq);
    }
    if let Some(last) = records.last() {
        now.pending_seq = now.pending_seq.max(last.seq);
    }
    let retained = match retained {
        Some(request) => request.await?.as_string(),
        None => None,
    };
    Ok(Fresh {
        log_reset,
        segments: found,
        pending_replaced,
        pending: records,
        now,
        retained,
    })
}

impl Storage for IndexedDbStorage {
    async fn open(&self) -> Result<()> {
        if self.closed.get() {
            return Err(Error::Closed);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.open_once().await {
                // The browser is clearing or deleting the database right now (site data
                // cleared, another tab's deleteDatabase): the open is aborted, or the new
                // connection closed under it. Start over on a fresh connection, shortly.
                Err(e) if attempt < OPEN_ATTEMPTS && (self.closed.get() || is_abort(&e)) => {
                    self.connection.borrow_mut().take();
                    self.closed.set(false);
                    sleep_ms(25 << attempt).await?;
                }
                result => return result,
            }
        }
    }

    async fn changes(&self, known: Known) -> Result<Fresh> {
        let tx = self.log_transaction(Scope::Log, IdbTransactionMode::Readonly)?;
        read_fresh(&tx, known).await
    }

    async fn outline(&self) -> Result<Fresh> {
        let tx = self.log_transaction(Scope::Log, IdbTransactionMode::Readonly)?;
        let store = object_store(&tx, PENDING)?;
        let keys = Request::new(store.get_all_keys().map_err(js_error)?);
        let values = Request::new(store.get_all().map_err(js_error)?);
        let mut now = read_counters(&object_store(&tx, META)?).await?;
        now.head = derived_head(&object_store(&tx, SEGMENTS)?, now.head).await?;
        let pending = pending_from_js(&keys.await?, &values.await?)?;
        if let Some(last) = pending.last() {
            now.pending_seq = now.pending_seq.max(last.seq);
        }
        Ok(Fresh {
            pending_replaced: true,
            pending,
            now,
            ..Fresh::default()
        })
    }

    async fn segments_after(&self, after: u64, limit: usize) -> Result<(Vec<Segment>, Known)> {
        let tx = self.log_transaction(Scope::Log, IdbTransactionMode::Readonly)?;
        let store = object_store(&tx, SEGMENTS)?;
        let range = lower_bound(after + 1)?;
        let values = Request::new(
            match u32::try_from(limit) {
                Ok(limit) => store.get_all_with_key_and_limit(&range, limit),
                Err(_) => store.get_all_with_key(&range),
            }
            .map_err(js_error)?,
        );
        let mut now = read_counters(&object_store(&tx, META)?).await?;
        now.head = derived_head(&store, now.head).await?;
        now.pending_seq =
            derived_pending_seq(&object_store(&tx, PENDING)?, now.pending_seq).await?;
        let found = segments_from_js(&values.await?)?;
        let found = complete_segments(&store, after, now.head, found).await?;
        Ok((found, now))
    }

    async fn transact(
        &self,
        known: Known,
        scope: Scope,
        prepare: &mut Prepare<'_>,
    ) -> Result<Known> {
        let writer = self.writer.borrow().clone();
        let Some(writer) = writer else {
            // No lock: nobody writes without reading the counters, so they are the whole
            // truth, and a first try may assume them unchanged (checked in the same
            // transaction).
            if scope == Scope::Log {
                if let Some(counters) = self.transact_assuming_unchanged(known, prepare).await? {
                    return Ok(counters);
                }
            }
            return self.transact_read_first(known, scope, prepare).await;
        };
        let lease = writer.enter().lease().await?;
        // Left when the write is over, or when its future is dropped before.
        let entered = EnteredWrite(&*writer);
        let written = if self.leased.get() == Some((lease, known)) {
            self.transact_alone(known, scope, prepare).await
        } else {
            // First write under this lease, or the caller knows other counters than those
            // this handle last saw: read what changed.
            self.transact_read_first(known, scope, prepare).await
        };
        drop(entered);
        match &written {
            Ok(counters) => self.leased.set(Some((lease, *counters))),
            // The transaction was aborted: what this handle saw under the lease still
            // holds only if it wrote without reading (it read nothing new).
            Err(_) if self.leased.get() == Some((lease, known)) => {}
            Err(_) => self.leased.set(None),
        }
        written
    }

    async fn compact(&self, target_bytes: usize) -> Result<CompactionReport> {
        let tx = self.transaction(&[SEGMENTS, META], IdbTransactionMode::Readwrite)?;
        self.write(&tx, async {
            let store = object_store(&tx, SEGMENTS)?;
            let meta = object_store(&tx, META)?;
            let values = Request::new(store.get_all().map_err(js_error)?);
            let stored = read_counters(&meta).await?;
            let all = segments_from_js(&values.await?)?;

            let mut events = 0u64;
            for segment in &all {
                events += u64::from(codec::header(&segment.bytes)?.1);
            }
            let sizes: Vec<usize> = all.iter().map(|s| s.bytes.len()).collect();
            let runs = compaction_runs(&sizes, target_bytes);

            let mut merged_away = 0;
            let mut last_put = None;
            let mut deletions = Vec::new();
            for run in runs.into_iter().filter(|r| r.len() > 1) {
                let parts = &all[run];
                let bytes: Vec<&[u8]> = parts.iter().map(|s| s.bytes.as_slice()).collect();
                let merged = Uint8Array::from(codec::merge(&bytes)?.as_slice());
                last_put = Some(
                    store
                        .put_with_key(&merged, &key(parts[0].first))
                        .map_err(js_error)?,
                );
                // The merged-away keys are the run's other segments; no key lies between.
                deletions.push((parts[1].first, parts[parts.len() - 1].first));
                merged_away += parts.len() - 1;
            }
            self.fail_here(FailStep::CompactAfterPut, last_put).await?;
            let mut last_delete = None;
            for (lo, hi) in deletions {
                let range = IdbKeyRange::bound(&key(lo), &key(hi)).map_err(js_error)?;
                last_delete = Some(store.delete(&range).map_err(js_error)?);
            }
            self.fail_here(FailStep::CompactAfterDelete, last_delete)
                .await?;
            // A merged segment's end is never read to derive the head (only the last
            // segment's, when it starts after the counted head): count what it took in.
            let head = match all.last() {
                Some(last) => segment_end(last)?,
                None => 0,
            };
            if merged_away > 0 && head > stored.head {
                write_counters(&meta, &Known { head, ..stored })?;
            }
            Ok(CompactionReport {
                segments_before: all.len(),
                segments_after: all.len() - merged_away,
                events,
            })
        })
        .await
    }

    async fn put_snapshot(&self, snapshot: &SnapshotRecord) -> Result<()> {
        let value = snapshot_value(snapshot)?;
        let tx = self.transaction(&[SNAPSHOTS], IdbTransactionMode::Readwrite)?;
        self.write(&tx, async {
            let put = object_store(&tx, SNAPSHOTS)?
                .put_with_key(&value, &JsValue::from_str(&snapshot.name))
                .map_err(js_error)?;
            self.fail_here(FailStep::SnapshotPut, Some(put)).await
        })
        .await
    }

    async fn snapshot(&self, name: &str) -> Result<Option<SnapshotRecord>> {
        let tx = self.transaction(&[SNAPSHOTS], IdbTransactionMode::Readonly)?;
        let store = object_store(&tx, SNAPSHOTS)?;
        let value = Request::new(store.get(&JsValue::from_str(name)).map_err(js_error)?).await?;
        if value.is_undefined() {
            return Ok(None);
        }
        let field = |f: &str| Reflect::get(&value, &JsValue::from_str(f)).map_err(js_error);
        let corrupt = || {
            Error::Corrupt(format!(
                "snapshot `{name}` is not {{version, position, state}}"
            ))
        };
        let version = field("version")?
            .as_f64()
            .filter(|v| v.fract() == 0.0 && *v >= 0.0 && *v <= f64::from(u32::MAX))
            .ok_or_else(corrupt)? as u32;
        let position = position_from_js(&field("position")?, "snapshot position")?;
        let state = field("state")?.as_string().ok_or_else(corrupt)?;
        Ok(Some(SnapshotRecord {
            name: name.to_owned(),
            version,
            position,
            state,
        }))
    }

    async fn delete_snapshot(&self, name: &str) -> Result<()> {
        let tx = self.transaction(&[SNAPSHOTS], IdbTransactionMode::Readwrite)?;
        self.write(&tx, async {
            let delete = object_store(&tx, SNAPSHOTS)?
                .delete(&JsValue::from_str(name))
                .map_err(js_error)?;
            self.fail_here(FailStep::SnapshotDelete, Some(delete)).await
        })
        .await
    }

    async fn meta(&self, key: &str) -> Result<Option<String>> {
        let tx = self.transaction(&[META], IdbTransactionMode::Readonly)?;
        let store = object_store(&tx, META)?;
        let value = Request::new(store.get(&JsValue::from_str(key)).map_err(js_error)?).await?;
        // The format and counters are numbers, not settings: like MemoryStorage, they read
        // as absent here.
        Ok(value.as_string())
    }

    async fn put_meta(&self, key: &str, value: &str) -> Result<()> {
        // The `meta` object store also holds the format and counters: never overwritten.
        check_meta_key(key)?;
        let tx = self.transaction(&[META], IdbTransactionMode::Readwrite)?;
        self.write(&tx, async {
            let put = object_store(&tx, META)?
                .put_with_key(&JsValue::from_str(value), &JsValue::from_str(key))
                .map_err(js_error)?;
            self.fail_here(FailStep::MetaPut, Some(put)).await
        })
        .await
    }

    fn close(&self) {
        self.closed.set(true);
        self.connection.borrow_mut().take();
    }
}

/// Rewrites the stored segments holding any of `positions` (ascending) with those events
/// erased ([`crate::erasure`]), in the transaction `store` belongs to: one backwards cursor
/// step finds the segment holding the first position left, whose rewrite takes every
/// position it holds.
async fn erase_stored(store: &IdbObjectStore, positions: &[u64]) -> Result<()> {
    let mut at = 0;
    while at < positions.len() {
        let range = IdbKeyRange::upper_bound(&key(positions[at])).map_err(js_error)?;
        let request = store
            .open_cursor_with_range_and_direction(&range, IdbCursorDirection::Prev)
            .map_err(js_error)?;
        let Ok(cursor) = Request::new(request)
            .await?
            .dyn_into::<IdbCursorWithValue>()
        else {
            at += 1; // not held (dropped by retention): nothing to erase
            continue;
        };
        let holder = segment_from_js(&cursor.value().map_err(js_error)?)?;
        let (first, count) = codec::header(&holder.bytes)?;
        let end = first + u64::from(count);
        let to = at + positions[at..].partition_point(|p| *p < end);
        if let Some(bytes) = erasure::at_positions(&holder.bytes, &positions[at..to])? {
            let bytes = Uint8Array::from(bytes.as_slice());
            let put = store.put_with_key(&bytes, &key(first)).map_err(js_error)?;
            Request::new(put).await?;
        }
        at = to.max(at + 1);
    }
    Ok(())
}

/// Deletes the snapshots taken at or after position `from` (they folded erased data), in
/// the transaction `store` belongs to.
async fn drop_snapshots_from(store: &IdbObjectStore, from: u64) -> Result<()> {
    let keys = Request::new(store.get_all_keys().map_err(js_error)?).await?;
    let values = Request::new(store.get_all().map_err(js_error)?).await?;
    let (keys, values) = (Array::from(&keys), Array::from(&values));
    for (name, value) in keys.iter().zip(values.iter()) {
        let position = Reflect::get(&value, &JsValue::from_str("position")).map_err(js_error)?;
        // A snapshot without a readable position is dropped too: it cannot be trusted.
        let keep = position.as_f64().is_some_and(|p| p < from as f64);
        if !keep {
            Request::new(store.delete(&name).map_err(js_error)?).await?;
        }
    }
    Ok(())
}

/// Completes a `getAll(lowerBound(after + 1))` result `found`: when the log holds events
/// after `after` but no segment starts at `after + 1`, compaction merged that position into
/// a segment that starts earlier; one backwards cursor step fetches it.
async fn complete_segments(
    store: &IdbObjectStore,
    after: u64,
    head: u64,
    mut found: Vec<Segment>,
) -> Result<Vec<Segment>> {
    if head <= after || found.first().is_some_and(|s| s.first == after + 1) {
        return Ok(found);
    }
    let range = IdbKeyRange::upper_bound(&key(after + 1)).map_err(js_error)?;
    let request = store
        .open_cursor_with_range_and_direction(&range, IdbCursorDirection::Prev)
        .map_err(js_error)?;
    let cursor = Request::new(request).await?;
    let holder = match cursor.dyn_into::<IdbCursorWithValue>() {
        Ok(cursor) => segment_from_js(&cursor.value().map_err(js_error)?)?,
        Err(_) => {
            return Err(Error::Corrupt(format!(
                "no segment holds position {} though the head is {head}",
                after + 1
            )))
        }
    };
    let (first, count) = codec::header(&holder.bytes)?;
    if first + u64::from(count) <= after + 1 {
        return Err(Error::Corrupt(format!(
            "no segment holds position {} though the head is {head}: the segment at {first} \
             ends before it",
            after + 1
        )));
    }
    found.insert(0, holder);
    Ok(found)
}

/// Retention's cut, inside a log transaction: deletes every segment up to position
/// `through` with one request over the key range, after reading the last of them (one
/// backwards cursor step); when that one holds later positions too, their tail is put
/// back as a segment starting at `through + 1`. `after_delete` is the failure step of tests.
async fn drop_through<F: Future<Output = Result<()>>>(
    store: &IdbObjectStore,
    through: u64,
    after_delete: impl FnOnce(IdbRequest) -> F,
) -> Result<()> {
    let range = IdbKeyRange::upper_bound(&key(through)).map_err(js_error)?;
    let request = store
        .open_cursor_with_range_and_direction(&range, IdbCursorDirection::Prev)
        .map_err(js_error)?;
    let cursor = Request::new(request).await?;
    let tail = match cursor.dyn_into::<IdbCursorWithValue>() {
        Ok(cursor) => segment_tail(
            &segment_from_js(&cursor.value().map_err(js_error)?)?.bytes,
            through,
        )?,
        Err(_) => None,
    };
    let delete = store.delete(&range).map_err(js_error)?;
    after_delete(delete).await?;
    if let Some(tail) = tail {
        let bytes = Uint8Array::from(tail.bytes.as_slice());
        store
            .put_with_key(&bytes, &key(tail.first))
            .map_err(js_error)?;
    }
    Ok(())
}

/// Pairs `getAllKeys` and `getAll` results over the same range (same order).
fn pending_from_js(keys: &JsValue, values: &JsValue) -> Result<Vec<PendingRecord>> {
    let keys: Array = keys
        .clone()
        .dyn_into()
        .map_err(|_| Error::Corrupt("pending keys are not an array".into()))?;
    let values: Array = values
        .clone()
        .dyn_into()
        .map_err(|_| Error::Corrupt("pending records are not an array".into()))?;
    if keys.length() != values.length() {
        return Err(Error::Corrupt(
            "pending keys and records differ in number".into(),
        ));
    }
    keys.iter()
        .zip(values.iter())
        .map(|(k, v)| {
            let seq = position_from_js(&k, "pending sequence number")?;
            let bytes = v
                .dyn_into::<Uint8Array>()
                .map_err(|_| Error::Corrupt(format!("pending record {seq} is not bytes")))?;
            Ok(PendingRecord {
                seq,
                bytes: bytes.to_vec(),
                erased: false,
            })
        })
        .collect()
}

fn object_store(tx: &IdbTransaction, name: &str) -> Result<IdbObjectStore> {
    tx.object_store(name).map_err(js_error)
}

fn idb_factory() -> Result<IdbFactory> {
    // `indexedDB` lives on the global object in windows and workers alike.
    let factory =
        Reflect::get(&js_sys::global(), &JsValue::from_str("indexedDB")).map_err(js_error)?;
    factory
        .dyn_into::<IdbFactory>()
        .map_err(|_| Error::Storage("IndexedDB is not available here".into()))
}

/// Opens (creating or upgrading) the database at [`SCHEMA_VERSION`].
async fn open_database(factory: &IdbFactory, name: &str) -> Result<IdbDatabase> {
    let request = factory
        .open_with_u32(name, SCHEMA_VERSION)
        .map_err(js_error)?;
    let upgrade_error: Rc<RefCell<Option<Error>>> = Rc::default();
    let on_upgrade = {
        let upgrade_error = upgrade_error.clone();
        Closure::once(move |event: web_sys::Event| {
            if let Err(e) = create_stores(&event) {
                *upgrade_error.borrow_mut() = Some(e);
                // Aborting the versionchange transaction fails the open request.
                if let Some(tx) = event
                    .target()
                    .and_then(|t| t.dyn_into::<IdbOpenDbRequest>().ok())
                    .and_then(|r| r.transaction())
                {
                    let _ = tx.abort();
                }
            }
        })
    };
    let guard = UpgradeHandler {
        request: request.clone(),
        closure: on_upgrade,
    };
    request.set_onupgradeneeded(Some(guard.closure.as_ref().unchecked_ref()));
    let opened = Request::new(request.clone().unchecked_into()).await;
    drop(guard);
    if let Some(e) = upgrade_error.borrow_mut().take() {
        return Err(e);
    }
    match opened {
        Ok(db) => db
            .dyn_into::<IdbDatabase>()
            .map_err(|_| Error::Storage("IndexedDB open returned no database".into())),
        // The database has a higher version than ours: a newer annals upgraded it.
        Err(_) if error_name(&request) == Some("VersionError".into()) => {
            Err(newer_schema_error(factory, name).await)
        }
        Err(e) => Err(e),
    }
}

/// Keeps the `upgradeneeded` handler alive for the open request, and detaches it after.
struct UpgradeHandler {
    request: IdbOpenDbRequest,
    closure: Closure<dyn FnMut(web_sys::Event)>,
}

impl Drop for UpgradeHandler {
    fn drop(&mut self) {
        self.request.set_onupgradeneeded(None);
    }
}

fn create_stores(event: &web_sys::Event) -> Result<()> {
    let request = event
        .target()
        .and_then(|t| t.dyn_into::<IdbOpenDbRequest>().ok())
        .ok_or_else(|| Error::Storage("upgradeneeded without its open request".into()))?;
    let db: IdbDatabase = request.result().map_err(js_error)?.unchecked_into();
    let existing = db.object_store_names();
    for name in STORES {
        if !existing.contains(name) {
            // Out-of-line keys: segments by first position, the others by name.
            db.create_object_store(name).map_err(js_error)?;
        }
    }
    Ok(())
}

/// The error for a database whose schema is newer than ours: opens it at its own version to
/// read the format it holds, touching nothing.
async fn newer_schema_error(factory: &IdbFactory, name: &str) -> Error {
    let found = async {
        let request = factory.open(name).map_err(js_error)?;
        let db: IdbDatabase = Request::new(request.unchecked_into())
            .await?
            .unchecked_into();
        let format = async {
            let tx = db
                .transaction_with_str_and_mode(META, IdbTransactionMode::Readonly)
                .map_err(js_error)?;
            let value = Request::new(
                object_store(&tx, META)?
                    .get(&JsValue::from_str(FORMAT_KEY))
                    .map_err(js_error)?,
            )
            .await?;
            format_from_js(&value)
        }
        .await;
        db.close();
        format
    }
    .await;
    match found {
        Ok(Some(found)) if found > FORMAT_VERSION => Error::FormatTooNew {
            found,
            supported: FORMAT_VERSION,
        },
        _ => Error::Storage(format!(
            "VersionError: database `{name}` has a schema newer than version {SCHEMA_VERSION}, \
             which this version of annals reads; upgrade annals to open it"
        )),
    }
}

fn key(position: u64) -> JsValue {
    // Positions stay below 2^53, so they are exact as JS numbers.
    JsValue::from_f64(position as f64)
}

fn lower_bound(position: u64) -> Result<JsValue> {
    IdbKeyRange::lower_bound(&key(position))
        .map(Into::into)
        .map_err(js_error)
}

/// Tells the browser that nothing more will be asked of `tx`, so it commits without
/// waiting to notice. Browsers without `commit()` commit anyway; the error is ignored.
#[allow(deprecated)] // web-sys marks it deprecated, but commit() is standard IndexedDB 3.0.
fn commit(tx: &IdbTransaction) {
    let _ = tx.commit();
}

/// A stored position or head: absent is 0.
fn position_from_js(value: &JsValue, what: &str) -> Result<u64> {
    if value.is_undefined() {
        return Ok(0);
    }
    value
        .as_f64()
        .filter(|v| v.fract() == 0.0 && *v >= 0.0 && *v <= MAX_SAFE_INTEGER as f64)
        .map(|v| v as u64)
        .ok_or_else(|| Error::Corrupt(format!("stored {what} is not a position: {value:?}")))
}

fn format_from_js(value: &JsValue) -> Result<Option<u32>> {
    if value.is_undefined() {
        return Ok(None);
    }
    value
        .as_f64()
        .filter(|v| v.fract() == 0.0 && *v >= 0.0 && *v <= f64::from(u32::MAX))
        .map(|v| Some(v as u32))
        .ok_or_else(|| Error::Corrupt(format!("stored format is not a number: {value:?}")))
}

fn segment_from_js(value: &JsValue) -> Result<Segment> {
    let array = value
        .dyn_ref::<Uint8Array>()
        .ok_or_else(|| Error::Corrupt("a stored segment is not a Uint8Array".into()))?;
    let bytes = array.to_vec();
    let (first, _) = codec::header(&bytes)?;
    Ok(Segment { first, bytes })
}

fn segments_from_js(value: &JsValue) -> Result<Vec<Segment>> {
    let array = value
        .dyn_ref::<Array>()
        .ok_or_else(|| Error::Storage("getAll did not return an array".into()))?;
    let mut out = Vec::with_capacity(array.length() as usize);
    for value in array.iter() {
        out.push(segment_from_js(&value)?);
    }
    Ok(out)
}

/// Converts a failure thrown by or reported from IndexedDB, once, into a crate error.
fn js_error(value: JsValue) -> Error {
    if let Some(e) = value.dyn_ref::<DomException>() {
        return dom_error(e);
    }
    if let Some(e) = value.dyn_ref::<js_sys::Error>() {
        return Error::Storage(format!(
            "{}: {}",
            String::from(e.name()),
            String::from(e.message())
        ));
    }
    Error::Storage(format!("{value:?}"))
}

fn dom_error(e: &DomException) -> Error {
    let (name, message) = (e.name(), e.message());
    if name == "QuotaExceededError" {
        Error::QuotaExceeded(message)
    } else {
        Error::Storage(format!("{name}: {message}"))
    }
}

fn error_name(request: &IdbRequest) -> Option<String> {
    request.error().ok().flatten().map(|e| e.name())
}

/// The error of a failed request. A request aborted along with its transaction reports
/// `AbortError`; the transaction knows the cause (quota errors often surface there).
fn request_error(request: &IdbRequest) -> Error {
    let own = request.error().ok().flatten();
    let of_transaction = request.transaction().and_then(|t| t.error());
    match (own, of_transaction) {
        (Some(e), Some(t)) if e.name() == "AbortError" => dom_error(&t),
        (Some(e), _) | (None, Some(e)) => dom_error(&e),
        (None, None) => Error::Storage("an IndexedDB request failed".into()),
    }
}

/// What a callback saw: nothing yet, or whether the success/complete event fired.
#[derive(Default)]
struct Signal {
    fired: Option<bool>,
    waker: Option<Waker>,
}

fn signal_callback(
    signal: &Rc<RefCell<Signal>>,
    ok_type: &'static str,
) -> Closure<dyn FnMut(web_sys::Event)> {
    let signal = signal.clone();
    // Each request (transaction) fires exactly one of its two final events, so the
    // callback, installed as both handlers, runs once.
    Closure::once(move |event: web_sys::Event| {
        let mut s = signal.borrow_mut();
        s.fired = Some(event.type_() == ok_type);
        if let Some(waker) = s.waker.take() {
            waker.wake();
        }
    })
}

/// An `IdbRequest` as a future of its result. The callback lives with the future and is
/// detached when the future is dropped, whether it fired or not.
struct Request {
    request: IdbRequest,
    signal: Rc<RefCell<Signal>>,
    _callback: Closure<dyn FnMut(web_sys::Event)>,
}

impl Request {
    fn new(request: IdbRequest) -> Self {
        let signal = Rc::default();
        let callback = signal_callback(&signal, "success");
        request.set_onsuccess(Some(callback.as_ref().unchecked_ref()));
        request.set_onerror(Some(callback.as_ref().unchecked_ref()));
        Request {
            request,
            signal,
            _callback: callback,
        }
    }
}

impl Future for Request {
    type Output = Result<JsValue>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut signal = self.signal.borrow_mut();
        match signal.fired {
            None => {
                signal.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            Some(true) => Poll::Ready(self.request.result().map_err(js_error)),
            Some(false) => Poll::Ready(Err(request_error(&self.request))),
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        self.request.set_onsuccess(None);
        self.request.set_onerror(None);
    }
}

/// A transaction's end as a future: `Ok` once committed (`complete`), the cause once aborted.
struct Done {
    tx: IdbTransaction,
    signal: Rc<RefCell<Signal>>,
    _callback: Closure<dyn FnMut(web_sys::Event)>,
}

impl Done {
    fn new(tx: &IdbTransaction) -> Self {
        let signal = Rc::default();
        let callback = signal_callback(&signal, "complete");
        tx.set_oncomplete(Some(callback.as_ref().unchecked_ref()));
        tx.set_onabort(Some(callback.as_ref().unchecked_ref()));
        Done {
            tx: tx.clone(),
            signal,
            _callback: callback,
        }
    }
}

impl Future for Done {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut signal = self.signal.borrow_mut();
        match signal.fired {
            None => {
                signal.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            Some(true) => Poll::Ready(Ok(())),
            Some(false) => Poll::Ready(Err(match self.tx.error() {
                Some(e) => dom_error(&e),
                None => Error::Storage("the IndexedDB transaction was aborted".into()),
            })),
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        self.tx.set_oncomplete(None);
        self.tx.set_onabort(None);
    }
}

/// A snapshot as stored: `{version, position, state}` under its name.
fn snapshot_value(snapshot: &SnapshotRecord) -> Result<Object> {
    let value = Object::new();
    let set = |field: &str, v: JsValue| {
        Reflect::set(&value, &JsValue::from_str(field), &v).map_err(js_error)
    };
    set("version", JsValue::from(snapshot.version))?;
    set("position", key(snapshot.position))?;
    set("state", JsValue::from_str(&snapshot.state))?;
    Ok(value)
}
