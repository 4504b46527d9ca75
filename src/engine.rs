//! The engine: the append rules ([`crate::append`]) and the in-memory log
//! ([`crate::log`], [`crate::outbox`]) run against a [`Storage`] backend.
//!
//! Writers are serialised within one engine; across engines (tabs) every write is one
//! storage transaction that first reads what the others wrote, so positions stay unique
//! and gapless. A local store confirms its appends at once; a synced store keeps them in
//! its outbox until the server confirms them (see [`crate::sync`]).

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;

use futures::lock::{Mutex, MutexGuard};
use serde::{Deserialize, Serialize};

use crate::append::{plan_append, AppendContext, OutboxBuilder, ReplicaView};
use crate::clock::{Clock, IdSource, SystemClock, Uuidv7};
use crate::codec::{EventRef, SegmentBuilder};
use crate::error::{Error, Result};
use crate::event::{Event, EventId, ExpectedVersion, Limits, NewEvent};
use crate::json::{self, JsonResult, Reader};
use crate::log::{AppendResult, LogState, ReadQuery};
use crate::outbox::{erase_within, OutboxChange, PendingBatch, PendingLog};
use crate::protocol::{
    content_digest, shape_digest, PullResponse, PushEvent, PushResponse, PushResult,
};
use crate::retention::{Retained, Retention};
use crate::storage::{
    Commit, CompactionReport, Fresh, Known, Scope, Segment, SnapshotRecord, Storage, META_RETAINED,
};

/// Segments are merged up to about this size by compaction.
pub const COMPACTION_TARGET_BYTES: usize = 256 * 1024;

/// At most this many rejected events are kept for the app to read.
pub const REJECTED_KEPT: usize = 1_000;

const META_MODE: &str = "mode";
const META_CLIENT_ID: &str = "clientId";
const META_EPOCH: &str = "epoch";
const META_REJECTED: &str = "rejected";
/// How many rejections were ever stored, and how many of them the sync client announced:
/// those in between were stored just before a crash, and are announced after a reopen.
const META_REJECTED_COUNT: &str = "rejectedCount";
const META_REJECTED_ANNOUNCED: &str = "rejectedAnnounced";
/// The server store this replica holds a copy of ([`SyncTarget`], JSON).
const META_SYNC_TARGET: &str = "syncTarget";

/// The server store a synced replica holds a copy of: the server's URL and the store's
/// name there. Recorded in `meta` when first bound ([`Engine::bind_sync_target`]), so
/// that opening the same local store against another one is refused rather than silently
/// replacing its log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncTarget {
    /// The server's URL, compared without trailing slashes and with its scheme and host
    /// lower-cased.
    pub server: String,
    pub store: String,
}

impl SyncTarget {
    /// Reads one as `meta` keeps it (unknown fields skipped).
    fn read(r: &mut Reader<'_>) -> JsonResult<Self> {
        let (mut server, mut store) = (None, None);
        r.object(&mut |r, key| match key {
            "server" => r.once(&mut server, key, Reader::owned_string),
            "store" => r.once(&mut store, key, Reader::owned_string),
            _ => r.raw().map(|_| ()),
        })?;
        Ok(SyncTarget {
            server: json::required(r, server, "server")?,
            store: json::required(r, store, "store")?,
        })
    }

    pub fn new(server: &str, store: &str) -> Self {
        SyncTarget {
            server: normalize_server_url(server),
            store: store.to_owned(),
        }
    }
}

/// `HTTP://Example.com:8080/api/` and `http://example.com:8080/api` are one server.
fn normalize_server_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    match url.find("://") {
        Some(at) => {
            let authority_end = url[at + 3..].find('/').map_or(url.len(), |i| at + 3 + i);
            format!(
                "{}{}",
                url[..authority_end].to_ascii_lowercase(),
                &url[authority_end..]
            )
        }
        None => url.to_owned(),
    }
}

/// What [`Engine::bind_sync_target`] does when the store holds a copy of another server
/// store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnMismatch {
    /// Fail with [`Error::StoreMismatch`], changing nothing.
    #[default]
    Fail,
    /// Drop the local copy of the other store's log (its snapshots, cursor and epoch with
    /// it) and start as a copy of the new one. Events never pushed stay in the outbox and
    /// are pushed to the new store, checked there by their expected versions.
    Reset,
}

/// What binding a replica to its server store did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The store was already bound to this target.
    Same,
    /// The target was recorded now (a new store, one from before targets were recorded, or
    /// one that never received anything from the server store it was bound to).
    Recorded,
    /// The store held a copy of another server store, which was dropped ([`OnMismatch::Reset`]).
    Reset,
}

/// How an engine is set up. `Default` gives the system clock, UUIDv7 ids, the default
/// limits and a local (unsynced) store.
pub struct EngineOptions {
    pub limits: Limits,
    pub clock: Box<dyn Clock>,
    pub ids: Box<dyn IdSource>,
    /// Recorded as `origin` on every event this engine appends. A synced store uses its
    /// persisted client id instead.
    pub origin: Option<String>,
    /// Keep appends in an outbox until a sync server confirms them. Once a store has been
    /// opened synced it stays synced.
    pub synced: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            limits: Limits::default(),
            clock: Box::new(SystemClock),
            ids: Box::new(Uuidv7::new()),
            origin: None,
            synced: false,
        }
    }
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// One result per event of the batch, in order (positions in the replica's log). A
    /// batch is wholly new ([`AppendResult::Appended`]) or wholly a retry of events
    /// already in the log ([`AppendResult::Duplicate`], nothing written).
    pub results: Vec<AppendResult>,
    /// One per event of the batch: the version of its stream after the call (what the
    /// next append to it expects), whether the event was new or a retry.
    pub stream_versions: Vec<u64>,
    /// What changed in this engine's view, including other writers' events read first.
    pub change: Change,
}

/// What changed in the replica's log. Confirmed events `previous_confirmed + 1 ..=
/// confirmed` are new (all of them from 1 after a reset). Pending events from index
/// `pending_from` of the outbox on are new; when `rebased`, every pending event moved and
/// optimistic state must be recomputed from the confirmed state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Change {
    pub log_reset: bool,
    pub previous_confirmed: u64,
    pub confirmed: u64,
    pub rebased: bool,
    pub pending_from: usize,
    pub pending: usize,
    /// The lowest confirmed position whose event was erased by this change (0: none):
    /// state folded from there on held the erased data and must be folded again.
    pub erased_from: u64,
    /// The tag of the [`Engine::append_tagged`] call whose write made this change (0: any
    /// other write). The change may hold more than that append's events (what other
    /// writers committed, taken in by the same transaction).
    pub append_tag: u64,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        !self.log_reset
            && self.erased_from == 0
            && !self.rebased
            && self.previous_confirmed == self.confirmed
            && self.pending_from == self.pending
    }

    /// The replica's head before and after.
    pub fn previous_head(&self) -> u64 {
        if self.rebased || self.log_reset {
            self.previous_confirmed
        } else {
            self.previous_confirmed + self.pending_from as u64
        }
    }

    pub fn head(&self) -> u64 {
        self.confirmed + self.pending as u64
    }
}

/// A pending event the server refused, kept for the app to read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    pub event: PushEvent,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_version: Option<u64>,
}

impl Rejection {
    /// Reads one as `meta` keeps it (unknown fields skipped).
    fn read(r: &mut Reader<'_>) -> JsonResult<Self> {
        let (mut event, mut reason, mut actual_version) = (None, None, None);
        r.object(&mut |r, key| match key {
            "event" => r.once(&mut event, key, PushEvent::read),
            "reason" => r.once(&mut reason, key, Reader::owned_string),
            "actualVersion" => r.once(&mut actual_version, key, Reader::opt_uint::<u64>),
            _ => r.raw().map(|_| ()),
        })?;
        Ok(Rejection {
            event: json::required(r, event, "event")?,
            reason: json::required(r, reason, "reason")?,
            actual_version: actual_version.flatten(),
        })
    }
}

/// What a pull did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullOutcome {
    pub change: Change,
    /// The server's epoch changed: the confirmed log was dropped and must be pulled again
    /// from the start (pending events were kept).
    pub restart: bool,
    /// The page does not continue this replica's confirmed log (it was asked for from a
    /// cursor that another tab has since moved or reset): nothing was applied; pull again
    /// from [`Engine::confirmed_head`].
    pub stale: bool,
    /// Pending events refused because the page holds another event under their id
    /// (`DUPLICATE_ID`): stored in the rejected list, for the sync client to announce.
    pub reused: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    log_generation: u64,
    confirmed: u64,
    pending: usize,
    pending_generation: u64,
}

type Listener = Rc<dyn Fn(Change)>;

/// Segments read per step while a lazily opened log loads (about 16 MB of 256 KB ones).
pub const LOAD_STEP_SEGMENTS: usize = 64;
/// Events indexed per step once they are all loaded.
pub const INDEX_STEP_EVENTS: u64 = 200_000;

enum Step {
    More,
    Done,
    /// Another writer reset the log meanwhile: the loaded part was dropped.
    Reset,
}

fn missing_events(have: u64, want: u64) -> Error {
    Error::Corrupt(format!(
        "the stored log ends at position {have} but its head is {want}"
    ))
}

pub struct Engine<S: Storage> {
    storage: S,
    log: RefCell<LogState>,
    pending: RefCell<PendingLog>,
    known: Cell<Known>,
    writer: Mutex<()>,
    /// Serialises the steps that complete a lazily opened log.
    loader: Mutex<()>,
    /// The events before the loaded part, while they are being read (lazy open).
    rest: RefCell<Option<LogState>>,
    options: RefCell<EngineOptions>,
    synced: bool,
    client_id: Option<String>,
    epoch: RefCell<Option<String>>,
    /// The server store this engine syncs with, once bound: sync checks it is still the
    /// stored one (another tab may have reset the store for another target).
    sync_target: RefCell<Option<SyncTarget>>,
    listeners: RefCell<Vec<(u64, Listener)>>,
    next_listener: Cell<u64>,
    closed: Cell<bool>,
}

impl<S: Storage> Engine<S> {
    /// Opens the store and loads its log. Opening a local store with `synced` moves its
    /// events into the outbox, to be pushed on the next sync.
    pub async fn open(storage: S, options: EngineOptions) -> Result<Self> {
        let engine = Self::open_lazy(storage, options).await?;
        engine.complete().await?;
        Ok(engine)
    }

    /// Opens the store reading only its counters and outbox: no event is read yet, so
    /// that an app can show a snapshot's state first. [`Engine::load_from`] reads the
    /// events after a position (those a snapshot does not cover), [`Engine::load_step`]
    /// the rest, bit by bit, and builds the indexes; [`Engine::complete`] all of it.
    ///
    /// Until the log is complete, reads of the events not loaded yet and of streams,
    /// types or correlation ids fail; everything that writes or takes in other writers'
    /// changes (append, catch-up, sync, compaction) completes the log first. A store with
    /// pending events, or one that turns synced, is completed here: their provisional
    /// versions need the stream index.
    pub async fn open_lazy(storage: S, mut options: EngineOptions) -> Result<Self> {
        storage.open().await?;
        let fresh = storage.outline().await?;
        let synced = options.synced || storage.meta(META_MODE).await?.as_deref() == Some("synced");
        let client_id = if synced {
            let id = match storage.meta(META_CLIENT_ID).await? {
                Some(id) => id,
                None => {
                    let id = options.ids.next_id(options.clock.now_ms()).to_string();
                    storage.put_meta(META_CLIENT_ID, &id).await?;
                    id
                }
            };
            options.origin = Some(id.clone());
            Some(id)
        } else {
            None
        };
        let epoch = known_epoch(storage.meta(META_EPOCH).await?);
        // A log cut by retention starts at the cut, its streams at their places there.
        let retained = match fresh.now.dropped {
            0 => None,
            _ => match storage.meta(META_RETAINED).await? {
                Some(json) => Some(Retained::parse(&json)?),
                None => {
                    return Err(Error::Corrupt(
                        "retention dropped events but left no record of the streams".into(),
                    ))
                }
            },
        };
        let engine = Engine {
            storage,
            // An empty log has nothing to load: it is complete at once.
            log: RefCell::new(match &retained {
                Some(retained) => LogState::unloaded_after_cut(fresh.now.head, retained),
                None if fresh.now.head == 0 => LogState::default(),
                None => LogState::unloaded(fresh.now.head),
            }),
            pending: RefCell::new(PendingLog::default()),
            known: Cell::new(Known::default()),
            writer: Mutex::new(()),
            loader: Mutex::new(()),
            rest: RefCell::new(None),
            options: RefCell::new(options),
            synced,
            client_id,
            epoch: RefCell::new(epoch),
            sync_target: RefCell::new(None),
            listeners: RefCell::new(Vec::new()),
            next_listener: Cell::new(0),
            closed: Cell::new(false),
        };
        engine.absorb(&fresh)?;
        if engine.pending_count() > 0 {
            engine.complete().await?;
        }
        if synced && engine.storage.meta(META_MODE).await?.as_deref() != Some("synced") {
            engine.complete().await?;
            engine.become_synced().await?;
        }
        Ok(engine)
    }

    /// Binds this replica to the server store it syncs with. The first time (a new store,
    /// or one from before targets were recorded), or while nothing was ever received from
    /// the recorded one (no epoch, no confirmed event), the target is recorded. A store that holds
    /// a copy of another server store (another name or server) fails with
    /// [`Error::StoreMismatch`] and nothing changes, unless `on_mismatch` is
    /// [`OnMismatch::Reset`]: then its copy of the other store's log is dropped, with its
    /// snapshots, cursor and epoch, in one transaction; the outbox stays.
    pub async fn bind_sync_target(
        &self,
        target: SyncTarget,
        on_mismatch: OnMismatch,
    ) -> Result<Bound> {
        self.check_open()?;
        let bound = match self.stored_sync_target().await? {
            None => {
                self.storage
                    .put_meta(META_SYNC_TARGET, &target_json(&target)?)
                    .await?;
                Bound::Recorded
            }
            Some(stored) if stored == target => Bound::Same,
            // Nothing was ever received from the other store: there is no copy of it to
            // drop or hide, and the outbox goes to the new one as it would have gone there.
            Some(_) if self.epoch().is_none() && self.confirmed_head() == 0 => {
                self.storage
                    .put_meta(META_SYNC_TARGET, &target_json(&target)?)
                    .await?;
                Bound::Recorded
            }
            Some(stored) => match on_mismatch {
                OnMismatch::Fail => {
                    return Err(Error::StoreMismatch(
                        self.mismatch_message(&stored, &target),
                    ))
                }
                OnMismatch::Reset => {
                    self.reset_for(&target).await?;
                    Bound::Reset
                }
            },
        };
        *self.sync_target.borrow_mut() = Some(target);
        Ok(bound)
    }

    /// Fails with [`Error::StoreMismatch`] if the store is bound to another server store
    /// than this engine is (another tab reset it for another one): this engine must then
    /// neither push its outbox nor pull into its log.
    pub async fn check_sync_target(&self) -> Result<()> {
        let Some(mine) = self.sync_target.borrow().clone() else {
            return Ok(());
        };
        match self.stored_sync_target().await? {
            Some(stored) if stored != mine => {
                Err(Error::StoreMismatch(self.mismatch_message(&stored, &mine)))
            }
            _ => Ok(()),
        }
    }

    /// The server store recorded in `meta`, if any.
    pub async fn stored_sync_target(&self) -> Result<Option<SyncTarget>> {
        match self.storage.meta(META_SYNC_TARGET).await? {
            None => Ok(None),
            Some(json) => json::parse(&json, SyncTarget::read)
                .map(Some)
                .map_err(|e| Error::Corrupt(format!("sync target: {e}"))),
        }
    }

    fn mismatch_message(&self, stored: &SyncTarget, wanted: &SyncTarget) -> String {
        let pending = self.pending_count();
        let unpushed = if pending == 0 {
            String::new()
        } else {
            format!(
                " ({pending} event(s) never pushed stay in the outbox and go to {:?})",
                wanted.store
            )
        };
        format!(
            "this local store holds a copy of store {:?} on {} ({} confirmed event(s), kept on that server), \
             but was opened to sync with store {:?} on {}; nothing was changed. Open it with the \
             same `sync.store` and `sync.url` as before, give it another `name`, or open it with \
             `sync: {{ ..., onMismatch: \"reset\" }}` (Rust: `OnMismatch::Reset`) to drop the local \
             copy and start over from {:?}{unpushed}",
            stored.store,
            stored.server,
            self.confirmed_head(),
            wanted.store,
            wanted.server,
            wanted.store,
        )
    }

    /// Drops the confirmed log, snapshots, cursor and epoch and records `target`, in one
    /// transaction; the outbox stays.
    async fn reset_for(&self, target: &SyncTarget) -> Result<()> {
        self.complete().await?;
        let write = self.begin_write().await?;
        let meta = vec![
            // An empty epoch is none: the next pull records the new store's.
            (META_EPOCH.to_owned(), String::new()),
            (META_SYNC_TARGET.to_owned(), target_json(target)?),
        ];
        write
            .commit(
                Scope::LogAndSnapshots,
                |_| {
                    let commit = Commit {
                        reset_log: true,
                        put_meta: meta.clone(),
                        ..Commit::default()
                    };
                    Ok((commit, ()))
                },
                |()| {
                    self.log.borrow_mut().clear();
                    *self.epoch.borrow_mut() = None;
                    Ok(())
                },
            )
            .await?;
        Ok(())
    }

    /// Starts reading the events after `after` that are not loaded yet (see
    /// [`Engine::open_lazy`]): reads the first of them (up to [`LOAD_STEP_SEGMENTS`]
    /// segments) now; [`Engine::load_step`] reads on from there, then the earlier events.
    /// [`Engine::readable_to`] tells how far reads after `after` work meanwhile.
    pub async fn load_from(&self, after: u64) -> Result<()> {
        self.check_open()?;
        let _loader = self.loader.lock().await;
        let base = self.log.borrow().base();
        // Nothing before a retention cut is stored.
        let after = after.max(self.log.borrow().dropped());
        if after >= base {
            return Ok(());
        }
        // Start over from `after` (the part loaded so far may start later).
        self.rest.borrow_mut().take();
        let (segments, now) = self
            .storage
            .segments_after(after, LOAD_STEP_SEGMENTS)
            .await?;
        if self.reset_seen(now) {
            drop(_loader);
            self.catch_up().await?;
            return Ok(());
        }
        let first = segments.first().map_or(after + 1, |s| s.first);
        let mut part = self
            .log
            .borrow()
            .empty_start_at(first.saturating_sub(1).min(after));
        if segments.is_empty() {
            return Err(missing_events(part.head(), base));
        }
        part.ingest_until(segments, base)?;
        if part.head() == base {
            self.join(part)?;
        } else {
            *self.rest.borrow_mut() = Some(part);
        }
        Ok(())
    }

    /// How far the events after `after` can be read now: the last position of the loaded
    /// events that follow it without a gap (`after` itself when none do).
    pub fn readable_to(&self, after: u64) -> u64 {
        let log = self.log.borrow();
        if log.holds_after(after) {
            return log.head().max(after);
        }
        match &*self.rest.borrow() {
            Some(rest) if rest.holds_after(after) => rest.head().max(after),
            _ => after,
        }
    }

    /// One step of completing a lazily opened log: reads up to [`LOAD_STEP_SEGMENTS`]
    /// segments, or indexes up to [`INDEX_STEP_EVENTS`] events. True once complete.
    /// Meant to be called between other work (a browser tab stays responsive).
    pub async fn load_step(&self) -> Result<bool> {
        self.check_open()?;
        let reset = {
            let _loader = self.loader.lock().await;
            match self.step().await? {
                Step::Done => return Ok(true),
                Step::More => return Ok(false),
                Step::Reset => true,
            }
        };
        if reset {
            // Another writer reset the log while it loaded: take it in as a catch-up does.
            self.catch_up().await?;
        }
        Ok(self.log.borrow().is_complete())
    }

    /// Loads and indexes whatever a lazy open left out (nothing once complete).
    pub async fn complete(&self) -> Result<()> {
        if self.log.borrow().is_complete() {
            return Ok(());
        }
        let _loader = self.loader.lock().await;
        while let Step::More = self.step().await? {}
        Ok(())
    }

    /// Whether every event is loaded and indexed.
    pub fn is_complete(&self) -> bool {
        self.log.borrow().is_complete()
    }

    /// Events up to this position are not loaded yet (0 once they all are).
    pub fn loaded_after(&self) -> u64 {
        self.log.borrow().base()
    }

    /// One step of completing the log; the caller holds the loader lock.
    async fn step(&self) -> Result<Step> {
        self.check_open()?;
        let base = self.log.borrow().base();
        if base == self.log.borrow().dropped() {
            return Ok(if self.log.borrow_mut().index_more(INDEX_STEP_EVENTS)? {
                Step::Done
            } else {
                Step::More
            });
        }
        let start = self.log.borrow().dropped();
        let from = self.rest.borrow().as_ref().map_or(start, |r| r.head());
        let (segments, now) = self
            .storage
            .segments_after(from, LOAD_STEP_SEGMENTS)
            .await?;
        if self.reset_seen(now) {
            return Ok(Step::Reset);
        }
        let mut rest = self
            .rest
            .borrow_mut()
            .take()
            .unwrap_or_else(|| self.log.borrow().empty_start_at(start));
        if segments.is_empty() {
            return Err(missing_events(rest.head(), base));
        }
        rest.ingest_until(segments, base)?;
        if rest.head() == base {
            self.join(rest)?;
        } else {
            *self.rest.borrow_mut() = Some(rest);
        }
        Ok(Step::More)
    }

    /// Puts `earlier`, the events up to the base, in front of the loaded log.
    fn join(&self, mut earlier: LogState) -> Result<()> {
        let later = std::mem::take(&mut *self.log.borrow_mut());
        earlier.append_log(later)?;
        *self.log.borrow_mut() = earlier;
        Ok(())
    }

    /// While loading: if another writer reset the log since it was opened, the loaded part
    /// is of no use. It is dropped (an empty log is complete), and the next catch-up takes
    /// the new log in from the start, as a reset seen any other way.
    fn reset_seen(&self, now: Known) -> bool {
        let known = self.known.get();
        if now.log_generation == known.log_generation && now.dropped == known.dropped {
            return false;
        }
        self.rest.borrow_mut().take();
        self.log.borrow_mut().clear();
        if now.log_generation == known.log_generation {
            // A retention cut in another tab: the log is read again from the cut, as if
            // nothing had been seen (a reset is read again from the start the same way).
            self.known.set(Known {
                head: 0,
                dropped: 0,
                ..known
            });
        }
        true
    }

    /// Marks the store synced; local events it already had were never seen by a server,
    /// so they move to the outbox, in order, in the same transaction.
    async fn become_synced(&self) -> Result<()> {
        let write = self.begin_write().await?;
        write
            .commit(
                Scope::LogAndSnapshots,
                |fresh| {
                    let mut outbox = OutboxBuilder::default();
                    self.log.borrow().for_each_in(0, u64::MAX, |e| {
                        crate::append::AppendSink::push(
                            &mut outbox,
                            &e,
                            crate::event::ExpectedVersion::Any,
                        )
                    })?;
                    let mut commit = Commit {
                        put_meta: vec![(META_MODE.into(), "synced".into())],
                        ..Commit::default()
                    };
                    let batch = PendingBatch {
                        seq: fresh.now.pending_seq + 1,
                        events: outbox.0,
                    };
                    let mut moved = None;
                    if self.log.borrow().head() > 0 {
                        commit.reset_log = true;
                        commit.put_pending.push(batch.encode()?);
                        moved = Some(batch);
                    }
                    Ok((commit, moved))
                },
                |moved| {
                    if let Some(batch) = moved {
                        self.log.borrow_mut().clear();
                        self.pending.borrow_mut().push(batch);
                    }
                    Ok(())
                },
            )
            .await?;
        Ok(())
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The last position of the replica's log: confirmed events, then pending ones.
    pub fn head(&self) -> u64 {
        self.log.borrow().head() + self.pending.borrow().len() as u64
    }

    /// The last confirmed position (for a synced store, the sync cursor).
    pub fn confirmed_head(&self) -> u64 {
        self.log.borrow().head()
    }

    pub fn pending_count(&self) -> usize {
        self.pending.borrow().len()
    }

    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// The persisted client id of a synced store.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// The server epoch this replica's confirmed log belongs to.
    pub fn epoch(&self) -> Option<String> {
        self.epoch.borrow().clone()
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

    fn mark(&self) -> Mark {
        Mark {
            log_generation: self.known.get().log_generation,
            confirmed: self.log.borrow().head(),
            pending: self.pending.borrow().len(),
            pending_generation: self.known.get().pending_generation,
        }
    }

    fn change_since(&self, before: Mark) -> Change {
        let after = self.mark();
        let log_reset = after.log_generation != before.log_generation;
        let rebased = log_reset
            || after.pending_generation != before.pending_generation
            || (after.confirmed != before.confirmed && before.pending > 0);
        let erased_from = self.log.borrow_mut().take_erased_from();
        Change {
            log_reset,
            previous_confirmed: if log_reset { 0 } else { before.confirmed },
            confirmed: after.confirmed,
            rebased,
            pending_from: if rebased { 0 } else { before.pending },
            pending: after.pending,
            erased_from: if log_reset { 0 } else { erased_from },
            append_tag: 0,
        }
    }

    /// Takes in what other handles wrote (read inside a transaction or a refresh).
    fn absorb(&self, fresh: &Fresh) -> Result<()> {
        let mut log = self.log.borrow_mut();
        if fresh.log_reset {
            log.clear();
        }
        if fresh.now.dropped > log.dropped() {
            // Another tab's retention cut: this view drops the same events.
            let retained = fresh.retained.as_deref().ok_or_else(|| {
                Error::Corrupt("retention dropped events but left no record of the streams".into())
            })?;
            let complete = log.is_complete();
            log.drop_through(&Retained::parse(retained)?)?;
            if !complete {
                self.rest.borrow_mut().take();
            }
        }
        log.ingest(&fresh.segments)?;
        let mut pending = self.pending.borrow_mut();
        if fresh.pending_replaced {
            pending.replace(&fresh.pending)?;
        } else {
            pending.extend(&fresh.pending)?;
        }
        if !fresh.pending.is_empty() && log.is_complete() {
            // Another tab's erasure waiting in the outbox erased the confirmed events of
            // its stream in storage; the copies held here follow.
            for (stream, before) in pending.erasures(&log) {
                log.erase_stream(&stream, before)?;
            }
        }
        self.known.set(fresh.now);
        Ok(())
    }

    /// Starts a write (see [`Writing`]): waits for the writer lock, then checks that the
    /// engine did not close meanwhile, and marks the view that the write's change is
    /// measured from.
    async fn begin_write(&self) -> Result<Writing<'_, S>> {
        let writer = self.writer.lock().await;
        self.check_open()?;
        Ok(Writing {
            engine: self,
            before: self.mark(),
            append_tag: 0,
            _writer: writer,
        })
    }

    /// Sets the `origin` recorded on events appended from now on (local stores).
    pub fn set_origin(&self, origin: Option<String>) {
        if !self.synced {
            self.options.borrow_mut().origin = origin;
        }
    }

    /// Soft-deletes `stream`: appends a `$StreamDeleted` event to it (so it syncs, and
    /// projections see it, like any event). Reads of the stream then return only what is
    /// appended after it; its version keeps counting (the delete is one version), and an
    /// append expecting `no_stream` starts it again. `expected` is checked like any
    /// append's.
    pub async fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
    ) -> Result<AppendOutcome> {
        self.append_lifecycle(stream, crate::event::STREAM_DELETED_TYPE, expected)
            .await
    }

    /// Closes `stream` for good: appends a `$StreamClosed` event to it, after which every
    /// append to the stream fails with `STREAM_DELETED`, here, on every replica it syncs
    /// to, and on the server. Its events stay readable. `expected` is checked like any
    /// append's.
    pub async fn close_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
    ) -> Result<AppendOutcome> {
        self.append_lifecycle(stream, crate::event::STREAM_CLOSED_TYPE, expected)
            .await
    }

    /// Erases `stream`: appends a `$StreamErased` event to it, and every earlier event of
    /// the stream loses its `data` (then `null`) and `meta`, keeping its position, id,
    /// type and version and reading as `erased` ([`crate::erasure`]): here at once (the
    /// stored segments and pending events are rewritten in the append's transaction),
    /// on the server when it accepts the push, and on every replica as it pulls the
    /// erasure. A closed stream can be erased; the stream takes events after the erasure
    /// as before. `expected` is checked like any append's (a synced replica whose erasure
    /// the server rejects keeps its own copies erased).
    pub async fn erase_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
    ) -> Result<AppendOutcome> {
        self.append_lifecycle(stream, crate::event::STREAM_ERASED_TYPE, expected)
            .await
    }

    /// Appends one of annals' own lifecycle events (no data) to `stream`.
    async fn append_lifecycle(
        &self,
        stream: &str,
        event_type: &str,
        expected: ExpectedVersion,
    ) -> Result<AppendOutcome> {
        let event = NewEvent::new(stream, event_type, &serde_json::json!({}))?.expecting(expected);
        self.append(vec![event]).await
    }

    /// Appends `batch` atomically: every event is written, or none is. A batch whose
    /// events are all in the replica already, each the same event (a retry), comes back as
    /// [`AppendResult::Duplicate`]s and writes nothing; a known id with other content, or
    /// known ids mixed with new events, is [`Error::DuplicateId`] (the rules:
    /// [`crate::append::plan_append`]). More than [`Limits::max_batch_events`] events is
    /// [`Error::TooLarge`].
    pub async fn append(&self, batch: Vec<NewEvent>) -> Result<AppendOutcome> {
        self.append_tagged(batch, 0).await
    }

    /// [`Engine::append`], with `tag` (not 0) on the [`Change`] its write reports, so that
    /// a listener can tell the change that carries these events from others' (and take
    /// the events from the caller instead of reading them back).
    pub async fn append_tagged(&self, batch: Vec<NewEvent>, tag: u64) -> Result<AppendOutcome> {
        self.check_open()?;
        let max = self.options.borrow().limits.max_batch_events;
        if batch.len() > max {
            // Refused before waiting for the log or the writer: nothing to check it against.
            return Err(Error::TooLarge(format!(
                "one append takes at most {max} events (`maxBatch`); this batch has {}: \
                 split it, or raise the limit",
                batch.len()
            )));
        }
        self.complete().await?;
        let mut write = self.begin_write().await?;
        write.append_tag = tag;
        if batch.is_empty() {
            return Ok(AppendOutcome {
                results: Vec::new(),
                stream_versions: Vec::new(),
                change: write.finish(),
            });
        }
        enum Staged {
            Segment(Rc<Segment>),
            /// The batch for the outbox, with the erasures it makes (outbox records
            /// rewritten; streams erased below a version in the confirmed log).
            Pending(PendingBatch, OutboxChange, Vec<(String, u64)>),
        }
        // An erasure drops the snapshots that folded what it erases: in the same transaction.
        let erasing = batch
            .iter()
            .any(|e| e.event_type == crate::event::STREAM_ERASED_TYPE);
        // ... and the refused events of its stream that the rejected list keeps.
        let kept = if erasing && self.synced {
            self.rejected().await?
        } else {
            Vec::new()
        };
        let (results, change) = write
            .commit(
                if erasing {
                    Scope::LogAndSnapshots
                } else {
                    Scope::Log
                },
                |fresh| {
                    let log = self.log.borrow();
                    let pending = self.pending.borrow();
                    let view = ReplicaView {
                        log: &log,
                        pending: &pending,
                    };
                    let mut options = self.options.borrow_mut();
                    let options = &mut *options;
                    let now_ms = options.clock.now_ms();
                    let context = AppendContext {
                        limits: &options.limits,
                        now_ms,
                        origin: options.origin.as_deref(),
                    };
                    let ids = &mut options.ids;
                    let mut next_id = || ids.next_id(now_ms);
                    let mut commit = Commit::default();
                    let (staged, results) = if self.synced {
                        let mut outbox = OutboxBuilder::default();
                        let results =
                            plan_append(&batch, &view, &context, &mut next_id, &mut outbox)?;
                        // An erasure in the batch erases the stream's earlier events: in
                        // the batch, in the outbox, and confirmed (all before it).
                        erase_within(&mut outbox.0);
                        let erased: Vec<(String, u64)> = outbox
                            .0
                            .iter()
                            .filter(|e| e.event_type == crate::event::STREAM_ERASED_TYPE)
                            .map(|e| (e.stream.clone(), log.stream_version(&e.stream) + 1))
                            .collect();
                        let streams: Vec<&str> = erased.iter().map(|(s, _)| s.as_str()).collect();
                        let outbox_erasure = pending.plan_erasure(&streams);
                        for batch in &outbox_erasure.rewrite {
                            commit.put_pending.push(batch.encode()?);
                        }
                        for (stream, before) in &erased {
                            commit.erase.extend(log.erasable(stream, *before));
                        }
                        commit.erase.sort_unstable();
                        commit.drop_snapshots_from = commit.erase.first().copied();
                        if let Some(list) = erased_rejections(&kept, &streams)? {
                            commit.put_meta.push((META_REJECTED.into(), list));
                        }
                        let staged = (!outbox.0.is_empty()).then(|| PendingBatch {
                            seq: fresh.now.pending_seq + 1,
                            events: outbox.0,
                        });
                        if let Some(batch) = &staged {
                            commit.put_pending.push(batch.encode()?);
                        }
                        (
                            staged.map(|batch| Staged::Pending(batch, outbox_erasure, erased)),
                            results,
                        )
                    } else {
                        let size: usize = batch.iter().map(NewEvent::encoded_size_hint).sum();
                        let mut builder = SegmentBuilder::with_capacity(log.head() + 1, size);
                        let results =
                            plan_append(&batch, &view, &context, &mut next_id, &mut builder)?;
                        let staged = if builder.is_empty() {
                            None
                        } else if !erasing {
                            // Nothing in it erases (the scan for erasures is not free).
                            Some(Segment {
                                first: log.head() + 1,
                                bytes: builder.finish(),
                            })
                        } else {
                            Some(erasing_segment(
                                &log,
                                &[],
                                log.head() + 1,
                                builder.finish(),
                                &mut commit,
                            )?)
                        };
                        let staged = staged.map(Rc::new);
                        commit.segment = staged.clone();
                        (staged.map(Staged::Segment), results)
                    };
                    Ok((commit, (staged, results)))
                },
                |(staged, results)| {
                    match staged {
                        Some(Staged::Segment(segment)) => {
                            // The transaction let go of its share: the bytes move, uncopied.
                            self.log.borrow_mut().commit(Rc::unwrap_or_clone(segment))?
                        }
                        Some(Staged::Pending(batch, outbox_erasure, erased)) => {
                            let mut pending = self.pending.borrow_mut();
                            pending.apply(&outbox_erasure);
                            pending.push(batch);
                            let mut log = self.log.borrow_mut();
                            for (stream, before) in erased {
                                log.erase_stream(&stream, before)?;
                            }
                        }
                        None => {}
                    }
                    Ok(results)
                },
            )
            .await?;
        Ok(AppendOutcome {
            results: results.results,
            stream_versions: results.stream_versions,
            change,
        })
    }

    /// Reads what other writers (tabs) changed since this engine last looked.
    pub async fn catch_up(&self) -> Result<Change> {
        self.check_open()?;
        self.complete().await?;
        let write = self.begin_write().await?;
        let fresh = self.storage.changes(self.known.get()).await?;
        self.absorb(&fresh)?;
        Ok(write.finish())
    }

    /// Merges small segments, in storage and in memory.
    pub async fn compact(&self) -> Result<CompactionReport> {
        self.check_open()?;
        self.complete().await?;
        let write = self.begin_write().await?;
        let report = self.storage.compact(COMPACTION_TARGET_BYTES).await?;
        self.log
            .borrow_mut()
            .compact_memory(COMPACTION_TARGET_BYTES)?;
        // Compaction moves no event: the view is unchanged and no listener hears of it.
        write.finish();
        Ok(report)
    }

    // ---- sync: the outbox, push verdicts and pulls -------------------------------------

    /// The next events to push: the first `limit` of the outbox, in append order.
    pub fn outgoing(&self, limit: usize) -> Vec<PushEvent> {
        self.pending.borrow().outgoing(limit)
    }

    /// The next push: the first `limit` events of the outbox that fit in about `max_bytes`
    /// of request body (at least one).
    pub fn outgoing_within(&self, limit: usize, max_bytes: usize) -> Vec<PushEvent> {
        self.pending.borrow().outgoing_within(limit, max_bytes)
    }

    /// Records the server's verdicts on a push. Accepted events stay pending until a pull
    /// brings them back in server order; rejected ones leave the outbox and are kept in
    /// the rejected list, in one transaction. Returns the rejections.
    pub async fn settle_push(&self, response: &PushResponse) -> Result<Vec<Rejection>> {
        self.check_open()?;
        let refused: Vec<(&EventId, &String, Option<u64>)> = response
            .results
            .iter()
            .filter_map(|r| match r {
                PushResult::Rejected {
                    id,
                    reason,
                    actual_version,
                } => Some((id, reason, *actual_version)),
                _ => None,
            })
            .collect();
        if refused.is_empty() {
            return Ok(Vec::new());
        }
        self.complete().await?;
        let write = self.begin_write().await?;
        let kept = self.rejected().await?;
        let count = self.meta_number(META_REJECTED_COUNT).await?;
        let (rejections, _) = write
            .commit(
                Scope::Log,
                |_| {
                    let pending = self.pending.borrow();
                    let rejections: Vec<Rejection> = refused
                        .iter()
                        .filter_map(|(id, reason, actual)| {
                            let event = pending.events().find(|e| e.id == **id)?.clone();
                            Some(Rejection {
                                event,
                                reason: (*reason).clone(),
                                actual_version: *actual,
                            })
                        })
                        .collect();
                    let gone: HashSet<EventId> = rejections.iter().map(|r| r.event.id).collect();
                    let change = pending.plan_removal(&gone);
                    let mut list = kept.clone();
                    list.extend(rejections.iter().cloned());
                    let excess = list.len().saturating_sub(REJECTED_KEPT);
                    list.drain(..excess);
                    let list =
                        serde_json::to_string(&list).map_err(|e| Error::Storage(e.to_string()))?;
                    let count = count + rejections.len() as u64;
                    let commit = outbox_commit(
                        &change,
                        vec![
                            (META_REJECTED.into(), list),
                            (META_REJECTED_COUNT.into(), count.to_string()),
                        ],
                    )?;
                    Ok((commit, (change, rejections)))
                },
                |(change, rejections)| {
                    self.pending.borrow_mut().apply(&change);
                    Ok(rejections)
                },
            )
            .await?;
        Ok(rejections)
    }

    pub fn is_pending(&self, id: &EventId) -> bool {
        self.pending.borrow().contains(id)
    }

    /// Removes events from the outbox without reporting them (the server has them).
    pub async fn forget_pending(&self, ids: &HashSet<EventId>) -> Result<()> {
        self.check_open()?;
        self.complete().await?;
        let write = self.begin_write().await?;
        write
            .commit(
                Scope::Log,
                |_| {
                    let change = self.pending.borrow().plan_removal(ids);
                    Ok((outbox_commit(&change, Vec::new())?, change))
                },
                |change| {
                    self.pending.borrow_mut().apply(&change);
                    Ok(())
                },
            )
            .await?;
        Ok(())
    }

    /// Counts resets of the confirmed log (server epoch changes), so that folds over it
    /// can tell they must start again.
    pub fn log_generation(&self) -> u64 {
        self.known.get().log_generation
    }

    /// Counts the erasures of confirmed events this engine has taken in
    /// ([`crate::erasure`]; its own, pulled or another tab's), so that folds over the log
    /// can tell they folded data that is gone and must fold again (with
    /// [`Engine::log_generation`]: a reset starts the count again).
    pub fn erasures(&self) -> u64 {
        self.log.borrow().erasures()
    }

    /// The pending events the server refused (the most recent [`REJECTED_KEPT`]).
    pub async fn rejected(&self) -> Result<Vec<Rejection>> {
        match self.storage.meta(META_REJECTED).await? {
            None => Ok(Vec::new()),
            Some(json) => json::parse(&json, |r| r.list(Rejection::read))
                .map_err(|e| Error::Corrupt(format!("rejected list: {e}"))),
        }
    }

    /// The rejections stored but not announced yet (by [`Engine::mark_rejections_announced`]),
    /// oldest first (at most the [`REJECTED_KEPT`] kept), and the mark that announcing
    /// them reaches. A store from before the mark was kept has nothing unannounced.
    pub async fn unannounced_rejections(&self) -> Result<(Vec<Rejection>, u64)> {
        self.check_open()?;
        let count = self.meta_number(META_REJECTED_COUNT).await?;
        let announced = self.meta_number(META_REJECTED_ANNOUNCED).await?;
        let unannounced = usize::try_from(count.saturating_sub(announced)).unwrap_or(usize::MAX);
        if unannounced == 0 {
            return Ok((Vec::new(), count));
        }
        let mut list = self.rejected().await?;
        let from = list.len().saturating_sub(unannounced);
        Ok((list.split_off(from), count))
    }

    /// Takes the rejections stored but not announced yet: moves the mark past them first,
    /// then hands them over to be announced. Serialised with this engine's writes, so two
    /// announcers (a sync client and the one that replaces it) never both take the same
    /// ones; a crash after the mark and before the announcement (a synchronous call right
    /// after it) is the only way to miss one, and it stays in [`Engine::rejected`].
    pub async fn take_unannounced_rejections(&self) -> Result<Vec<Rejection>> {
        let _writer = self.writer.lock().await;
        let (rejections, mark) = self.unannounced_rejections().await?;
        self.mark_rejections_announced(mark).await?;
        Ok(rejections)
    }

    /// Records that the rejections up to `mark` (from [`Engine::unannounced_rejections`])
    /// were announced. The mark only moves forward.
    pub async fn mark_rejections_announced(&self, mark: u64) -> Result<()> {
        self.check_open()?;
        if self.meta_number(META_REJECTED_ANNOUNCED).await? < mark {
            self.storage
                .put_meta(META_REJECTED_ANNOUNCED, &mark.to_string())
                .await?;
        }
        Ok(())
    }

    /// A counter kept in `meta` (0 when absent).
    async fn meta_number(&self, key: &str) -> Result<u64> {
        match self.storage.meta(key).await? {
            None => Ok(0),
            Some(text) => text
                .parse()
                .map_err(|e| Error::Corrupt(format!("meta `{key}`: {e}"))),
        }
    }

    /// Applies a pull: the confirmed events, the new cursor and the removal of the pending
    /// events they confirm are written in one transaction, so a crash never leaves a
    /// cursor ahead of its events. A changed server epoch drops the confirmed log instead
    /// (pending events stay) and asks for a pull from the start.
    pub async fn apply_pull(&self, response: &PullResponse) -> Result<PullOutcome> {
        self.check_open()?;
        self.complete().await?;
        // A pending event whose id the server holds as another event can never be
        // confirmed: it is refused first, as a push would have refused it, rather than
        // removed below as if the pulled event confirmed it.
        let reused = self.reused_pending(response);
        if !reused.is_empty() {
            self.settle_push(&PushResponse {
                results: reused.clone(),
                head: 0,
                epoch: response.epoch.clone(),
            })
            .await?;
        }
        let write = self.begin_write().await?;
        // The epoch of the confirmed log on disk, not this engine's memory of it: another
        // tab may have pulled (and so set or changed it) since this one last did, and a
        // tab that takes over sync must not append a new epoch's events to an old log.
        // Read after taking in the others' changes, and checked again inside the
        // transaction: a reset in between makes this pull fail (to be retried).
        let fresh = self.storage.changes(self.known.get()).await?;
        self.absorb(&fresh)?;
        self.check_sync_target().await?;
        let known_epoch = known_epoch(self.storage.meta(META_EPOCH).await?);
        let generation = self.known.get().log_generation;
        *self.epoch.borrow_mut() = known_epoch.clone();
        let restart = known_epoch.as_deref().is_some_and(|e| e != response.epoch);
        // The streams the page erases: the refused events of theirs that the rejected list
        // keeps are erased with them.
        let erased_streams: Vec<&str> = response
            .events
            .iter()
            .filter(|e| e.event_type == crate::event::STREAM_ERASED_TYPE)
            .map(|e| e.stream.as_str())
            .collect();
        let kept = if erased_streams.is_empty() {
            Vec::new()
        } else {
            self.rejected().await?
        };
        let erasing = response
            .events
            .iter()
            .any(|e| e.event_type == crate::event::STREAM_ERASED_TYPE)
            || self
                .pending
                .borrow()
                .events()
                .any(|e| e.event_type == crate::event::STREAM_ERASED_TYPE);
        let (stale, change) = write
            .commit(
                if restart || erasing {
                    Scope::LogAndSnapshots
                } else {
                    Scope::Log
                },
                |fresh| {
                    if fresh.now.log_generation != generation {
                        return Err(Error::Storage(
                            "the confirmed log was reset during the pull; pull again".into(),
                        ));
                    }
                    let epoch_meta = vec![(META_EPOCH.to_owned(), response.epoch.clone())];
                    if restart {
                        let commit = Commit {
                            reset_log: true,
                            put_meta: epoch_meta,
                            ..Commit::default()
                        };
                        return Ok((commit, (None, OutboxChange::default(), None)));
                    }
                    let log = self.log.borrow();
                    let head = log.head();
                    let size: usize = response
                        .events
                        .iter()
                        .map(|e| {
                            e.data.get().len()
                                + e.meta.as_ref().map_or(0, |m| m.get().len())
                                + e.stream.len()
                                + e.event_type.len()
                                + e.origin.as_ref().map_or(0, String::len)
                                + 40
                        })
                        .sum();
                    let mut builder = SegmentBuilder::with_capacity(head + 1, size);
                    let mut confirmed = HashSet::with_capacity(response.events.len());
                    let mut fresh_events = response.events.iter().filter(|e| e.position > head);
                    if fresh_events
                        .clone()
                        .next()
                        .is_some_and(|e| e.position != head + 1)
                    {
                        // Stale: nothing is written or applied.
                        return Ok((Commit::default(), (None, OutboxChange::default(), None)));
                    }
                    for event in fresh_events.by_ref() {
                        if event.position != builder.next_position() {
                            return Err(Error::Storage(format!(
                                "the server sent position {} where {} was due",
                                event.position,
                                builder.next_position()
                            )));
                        }
                        builder.push(&EventRef::from_event(event));
                        confirmed.insert(event.id);
                    }
                    let change = self.pending.borrow().plan_removal(&confirmed);
                    // Erasures still waiting in the outbox come after every confirmed
                    // event: the pulled events of their streams are erased too.
                    let waiting: Vec<String> = self
                        .pending
                        .borrow()
                        .events()
                        .filter(|e| {
                            e.event_type == crate::event::STREAM_ERASED_TYPE
                                && !confirmed.contains(&e.id)
                        })
                        .map(|e| e.stream.clone())
                        .collect();
                    let mut commit = outbox_commit(
                        &change,
                        if known_epoch.is_none() {
                            epoch_meta
                        } else {
                            Vec::new()
                        },
                    )?;
                    let segment = if builder.is_empty() {
                        None
                    } else {
                        Some(erasing_segment(
                            &log,
                            &waiting,
                            head + 1,
                            builder.finish(),
                            &mut commit,
                        )?)
                    };
                    let segment = segment.map(Rc::new);
                    commit.segment = segment.clone();
                    if let Some(list) = erased_rejections(&kept, &erased_streams)? {
                        commit.put_meta.push((META_REJECTED.into(), list));
                    }
                    Ok((commit, (segment, change, Some(waiting))))
                },
                |(segment, change, waiting)| {
                    if restart {
                        self.log.borrow_mut().clear();
                    }
                    let stale = !restart && waiting.is_none();
                    if let Some(segment) = segment {
                        let mut log = self.log.borrow_mut();
                        log.commit(Rc::unwrap_or_clone(segment))?;
                        // The erasures waiting in the outbox cover what was just pulled
                        // (erased in the segment already): the log's mark follows.
                        for stream in waiting.iter().flatten() {
                            let before = log.stream_version(stream) + 1;
                            log.erase_stream(stream, before)?;
                        }
                    }
                    self.pending.borrow_mut().apply(&change);
                    *self.epoch.borrow_mut() = Some(response.epoch.clone());
                    Ok(stale)
                },
            )
            .await?;
        Ok(PullOutcome {
            change,
            restart,
            stale,
            reused: reused.len(),
        })
    }

    /// The verdicts on pending events that a pulled event's id names but whose content
    /// differs (stream, type, schema version, data or meta): another client stored another
    /// event under that id first.
    fn reused_pending(&self, response: &PullResponse) -> Vec<PushResult> {
        let pending = self.pending.borrow();
        response
            .events
            .iter()
            .filter(|pulled| pending.contains(&pulled.id))
            .filter_map(|pulled| {
                let mine = pending.events().find(|e| e.id == pulled.id)?;
                if pulled.erased || mine.erased {
                    // Erased meanwhile: what is left to compare is the stream and type.
                    return (mine.shape_digest()
                        != shape_digest(
                            &pulled.stream,
                            &pulled.event_type,
                            pulled.schema_version,
                        ))
                    .then(|| reused_reason(pulled));
                }
                let theirs = content_digest(
                    &pulled.stream,
                    &pulled.event_type,
                    pulled.schema_version,
                    pulled.data.get(),
                    pulled.meta.as_ref().map(|m| m.get()),
                );
                (mine.content_digest() != theirs).then(|| reused_reason(pulled))
            })
            .collect()
    }

    // ---- reads ----------------------------------------------------------------------------

    /// Events matching `query`: confirmed ones, then pending ones (`pending: true`, at
    /// provisional positions). Backwards (newest first), the pending ones come first.
    pub fn read(&self, query: &ReadQuery) -> Result<Vec<Event>> {
        self.check_open()?;
        query.check()?;
        let log = self.log.borrow();
        let visible = self.past_deletes(&log, query);
        let query = visible.as_ref().unwrap_or(query);
        let limit = query.limit.unwrap_or(usize::MAX);
        if query.backwards {
            let mut events = Vec::new();
            self.for_each_pending_matching(&log, query, usize::MAX, |e| {
                events.push(e.to_event(true))
            });
            events.reverse();
            events.truncate(limit);
            let rest = ReadQuery {
                limit: Some(limit - events.len()),
                ..query.clone()
            };
            if rest.limit != Some(0) {
                events.extend(log.read(&rest)?);
            }
            return Ok(events);
        }
        let mut events = log.read(query)?;
        let remaining = limit.saturating_sub(events.len());
        self.for_each_pending_matching(&log, query, remaining, |e| events.push(e.to_event(true)));
        Ok(events)
    }

    /// [`Engine::read`] as a JSON array, payloads copied verbatim.
    pub fn read_json(&self, query: &ReadQuery) -> Result<String> {
        self.check_open()?;
        query.check()?;
        let log = self.log.borrow();
        let visible = self.past_deletes(&log, query);
        let query = visible.as_ref().unwrap_or(query);
        if query.is_range() && !log.holds_after(query.after) {
            // While a lazily opened log loads: the part read so far, below the loaded log.
            if let Some(rest) = &*self.rest.borrow() {
                let to = query.to.unwrap_or(u64::MAX);
                if rest.holds_after(query.after) && to <= rest.head() {
                    return rest.read_json(query);
                }
            }
        }
        let mut out = Vec::with_capacity(256);
        out.push(b'[');
        let mut count = 0usize;
        let limit = query.limit.unwrap_or(usize::MAX);
        if query.backwards {
            // Newest first: the pending events (the newest), then the confirmed ones.
            let mut pending: Vec<Vec<u8>> = Vec::new();
            self.for_each_pending_matching(&log, query, usize::MAX, |e| {
                let mut one = Vec::with_capacity(128);
                e.write_json(&mut one, true);
                pending.push(one);
            });
            for one in pending.iter().rev().take(limit) {
                if count > 0 {
                    out.push(b',');
                }
                count += 1;
                out.extend_from_slice(one);
            }
            if count < limit {
                let rest = ReadQuery {
                    limit: Some(limit - count),
                    ..query.clone()
                };
                log.write_json(&rest, &mut out, &mut count)?;
            }
        } else {
            log.write_json(query, &mut out, &mut count)?;
            let remaining = limit.saturating_sub(count);
            self.for_each_pending_matching(&log, query, remaining, |e| {
                if out.len() > 1 {
                    out.push(b',');
                }
                e.write_json(&mut out, true);
            });
        }
        out.push(b']');
        String::from_utf8(out).map_err(|e| Error::Corrupt(e.to_string()))
    }

    /// The replica's events `after + 1 ..= to` as a JSON array.
    pub fn range_json(&self, after: u64, to: u64) -> Result<String> {
        self.read_json(&ReadQuery {
            after,
            to: Some(to),
            ..ReadQuery::default()
        })
    }

    /// The pending events from index `from` of the outbox on, as a JSON array.
    pub fn pending_json(&self, from: usize) -> Result<String> {
        self.check_open()?;
        let log = self.log.borrow();
        let after = log.head() + from as u64;
        self.range_json(after, u64::MAX)
    }

    /// A read of a stream deleted by a pending `$StreamDeleted` starts after it: the
    /// query with `fromVersion` moved past it (`None`: the query as it is; the confirmed
    /// log already skips what confirmed deletes hide).
    fn past_deletes(&self, log: &LogState, query: &ReadQuery) -> Option<ReadQuery> {
        let stream = query.stream.as_deref()?;
        let pending = self.pending.borrow();
        if pending.stream_count(stream) == 0 || !log.is_complete() {
            return None;
        }
        let (_, lifecycle) = ReplicaView {
            log,
            pending: &pending,
        }
        .stream_state(stream);
        let from = lifecycle.deleted_at + 1;
        (lifecycle.deleted_at > log.lifecycle(stream).deleted_at
            && query.from_version.is_none_or(|v| v < from))
        .then(|| ReadQuery {
            from_version: Some(from),
            ..query.clone()
        })
    }

    fn for_each_pending_matching(
        &self,
        log: &LogState,
        query: &ReadQuery,
        limit: usize,
        mut f: impl FnMut(EventRef<'_>),
    ) {
        let to = query.to.unwrap_or(u64::MAX);
        if limit == 0 || to <= log.head() {
            return;
        }
        let origin = self.client_id.as_deref();
        let mut taken = 0;
        self.pending
            .borrow()
            .for_each_provisional(log, origin, |e| {
                if taken < limit
                    && e.position > query.after
                    && e.position <= to
                    && query.matches(&e)
                    && query.matches_version(&e)
                {
                    taken += 1;
                    f(e);
                }
            });
    }

    /// Where each of `ids` stands in the replica's log (confirmed events, then pending ones
    /// at their provisional positions); `None` for an id the replica does not hold. Needs
    /// the complete log.
    pub fn positions_of(&self, ids: &[EventId]) -> Result<Vec<Option<u64>>> {
        self.check_open()?;
        if !self.is_complete() {
            return Err(Error::InvalidArgument(
                "positions of ids need the whole log loaded".into(),
            ));
        }
        let log = self.log.borrow();
        let mut found: Vec<Option<u64>> = ids.iter().map(|id| log.position_of(id)).collect();
        if found.iter().any(Option::is_none) {
            self.pending
                .borrow()
                .for_each_provisional(&log, self.client_id.as_deref(), |e| {
                    for (i, id) in ids.iter().enumerate() {
                        if found[i].is_none() && *id == e.id {
                            found[i] = Some(e.position);
                        }
                    }
                });
        }
        Ok(found)
    }

    /// Calls `f` with the confirmed events `after + 1 ..= to`, borrowed, in order.
    pub fn fold_range(&self, after: u64, to: u64, f: impl FnMut(EventRef<'_>)) -> Result<()> {
        self.check_open()?;
        self.log.borrow().for_each_in(after, to, f)
    }

    /// Calls `f` with the confirmed events of `stream` after position `after`, in order.
    pub fn fold_stream(&self, stream: &str, after: u64, f: impl FnMut(EventRef<'_>)) -> Result<()> {
        self.check_open()?;
        self.log.borrow().for_each_in_stream(stream, after, f)
    }

    /// Calls `f` with every pending event at its provisional position, in order.
    pub fn fold_pending(&self, f: impl FnMut(EventRef<'_>)) -> Result<()> {
        self.check_open()?;
        let log = self.log.borrow();
        self.pending
            .borrow()
            .for_each_provisional(&log, self.client_id.as_deref(), f);
        Ok(())
    }

    /// Calls `f` with the pending events of `stream`, in order.
    pub fn fold_pending_stream(&self, stream: &str, mut f: impl FnMut(EventRef<'_>)) -> Result<()> {
        self.check_open()?;
        let log = self.log.borrow();
        self.pending
            .borrow()
            .for_each_provisional(&log, self.client_id.as_deref(), |e| {
                if e.stream == stream {
                    f(e)
                }
            });
        Ok(())
    }

    /// The stream's version in the replica (confirmed and pending events), 0 when it has
    /// none, from the indexes (nothing is read). Needs the complete log: see
    /// [`Engine::try_stream_version`].
    pub fn stream_version(&self, stream: &str) -> u64 {
        let log = self.log.borrow();
        let pending = self.pending.borrow();
        ReplicaView {
            log: &log,
            pending: &pending,
        }
        .stream_version(stream)
    }

    /// [`Engine::stream_version`], failing while a lazily opened log is still loading
    /// (its stream index is not built yet) or once the engine is closed.
    pub fn try_stream_version(&self, stream: &str) -> Result<u64> {
        self.check_open()?;
        if !self.is_complete() {
            return Err(Error::Storage(
                "the log is still loading: stream versions wait for it".into(),
            ));
        }
        Ok(self.stream_version(stream))
    }

    /// The event with this id, if the replica has it.
    pub fn event_by_id(&self, id: &EventId) -> Result<Option<Event>> {
        let log = self.log.borrow();
        if let Some(p) = log.position_of(id) {
            return Ok(log.event(p)?.map(|e| e.to_event(false)));
        }
        let mut found = None;
        self.pending
            .borrow()
            .for_each_provisional(&log, self.client_id.as_deref(), |e| {
                if e.id == *id {
                    found = Some(e.to_event(true));
                }
            });
        Ok(found)
    }

    /// Bytes of encoded events this engine holds in memory.
    pub fn encoded_bytes(&self) -> usize {
        self.log.borrow().encoded_bytes()
    }

    // ---- snapshots and notifications ---------------------------------------------------

    /// Stores a projection snapshot; its position must be confirmed (snapshots never hold
    /// pending events, which may still move). The state is taken to be folded from the log
    /// this engine holds now: see [`Engine::put_snapshot_from`].
    pub async fn put_snapshot(&self, snapshot: &SnapshotRecord) -> Result<()> {
        self.put_snapshot_from(snapshot, self.log_generation(), self.erasures())
            .await
    }

    /// Stores a projection snapshot whose state was folded from the confirmed log of
    /// generation `log_generation` ([`Engine::log_generation`] when the fold was made).
    /// The check and the write are one storage transaction: if the confirmed log was reset
    /// since (the server's epoch changed, here or in another tab), the snapshot describes a
    /// log that is gone and is refused, so that it can never be loaded against the new one.
    pub async fn put_snapshot_from(
        &self,
        snapshot: &SnapshotRecord,
        log_generation: u64,
        erasures: u64,
    ) -> Result<()> {
        self.check_open()?;
        let write = self.begin_write().await?;
        write
            .commit(
                Scope::LogAndSnapshots,
                |fresh| {
                    if fresh.now.log_generation != log_generation {
                        return Err(Error::InvalidArgument(format!(
                            "snapshot `{}` was folded from a confirmed log that has since been \
                             reset (generation {log_generation}, now {}); it is not stored",
                            snapshot.name, fresh.now.log_generation
                        )));
                    }
                    // Read after taking in what others wrote: an erasure the state did not
                    // see means it holds data that is gone.
                    if self.erasures() != erasures {
                        return Err(Error::InvalidArgument(format!(
                            "snapshot `{}` was folded from events erased since; it is not \
                             stored",
                            snapshot.name
                        )));
                    }
                    let head = self.log.borrow().head();
                    if snapshot.position > head {
                        return Err(Error::InvalidArgument(format!(
                            "snapshot at position {} is past the confirmed head {head}",
                            snapshot.position
                        )));
                    }
                    // Retention cut the log after it (another tab, meanwhile): the events
                    // between it and the cut are gone here, so nothing could continue it,
                    // and it would replace the snapshot the cut was made against.
                    let dropped = self.log.borrow().dropped();
                    if snapshot.position < dropped {
                        return Err(Error::NotRetained {
                            message: format!(
                                "snapshot `{}` at position {} is below the retained range \
                                 (positions {} to {head} are kept): the log here cannot \
                                 continue it; it is not stored",
                                snapshot.name,
                                snapshot.position,
                                dropped + 1
                            ),
                            dropped,
                        });
                    }
                    let commit = Commit {
                        put_snapshot: Some(snapshot.clone()),
                        ..Commit::default()
                    };
                    Ok((commit, ()))
                },
                |()| Ok(()),
            )
            .await?;
        Ok(())
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

    fn notify(&self, change: Change) {
        if change.is_empty() {
            return;
        }
        let listeners: Vec<Listener> = self
            .listeners
            .borrow()
            .iter()
            .map(|(_, l)| l.clone())
            .collect();
        for listener in listeners {
            listener(change);
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

// ---- retention: bounded local storage ([`crate::retention`]) -----------------------------

/// Where a replica's log stands under retention.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetainedRange {
    /// The first confirmed position held locally (1 when nothing was dropped; the
    /// confirmed head + 1 when every confirmed event was).
    pub from: u64,
    /// The confirmed head: the last position held (pending events follow it).
    pub to: u64,
    /// Confirmed events held locally.
    pub events: u64,
    /// Confirmed events dropped by retention (positions 1 to `dropped`).
    pub dropped: u64,
}

impl<S: Storage> Engine<S> {
    /// Positions up to this one were dropped by retention (0: none).
    pub fn dropped(&self) -> u64 {
        self.log.borrow().dropped()
    }

    /// The confirmed positions this replica holds.
    pub fn retained_range(&self) -> RetainedRange {
        let log = self.log.borrow();
        RetainedRange {
            from: log.dropped() + 1,
            to: log.head(),
            events: log.head() - log.dropped(),
            dropped: log.dropped(),
        }
    }

    /// Applies `policy`: drops the confirmed events that every projection of `projections`
    /// (name and version) has a snapshot covering, keeping the newest `policy.events`
    /// confirmed ones ([`Retention::cut`]). A projection without a stored snapshot at its
    /// version keeps everything. Returns the last position dropped by this call, if any.
    /// Only a synced store may drop events: a local store's log is its only copy.
    pub async fn retain(
        &self,
        policy: Retention,
        projections: &[(&str, u32)],
    ) -> Result<Option<u64>> {
        self.check_open()?;
        policy.check()?;
        self.check_may_drop()?;
        self.complete().await?;
        let generation = self.log_generation();
        let mut covered = Some(self.confirmed_head());
        for (name, version) in projections {
            let snapshot = self.storage.snapshot(name).await?;
            covered = match snapshot {
                Some(s) if s.version == *version => covered.map(|c| c.min(s.position)),
                _ => None,
            };
        }
        let Some(through) = policy.cut(self.confirmed_head(), self.dropped(), covered) else {
            return Ok(None);
        };
        let dropped = self.drop_confirmed(through, Some(generation)).await?;
        Ok(dropped.then_some(through))
    }

    /// Drops the confirmed events up to `through` (retention's cut, without the policy's
    /// checks: the caller knows that nothing it needs is among them), in one storage
    /// transaction, with the record of the streams' places at the cut. Other handles
    /// (tabs) learn of it with their next transaction or catch-up. Pending events are
    /// never touched.
    pub async fn drop_through(&self, through: u64) -> Result<()> {
        self.check_open()?;
        self.check_may_drop()?;
        self.complete().await?;
        self.drop_confirmed(through, None).await.map(drop)
    }

    fn check_may_drop(&self) -> Result<()> {
        if !self.synced {
            return Err(Error::InvalidArgument(
                "retention drops confirmed events that the sync server keeps; a store without \
                 sync has no other copy of its log, so it keeps every event"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The cut itself; `generation`: the log generation the caller's checks were made
    /// against (a reset since then refuses the cut; then a cut already made as far, by
    /// another tab meanwhile, is no error). Whether this call dropped anything.
    async fn drop_confirmed(&self, through: u64, generation: Option<u64>) -> Result<bool> {
        let write = self.begin_write().await?;
        let (dropped, _) = write
            .commit(
                Scope::Log,
                |fresh| {
                    if generation.is_some_and(|g| g != fresh.now.log_generation) {
                        return Err(Error::Storage(
                            "the confirmed log was reset meanwhile; nothing was dropped".into(),
                        ));
                    }
                    let log = self.log.borrow();
                    if generation.is_some() && through <= log.dropped() {
                        // The policy's cut, made meanwhile by another tab: nothing to do.
                        return Ok((Commit::default(), None));
                    }
                    if through <= log.dropped() || through > log.head() {
                        return Err(Error::InvalidArgument(format!(
                            "retention may drop up to a position from {} to the confirmed head \
                             {}, not {through}",
                            log.dropped() + 1,
                            log.head()
                        )));
                    }
                    let retained = log.retained_at(through)?;
                    let commit = Commit {
                        drop_through: Some(through),
                        put_meta: vec![(META_RETAINED.to_owned(), retained.to_json()?)],
                        ..Commit::default()
                    };
                    Ok((commit, Some(retained)))
                },
                |retained| match retained {
                    Some(retained) => self.log.borrow_mut().drop_through(&retained).map(|()| true),
                    None => Ok(false),
                },
            )
            .await?;
        Ok(dropped)
    }
}

/// One write of an engine, from [`Engine::begin_write`] to [`Writing::commit`] or
/// [`Writing::finish`]: the sequence every writing method shares. It holds the writer lock
/// (writes are serialised within one engine) and tells the listeners what changed in the
/// engine's view, including other writers' events taken in on the way, even when the
/// write itself fails.
struct Writing<'e, S: Storage> {
    engine: &'e Engine<S>,
    before: Mark,
    /// Put on the change [`Writing::finish`] reports ([`Change::append_tag`]).
    append_tag: u64,
    _writer: MutexGuard<'e, ()>,
}

impl<S: Storage> Writing<'_, S> {
    /// The write's one storage transaction, then its effect on memory. `prepare` sees the
    /// store inside the transaction, with what other writers committed already taken in,
    /// and returns the commit and what `apply` makes of it in memory once it is stored. The
    /// storage may call `prepare` more than once (when its first try assumed what another
    /// tab changed): each call decides anew and only the last one's value is applied.
    async fn commit<T, R>(
        self,
        scope: Scope,
        mut prepare: impl FnMut(&Fresh) -> Result<(Commit, T)>,
        apply: impl FnOnce(T) -> Result<R>,
    ) -> Result<(R, Change)> {
        let engine = self.engine;
        let mut staged = None;
        let stored = engine
            .storage
            .transact(engine.known.get(), scope, &mut |fresh| {
                staged = None;
                engine.absorb(fresh)?;
                let (commit, value) = prepare(fresh)?;
                staged = Some(value);
                Ok(commit)
            })
            .await;
        let known = match stored {
            Ok(known) => known,
            Err(e) => {
                // Others' events read inside the failed transaction were committed: they
                // are this engine's view now.
                engine.notify(engine.change_since(self.before));
                return Err(e);
            }
        };
        let staged =
            staged.ok_or_else(|| Error::Storage("the write transaction did not run".into()))?;
        let applied = apply(staged)?;
        engine.known.set(known);
        Ok((applied, self.finish()))
    }

    /// Ends the write: tells the listeners what changed since it began, and returns it.
    fn finish(self) -> Change {
        let change = Change {
            append_tag: self.append_tag,
            ..self.engine.change_since(self.before)
        };
        self.engine.notify(change);
        change
    }
}

/// A stored epoch; empty means none (a reset for another server store clears it so).
fn known_epoch(stored: Option<String>) -> Option<String> {
    stored.filter(|epoch| !epoch.is_empty())
}

fn target_json(target: &SyncTarget) -> Result<String> {
    serde_json::to_string(target).map_err(|e| Error::Storage(e.to_string()))
}

/// The rejected list with the refused events of `streams` erased (an erasure of those
/// streams is being stored), as it is kept in meta; `None` when none needs it.
fn erased_rejections(kept: &[Rejection], streams: &[&str]) -> Result<Option<String>> {
    let erasing = |r: &Rejection| !r.event.erased && streams.contains(&r.event.stream.as_str());
    if !kept.iter().any(erasing) {
        return Ok(None);
    }
    let mut list = kept.to_vec();
    for rejection in list.iter_mut() {
        if streams.contains(&rejection.event.stream.as_str()) {
            rejection.event.erase();
        }
    }
    serde_json::to_string(&list)
        .map(Some)
        .map_err(|e| Error::Storage(e.to_string()))
}

/// The verdict on a pending event whose id the server holds as the other event `pulled`.
fn reused_reason(pulled: &Event) -> PushResult {
    PushResult::Rejected {
        id: pulled.id,
        reason: format!(
            "DUPLICATE_ID: id {} is already stored on the server as another event \
             (position {}, version {} of stream {:?}): a new event needs a new id",
            pulled.id, pulled.position, pulled.version, pulled.stream
        ),
        actual_version: None,
    }
}

/// A new confirmed segment (`bytes`, from position `first`) with the erasures it records
/// applied: to its own earlier events (in the segment), and to the confirmed events of
/// `log` (their positions added to `commit.erase`, for storage to rewrite in the same
/// transaction; the log in memory erases them when it takes the segment in). The streams
/// in `waiting` have an erasure waiting in the outbox, which comes after every confirmed
/// event: their events in the segment are erased too.
fn erasing_segment(
    log: &LogState,
    waiting: &[String],
    first: u64,
    bytes: Vec<u8>,
    commit: &mut Commit,
) -> Result<Segment> {
    let erasures = crate::erasure::erasures_in(&bytes)?;
    if erasures.is_empty() && waiting.is_empty() {
        return Ok(Segment { first, bytes });
    }
    for erasure in &erasures {
        commit
            .erase
            .extend(log.erasable(&erasure.stream, erasure.before));
    }
    // An erasure waiting in the outbox (`waiting`: its stream) follows every confirmed
    // event: the confirmed ones it erased when appended, and the ones pulled now.
    for stream in waiting {
        commit
            .erase
            .extend(log.erasable(stream, log.stream_version(stream) + 1));
    }
    commit.erase.sort_unstable();
    commit.erase.dedup();
    // Snapshots at or after the first erased event folded its data (one taken of the
    // segment's own events cannot exist yet).
    commit.drop_snapshots_from = commit.erase.first().copied();
    let bytes = crate::erasure::rewrite(&bytes, |event| {
        erasures.iter().any(|e| e.covers(event)) || waiting.iter().any(|s| s == event.stream)
    })?
    .unwrap_or(bytes);
    Ok(Segment { first, bytes })
}

fn outbox_commit(change: &OutboxChange, put_meta: Vec<(String, String)>) -> Result<Commit> {
    let mut put_pending = Vec::with_capacity(change.rewrite.len());
    for batch in &change.rewrite {
        put_pending.push(batch.encode()?);
    }
    Ok(Commit {
        put_pending,
        delete_pending: change.delete.clone(),
        put_meta,
        ..Commit::default()
    })
}
