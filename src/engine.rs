//! The engine: the log's rules ([`crate::log`]) run against a [`Storage`] backend.
//! Writers are serialised within one engine; across engines (tabs) the storage
//! transaction assigns positions, so they stay unique and gapless.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures::lock::Mutex;

use crate::clock::{Clock, IdSource, SystemClock, Uuidv7};
use crate::error::{Error, Result};
use crate::event::{Event, Limits, NewEvent};
use crate::log::{AppendResult, LogState, ReadQuery};
use crate::storage::{CompactionReport, Segment, SnapshotRecord, Storage};

/// Segments are merged up to about this size by compaction.
pub const COMPACTION_TARGET_BYTES: usize = 256 * 1024;

/// How an engine is set up. `Default` gives the system clock, UUIDv7 ids and the
/// default limits.
pub struct EngineOptions {
    pub limits: Limits,
    pub clock: Box<dyn Clock>,
    pub ids: Box<dyn IdSource>,
    /// Recorded as `origin` on every event this engine appends (a client id).
    pub origin: Option<String>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            limits: Limits::default(),
            clock: Box::new(SystemClock),
            ids: Box::new(Uuidv7::new()),
            origin: None,
        }
    }
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The head before this call; events after it up to `head` are new to this engine,
    /// including any that other writers committed first.
    pub previous_head: u64,
    pub head: u64,
    /// One result per event of the batch, in order.
    pub results: Vec<AppendResult>,
}

/// What changed in the log: the events `previous_head + 1 ..= head` are new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub previous_head: u64,
    pub head: u64,
}

type Listener = Rc<dyn Fn(Change)>;

pub struct Engine<S: Storage> {
    storage: S,
    log: RefCell<LogState>,
    writer: Mutex<()>,
    options: RefCell<EngineOptions>,
    listeners: RefCell<Vec<(u64, Listener)>>,
    next_listener: Cell<u64>,
    closed: Cell<bool>,
}

impl<S: Storage> Engine<S> {
    /// Opens the store and loads its log.
    pub async fn open(storage: S, options: EngineOptions) -> Result<Self> {
        storage.open().await?;
        let segments = storage.read_segments(0).await?;
        let mut log = LogState::default();
        log.ingest(&segments)?;
        Ok(Engine {
            storage,
            log: RefCell::new(log),
            writer: Mutex::new(()),
            options: RefCell::new(options),
            listeners: RefCell::new(Vec::new()),
            next_listener: Cell::new(0),
            closed: Cell::new(false),
        })
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    pub fn head(&self) -> u64 {
        self.log.borrow().head()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.get() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Sets the `origin` recorded on events appended from now on.
    pub fn set_origin(&self, origin: Option<String>) {
        self.options.borrow_mut().origin = origin;
    }

    /// Appends `batch` atomically: every event is written, or none is. Events whose id is
    /// already stored come back as [`AppendResult::Duplicate`] and are not written again.
    pub async fn append(&self, batch: Vec<NewEvent>) -> Result<AppendOutcome> {
        self.check_open()?;
        if batch.is_empty() {
            let head = self.head();
            return Ok(AppendOutcome {
                previous_head: head,
                head,
                results: Vec::new(),
            });
        }
        let _writer = self.writer.lock().await;
        self.check_open()?;
        let previous_head = self.head();
        let mut prepared: Option<(Option<Segment>, Vec<AppendResult>)> = None;
        let mut prepare = |others: &[Segment]| -> Result<Option<Segment>> {
            let mut log = self.log.borrow_mut();
            log.ingest(others)?; // committed by other tabs: ours to know, whatever happens next
            let mut options = self.options.borrow_mut();
            let options = &mut *options;
            let now = options.clock.now_ms();
            let ids = &mut options.ids;
            let plan = log.prepare(
                &batch,
                &options.limits,
                now,
                options.origin.as_deref(),
                &mut || ids.next_id(now),
            )?;
            prepared = Some((plan.segment.clone(), plan.results));
            Ok(plan.segment)
        };
        let stored = self.storage.append(previous_head, &mut prepare).await;
        if let Err(e) = stored {
            // Others' events read inside a failed transaction were committed; tell listeners.
            self.notify(previous_head);
            return Err(e);
        }
        let (segment, results) =
            prepared.ok_or_else(|| Error::Storage("the append transaction did not run".into()))?;
        if let Some(segment) = segment {
            self.log.borrow_mut().commit(segment)?;
        }
        let head = self.head();
        self.notify(previous_head);
        Ok(AppendOutcome {
            previous_head,
            head,
            results,
        })
    }

    /// Reads what other writers appended since this engine last looked. Returns the
    /// change (empty when nothing is new).
    pub async fn catch_up(&self) -> Result<Change> {
        self.check_open()?;
        let _writer = self.writer.lock().await;
        let previous_head = self.head();
        let segments = self.storage.read_segments(previous_head).await?;
        self.log.borrow_mut().ingest(&segments)?;
        self.notify(previous_head);
        Ok(Change {
            previous_head,
            head: self.head(),
        })
    }

    /// Merges small segments, in storage and in memory.
    pub async fn compact(&self) -> Result<CompactionReport> {
        self.check_open()?;
        let _writer = self.writer.lock().await;
        let report = self.storage.compact(COMPACTION_TARGET_BYTES).await?;
        self.log
            .borrow_mut()
            .compact_memory(COMPACTION_TARGET_BYTES)?;
        Ok(report)
    }

    pub fn read(&self, query: &ReadQuery) -> Result<Vec<Event>> {
        self.check_open()?;
        self.log.borrow().read(query)
    }

    pub fn read_json(&self, query: &ReadQuery) -> Result<String> {
        self.check_open()?;
        self.log.borrow().read_json(query)
    }

    /// Events `after + 1 ..= to` as a JSON array (the batch handed to JS reducers).
    pub fn range_json(&self, after: u64, to: u64) -> Result<String> {
        self.check_open()?;
        self.log.borrow().range_json(after, to)
    }

    /// Calls `f` with the events `after + 1 ..= to`, borrowed, in order.
    pub fn fold_range(
        &self,
        after: u64,
        to: u64,
        f: impl FnMut(crate::codec::EventRef<'_>),
    ) -> Result<()> {
        self.check_open()?;
        self.log.borrow().for_each_in(after, to, f)
    }

    /// Calls `f` with the events of `stream` after position `after`, borrowed, in order.
    pub fn fold_stream(
        &self,
        stream: &str,
        after: u64,
        f: impl FnMut(crate::codec::EventRef<'_>),
    ) -> Result<()> {
        self.check_open()?;
        self.log.borrow().for_each_in_stream(stream, after, f)
    }

    pub fn stream_version(&self, stream: &str) -> u64 {
        self.log.borrow().stream_version(stream)
    }

    /// The stored event with this id, if any.
    pub fn event_by_id(&self, id: &crate::event::EventId) -> Result<Option<Event>> {
        let log = self.log.borrow();
        match log.position_of(id) {
            Some(p) => Ok(log.event(p)?.map(|e| e.to_event(false))),
            None => Ok(None),
        }
    }

    /// Bytes of encoded events this engine holds in memory.
    pub fn encoded_bytes(&self) -> usize {
        self.log.borrow().encoded_bytes()
    }

    pub async fn put_snapshot(&self, snapshot: &SnapshotRecord) -> Result<()> {
        self.check_open()?;
        if snapshot.position > self.head() {
            return Err(Error::InvalidArgument(format!(
                "snapshot at position {} is past the head {}",
                snapshot.position,
                self.head()
            )));
        }
        self.storage.put_snapshot(snapshot).await
    }

    pub async fn snapshot(&self, name: &str) -> Result<Option<SnapshotRecord>> {
        self.check_open()?;
        self.storage.snapshot(name).await
    }

    pub async fn delete_snapshot(&self, name: &str) -> Result<()> {
        self.check_open()?;
        self.storage.delete_snapshot(name).await
    }

    /// Calls `listener` after every change to this engine's view of the log.
    pub fn subscribe(&self, listener: impl Fn(Change) + 'static) -> u64 {
        let id = self.next_listener.get() + 1;
        self.next_listener.set(id);
        self.listeners.borrow_mut().push((id, Rc::new(listener)));
        id
    }

    pub fn unsubscribe(&self, id: u64) {
        self.listeners.borrow_mut().retain(|(i, _)| *i != id);
    }

    fn notify(&self, previous_head: u64) {
        let head = self.head();
        if head == previous_head {
            return;
        }
        let listeners: Vec<Listener> = self
            .listeners
            .borrow()
            .iter()
            .map(|(_, l)| l.clone())
            .collect();
        for listener in listeners {
            listener(Change {
                previous_head,
                head,
            });
        }
    }

    /// Closes the engine; every later call fails with [`Error::Closed`].
    pub async fn close(&self) {
        // Let a write in flight finish first, so that close never cuts a batch in half.
        let _writer = self.writer.lock().await;
        self.closed.set(true);
        self.listeners.borrow_mut().clear();
        self.storage.close();
    }
}
