//! The simulator: one seed drives an in-process server and 3 to 5 clients (each with one
//! or two tabs on one disk) through a faulty network and faulty disks, then heals
//! everything and checks what must hold.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use annals::clock::{FixedClock, IdSource};
use annals::codec::EventRef;
use annals::engine::Rejection;
use annals::projection::{Projection, ProjectionRunner};
use annals::retention::Retention;
use annals::storage::{Known, SnapshotRecord, Storage};
use annals::sync::client::{SyncClient, SyncError, SyncOptions, SyncReport, TransportError};
use annals::testing::memory_server::MemoryServer;
use annals::{
    AppendOutcome, AppendResult, Engine, EngineOptions, Error, Event, EventId, ExpectedVersion,
    MemoryStorage, NewEvent, ReadQuery,
};
use futures::executor::block_on;
use serde::{Deserialize, Serialize};

use crate::net::{Net, Payload, Reply, Request, SimTransport};
use crate::rng::Rng;
use crate::storage::{count, is_injected, Counters, DiskFaults, SimStorage};

pub const STORE: &str = "sim";

/// Deliberate breakage, to show that the checks catch what they claim to catch.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sabotage {
    /// The server loses its database when it restarts (acknowledged events are gone).
    pub server_forgets_on_restart: bool,
    /// A crashed client's disk comes back empty (its outbox is gone).
    pub disk_lost_on_crash: bool,
    /// Pull answers to client 0 carry a changed payload.
    pub corrupt_pulls_to_client_0: bool,
    /// Client 0's disk ignores erasures (keeps the data they remove).
    pub client_0_keeps_erased_data: bool,
}

/// The shape of one run, drawn from the seed.
#[derive(Debug, Clone)]
pub struct Config {
    pub clients: usize,
    pub tabs: Vec<usize>,
    pub steps: usize,
    pub streams: usize,
    pub push_batch: usize,
    pub pull_limit: usize,
    pub drop_request: f64,
    pub drop_response: f64,
    pub duplicate: f64,
    pub reorder: f64,
    pub disk_fail: f64,
    pub disk_yield: f64,
    pub disk_crash: f64,
    pub repeat_id: f64,
    /// Of server restarts, the share that come back with a new, empty database (a new
    /// epoch): events it had acknowledged are gone, clients must pull from the start and
    /// push what they still hold.
    pub replace_db: f64,
    /// Of new events, the share that are erasures (`$StreamErased` of a random stream).
    pub erase: f64,
    /// Of new events, the share that end a stream's life for now: deletes
    /// (`$StreamDeleted`, nine in ten) and closes (`$StreamClosed`, after which the stream
    /// takes no event on any replica or the server).
    pub lifecycle: f64,
    /// Retention: tabs now and then drop the confirmed events their snapshot covers,
    /// keeping this many (`None`: never). Only in seeds without erasures: a Rust projection
    /// cannot fold again past a cut (it has no server to ask), and an erasure makes it.
    pub retain: Option<u64>,
    /// Weights of: poll, deliver, start, timeout, crash, reload tab, restart server,
    /// partition.
    pub weights: [u32; 8],
}

impl Config {
    pub fn from_seed(rng: &mut Rng) -> Self {
        // Drawn on the side, so that adding a knob does not change the other draws.
        let mut side = Rng::new(rng.clone().next_u64() ^ 0x005e_ed0f_e90c);
        let replace_db = if side.chance(0.35) {
            0.25 + 0.5 * side.unit()
        } else {
            0.0
        };
        let erase = if side.chance(0.6) {
            0.01 + 0.05 * side.unit()
        } else {
            0.0
        };
        let retain = (erase == 0.0 && side.chance(0.7)).then(|| side.between(1, 8));
        let lifecycle = if side.chance(0.5) {
            0.005 + 0.025 * side.unit()
        } else {
            0.0
        };
        let clients = rng.between(3, 5) as usize;
        let tabs = (0..clients).map(|_| rng.between(1, 2) as usize).collect();
        // Some seeds are calm, some stormy.
        let storm = rng.unit();
        let p = |rng: &mut Rng, max: f64| storm * max * (0.5 + rng.unit());
        Config {
            clients,
            tabs,
            steps: rng.between(200, 400) as usize,
            streams: rng.between(2, 5) as usize,
            push_batch: rng.between(1, 6) as usize,
            pull_limit: rng.between(1, 8) as usize,
            drop_request: p(rng, 0.15),
            drop_response: p(rng, 0.15),
            duplicate: p(rng, 0.15),
            reorder: p(rng, 0.5),
            disk_fail: p(rng, 0.08),
            disk_yield: 0.1 + 0.4 * rng.unit(),
            disk_crash: 0.3,
            repeat_id: 0.03 + 0.12 * rng.unit(),
            replace_db,
            erase,
            lifecycle,
            retain,
            weights: [
                30,
                30,
                22,
                2 + (storm * 4.0) as u32,
                (storm * 3.0) as u32,
                (storm * 2.0) as u32,
                (storm * 2.0) as u32,
                (storm * 4.0) as u32,
            ],
        }
    }
}

/// What one seed did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub seeds: u64,
    pub clients: u64,
    pub tabs: u64,
    pub steps: u64,
    /// Events written by appends (attempts; an id re-appended after a rejection counts again).
    pub appended: u64,
    /// Events in the server's log at the end.
    pub confirmed: u64,
    /// Rejections persisted in the clients' rejected lists.
    pub rejected: u64,
    /// ... of which the live `on_rejected` listener announced.
    pub announced: u64,
    /// Appends refused locally (wrong expected version).
    pub local_conflicts: u64,
    /// Re-appended ids answered with the existing event.
    pub idempotent_retries: u64,
    pub syncs: u64,
    pub faults: BTreeMap<&'static str, u64>,
    pub lost: u64,
    pub duplicated: u64,
    /// Events erased in the server's log at the end.
    pub erased: u64,
    /// Tabs whose log retention had cut at the end (their events up to the cut were only
    /// on the server).
    pub cut: u64,
    pub diverged: u64,
    pub dropped: u64,
}

impl Figures {
    pub fn add(&mut self, other: &Figures) {
        self.seeds += other.seeds;
        self.clients += other.clients;
        self.tabs += other.tabs;
        self.steps += other.steps;
        self.appended += other.appended;
        self.confirmed += other.confirmed;
        self.rejected += other.rejected;
        self.announced += other.announced;
        self.local_conflicts += other.local_conflicts;
        self.idempotent_retries += other.idempotent_retries;
        self.syncs += other.syncs;
        for (k, v) in &other.faults {
            *self.faults.entry(k).or_default() += v;
        }
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.erased += other.erased;
        self.cut += other.cut;
        self.diverged += other.diverged;
        self.dropped += other.dropped;
    }
}

/// The result of one seed.
#[derive(Debug)]
pub struct Run {
    pub figures: Figures,
    pub violations: Vec<String>,
    /// A fingerprint of everything that happened (equal for equal seeds).
    pub fingerprint: u64,
    pub trace: Vec<String>,
}

// ---- the projection every replica folds --------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub events: u64,
    pub hash: u64,
    /// Per stream: (last version, sum of `n`).
    pub streams: BTreeMap<String, (u64, i64)>,
    /// Events whose version did not follow their stream's last one.
    pub gaps: u64,
}

pub struct DigestProjection;

impl Projection for DigestProjection {
    type State = Digest;

    fn name(&self) -> &str {
        "digest"
    }

    fn initial(&self) -> Digest {
        Digest::default()
    }

    fn apply(&self, state: &mut Digest, event: &EventRef<'_>) {
        state.events += 1;
        let mut h = state.hash ^ event.position.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for chunk in event.id.as_bytes().chunks(8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            h = (h.rotate_left(23) ^ u64::from_le_bytes(word)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        }
        state.hash = h;
        let n = event.data_as::<Data>().map(|p| p.n).unwrap_or(i64::MIN / 4);
        let entry = state.streams.entry(event.stream.to_owned()).or_default();
        if event.version != entry.0 + 1 {
            state.gaps += 1;
        }
        entry.0 = event.version;
        entry.1 = entry.1.wrapping_add(n);
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Data {
    n: i64,
}

pub fn digest_of(events: &[Event]) -> Digest {
    let mut state = Digest::default();
    for e in events {
        DigestProjection.apply(&mut state, &EventRef::from_event(e));
    }
    state
}

// ---- ids -----------------------------------------------------------------------------------

/// Unique ids for the whole run (client ids and event ids), never repeated by a restart.
struct SimIds {
    next: Rc<Cell<u64>>,
    tag: u8,
}

fn make_id(tag: u8, n: u64) -> EventId {
    let mut b = [0u8; 16];
    b[0] = tag;
    b[6] = 0x70;
    b[8] = 0x80;
    b[10..].copy_from_slice(&n.to_be_bytes()[2..]);
    EventId(b)
}

impl IdSource for SimIds {
    fn next_id(&mut self, _now_ms: u64) -> EventId {
        self.next.set(self.next.get() + 1);
        make_id(self.tag, self.next.get())
    }
}

// ---- clients -------------------------------------------------------------------------------

type Op = Pin<Box<dyn Future<Output = Done>>>;

enum Done {
    Append(Result<AppendOutcome, Error>),
    Sync(Result<SyncReport, SyncError>),
    Other(&'static str, Result<(), Error>),
}

/// An append in flight: its ids, and those the replica did not hold when it began.
#[derive(Debug, Clone)]
struct AppendInfo {
    ids: Vec<EventId>,
}

struct Running {
    fut: Op,
    append: Option<AppendInfo>,
}

struct Tab {
    engine: Rc<Engine<SimStorage>>,
    runner: ProjectionRunner<DigestProjection>,
    sync_op: Option<Running>,
    local_op: Option<Running>,
}

struct Client {
    disk: MemoryStorage,
    faults: Rc<DiskFaults>,
    clock: FixedClock,
    tabs: Vec<Tab>,
    leader: usize,
    sync: Rc<SyncClient<SimTransport>>,
    client_id: String,
    /// Silently cut off: its messages are lost (it learns by timing out).
    partitioned: bool,
    /// The server epoch of the confirmed log on its disk, when last looked at.
    epoch_on_disk: Option<String>,
}

#[derive(Debug, Clone)]
struct Template {
    stream: String,
    n: i64,
    expected: ExpectedVersion,
    /// A `$StreamErased` (its stream's earlier events lose their data).
    erasure: bool,
    /// A `$StreamDeleted` or a `$StreamClosed`.
    lifecycle: Option<&'static str>,
}

/// The text only event `id`'s data holds: what must be found nowhere once it is erased.
fn tag_of(id: &EventId) -> String {
    format!("<tag-{}>", short(id))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Sync,
    Local,
}

type Outcome<T = ()> = Result<T, String>;

pub struct Sim {
    rng: Rng,
    cfg: Config,
    sabotage: Sabotage,
    server: Rc<MemoryServer>,
    server_ids: Vec<EventId>,
    /// The logs of the server's earlier epochs (databases replaced).
    old_logs: Vec<Vec<EventId>>,
    /// (client, id): events gone with a replaced database that the client no longer held
    /// as pending when it learned of the new epoch (it had them confirmed): their loss is
    /// by design.
    forgivable: BTreeSet<(usize, EventId)>,
    /// Events acknowledged by databases since replaced.
    old_acked: BTreeSet<EventId>,
    net: Rc<Net>,
    clients: Vec<Client>,
    counters: Counters,
    ids: Rc<Cell<u64>>,
    now: u64,
    healing: bool,
    templates: BTreeMap<EventId, Template>,
    template_ids: Vec<EventId>,
    attempts: BTreeMap<(usize, EventId), u32>,
    attempt_order: Vec<Vec<EventId>>,
    in_doubt: Vec<Vec<AppendInfo>>,
    in_flight: Vec<BTreeSet<EventId>>,
    reported: Rc<RefCell<Vec<(usize, EventId)>>>,
    acked: BTreeSet<EventId>,
    client_index: BTreeMap<String, usize>,
    figures: Figures,
    fingerprint: u64,
    trace: Option<Vec<String>>,
}

/// Runs one seed to the end and checks it.
pub fn run_seed(seed: u64, sabotage: Sabotage, trace: bool) -> Run {
    let mut sim = Sim::new(seed, sabotage, trace);
    let mut violations = Vec::new();
    if let Err(v) = sim.simulate() {
        violations.push(v);
    } else {
        violations.extend(sim.check_final());
    }
    Run {
        figures: sim.figures.clone(),
        violations,
        fingerprint: sim.fingerprint,
        trace: sim.trace.take().unwrap_or_default(),
    }
}

impl Sim {
    fn new(seed: u64, sabotage: Sabotage, trace: bool) -> Self {
        let mut rng = Rng::new(seed);
        let cfg = Config::from_seed(&mut rng);
        let clients = cfg.clients;
        let mut sim = Sim {
            rng,
            sabotage,
            server: Rc::new(MemoryServer::new()),
            server_ids: Vec::new(),
            old_logs: Vec::new(),
            forgivable: BTreeSet::new(),
            old_acked: BTreeSet::new(),
            net: Rc::new(Net::new(clients)),
            clients: Vec::new(),
            counters: Counters::default(),
            ids: Rc::new(Cell::new(0)),
            now: 1_700_000_000_000,
            healing: false,
            templates: BTreeMap::new(),
            template_ids: Vec::new(),
            attempts: BTreeMap::new(),
            attempt_order: vec![Vec::new(); clients],
            in_doubt: vec![Vec::new(); clients],
            in_flight: vec![BTreeSet::new(); clients],
            reported: Rc::default(),
            acked: BTreeSet::new(),
            client_index: BTreeMap::new(),
            figures: Figures {
                seeds: 1,
                clients: clients as u64,
                tabs: cfg.tabs.iter().sum::<usize>() as u64,
                ..Figures::default()
            },
            fingerprint: seed,
            trace: trace.then(Vec::new),
            cfg,
        };
        let config = format!("config {:?}", sim.cfg);
        sim.log(|| config);
        sim
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            trace.push(line());
        }
    }

    fn mix(&mut self, value: u64) {
        self.fingerprint =
            (self.fingerprint.rotate_left(17) ^ value).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn count(&self, kind: &'static str) {
        count(&self.counters, kind);
    }

    // ---- set-up and restarts ----------------------------------------------------------------

    fn simulate(&mut self) -> Outcome {
        for c in 0..self.cfg.clients {
            let faults = Rc::new(DiskFaults::new(
                self.rng.fork(),
                self.cfg.disk_yield,
                self.cfg.disk_fail,
                self.cfg.disk_crash,
                self.counters.clone(),
            ));
            faults
                .keeps_erased_data
                .set(c == 0 && self.sabotage.client_0_keeps_erased_data);
            let client = Client {
                disk: MemoryStorage::new(),
                faults,
                clock: FixedClock::at(self.now),
                tabs: Vec::new(),
                leader: 0,
                sync: Rc::new(SyncClient::new(
                    SimTransport {
                        net: self.net.clone(),
                        client: c,
                    },
                    SyncOptions::default(),
                )),
                client_id: String::new(),
                partitioned: false,
                epoch_on_disk: None,
            };
            self.clients.push(client);
            self.start_client(c)?;
        }
        for step in 0..self.cfg.steps {
            self.figures.steps += 1;
            self.now += self.rng.between(1, 40);
            for client in &self.clients {
                client.clock.set(self.now);
            }
            let action = self.rng.weighted(&self.cfg.weights);
            self.mix(action as u64);
            self.step(action).map_err(|e| format!("step {step}: {e}"))?;
            let queue = self.net.queue.borrow().len() as u64;
            self.mix(queue ^ (self.server_ids.len() as u64) << 32);
        }
        self.heal()
    }

    fn options(&self, c: usize) -> EngineOptions {
        EngineOptions {
            clock: Box::new(self.clients[c].clock.clone()),
            ids: Box::new(SimIds {
                next: self.ids.clone(),
                tag: 0xc1,
            }),
            synced: true,
            ..EngineOptions::default()
        }
    }

    /// Opens a tab on client `c`'s disk; a start-up that the disk fails is tried again,
    /// as a restarted app would.
    fn open_tab(&mut self, c: usize) -> Outcome<Tab> {
        for attempt in 0..12 {
            let faults = self.clients[c].faults.clone();
            if attempt >= 8 {
                faults.active.set(false);
            }
            let storage = SimStorage {
                inner: self.clients[c].disk.another_handle(),
                faults: faults.clone(),
            };
            let options = self.options(c);
            let opened = block_on(async {
                let engine = Engine::open(storage, options).await?;
                let runner = ProjectionRunner::open(&engine, DigestProjection).await?;
                Ok::<_, Error>((engine, runner))
            });
            faults.active.set(!self.healing);
            if faults.is_dead() {
                faults.revive();
                self.count("crash: during start-up");
            }
            match opened {
                Ok((engine, runner)) => {
                    return Ok(Tab {
                        engine: Rc::new(engine),
                        runner,
                        sync_op: None,
                        local_op: None,
                    });
                }
                Err(e) if is_injected(&e) => continue,
                Err(e) => return Err(format!("client {c} could not open its store: {e}")),
            }
        }
        Err(format!("client {c} could not open its store in 12 tries"))
    }

    fn new_sync_client(&self, c: usize) -> Rc<SyncClient<SimTransport>> {
        let sync = SyncClient::new(
            SimTransport {
                net: self.net.clone(),
                client: c,
            },
            SyncOptions {
                push_batch: self.cfg.push_batch,
                pull_limit: self.cfg.pull_limit,
                long_poll_seconds: 0,
                ..SyncOptions::default()
            },
        );
        let reported = self.reported.clone();
        sync.on_rejected(move |r: &Rejection| reported.borrow_mut().push((c, r.event.id)));
        Rc::new(sync)
    }

    /// (Re)starts client `c` from its disk: every tab opens again, the first one syncs.
    fn start_client(&mut self, c: usize) -> Outcome {
        let tabs = self.cfg.tabs[c];
        let mut opened = Vec::new();
        for _ in 0..tabs {
            opened.push(self.open_tab(c)?);
        }
        let client_id = opened[0]
            .engine
            .client_id()
            .ok_or("a synced store has no client id")?
            .to_owned();
        self.client_index.insert(client_id.clone(), c);
        let sync = self.new_sync_client(c);
        let client = &mut self.clients[c];
        client.tabs = opened;
        client.leader = 0;
        client.sync = sync;
        client.client_id = client_id;
        self.resolve_in_doubt(c)?;
        self.check_replica(c)
    }

    /// Appends cut short by a crash: what they wrote, if anything, is on the disk now.
    fn resolve_in_doubt(&mut self, c: usize) -> Outcome {
        let doubtful = std::mem::take(&mut self.in_doubt[c]);
        if doubtful.is_empty() {
            return Ok(());
        }
        let engine = self.clients[c].tabs[0].engine.clone();
        // The simulator's own look at the disk: no faults.
        let faults = self.clients[c].faults.clone();
        faults.active.set(false);
        let rejected = block_on(engine.rejected()).map_err(|e| e.to_string());
        faults.active.set(!self.healing);
        let rejected = rejected?;
        for info in doubtful {
            let mut seen = BTreeSet::new();
            let mut written = Vec::new();
            let mut absent = Vec::new();
            for id in info.ids {
                if !seen.insert(id) {
                    continue;
                }
                let attempts = self.attempts.get(&(c, id)).copied().unwrap_or(0);
                let refused = rejected.iter().filter(|r| r.event.id == id).count() as u32;
                let confirmed = engine.confirmed_head() > 0
                    && engine
                        .event_by_id(&id)
                        .map_err(|e| e.to_string())?
                        .is_some_and(|e| !e.pending);
                if attempts > refused || confirmed {
                    continue; // held before this append: it could not have written it
                }
                if engine.is_pending(&id) {
                    written.push(id);
                } else {
                    absent.push(id);
                }
            }
            if !written.is_empty() && !absent.is_empty() {
                return Err(format!(
                    "client {c}: a batch cut by a crash is half there: {written:?} written, {absent:?} not"
                ));
            }
            for id in written {
                *self.attempts.entry((c, id)).or_default() += 1;
                self.count("crash: append committed, then lost its answer");
            }
        }
        Ok(())
    }

    /// The process of client `c` dies: every tab, every operation in flight. Its disk
    /// stays (unless sabotaged) and it starts again from it.
    fn crash(&mut self, c: usize) -> Outcome {
        self.log(|| format!("crash client {c}"));
        let client = &mut self.clients[c];
        for tab in client.tabs.drain(..) {
            for running in [tab.sync_op, tab.local_op].into_iter().flatten() {
                if let Some(info) = running.append {
                    self.in_doubt[c].push(info);
                }
            }
        }
        client.faults.revive();
        self.note_resets(c)?;
        self.in_flight[c].clear();
        self.net.abandon(c);
        if self.sabotage.disk_lost_on_crash {
            self.clients[c].disk = MemoryStorage::new();
            self.in_doubt[c].clear();
        }
        self.start_client(c)
    }

    // ---- one step -----------------------------------------------------------------------------

    fn step(&mut self, action: usize) -> Outcome {
        match action {
            0 => self.poll_random(),
            1 => self.deliver_random(),
            2 => self.start_random(),
            3 => {
                let waiting = self.net.waiting();
                if !waiting.is_empty() {
                    let slot = &waiting[self.rng.below(waiting.len())];
                    if self
                        .net
                        .answer(slot, Err(TransportError::Unreachable("timed out".into())))
                    {
                        self.count("net: request timed out");
                    }
                }
                Ok(())
            }
            4 => {
                let c = self.rng.below(self.cfg.clients);
                self.count("crash: between operations");
                self.crash(c)
            }
            5 => self.reload_tab(),
            6 => self.restart_server(),
            _ => {
                let c = self.rng.below(self.cfg.clients);
                let client = &mut self.clients[c];
                if client.partitioned || self.net.is_offline(c) {
                    client.partitioned = false;
                    self.net.set_offline(c, false);
                    self.log(|| format!("client {c} reconnects"));
                } else if self.rng.chance(0.5) {
                    client.partitioned = true;
                    count(&self.counters, "net: partition (silent)");
                    self.log(|| format!("client {c} partitioned"));
                } else {
                    self.net.set_offline(c, true);
                    count(&self.counters, "net: partition (offline)");
                    self.log(|| format!("client {c} offline"));
                }
                Ok(())
            }
        }
    }

    fn running_ops(&self) -> Vec<(usize, usize, Which)> {
        let mut out = Vec::new();
        for (c, client) in self.clients.iter().enumerate() {
            for (t, tab) in client.tabs.iter().enumerate() {
                if tab.sync_op.is_some() {
                    out.push((c, t, Which::Sync));
                }
                if tab.local_op.is_some() {
                    out.push((c, t, Which::Local));
                }
            }
        }
        out
    }

    fn poll_random(&mut self) -> Outcome {
        let ops = self.running_ops();
        if ops.is_empty() {
            return self.start_random();
        }
        let (c, t, which) = ops[self.rng.below(ops.len())];
        self.poll_op(c, t, which).map(|_| ())
    }

    /// Polls one operation once; `true` when it finished.
    fn poll_op(&mut self, c: usize, t: usize, which: Which) -> Outcome<bool> {
        let tab = &mut self.clients[c].tabs[t];
        let slot = match which {
            Which::Sync => &mut tab.sync_op,
            Which::Local => &mut tab.local_op,
        };
        let Some(mut running) = slot.take() else {
            return Ok(true);
        };
        let mut cx = Context::from_waker(Waker::noop());
        let polled = running.fut.as_mut().poll(&mut cx);
        self.note_resets(c)?;
        let dead = self.clients[c].faults.is_dead();
        match polled {
            Poll::Pending => {
                let tab = &mut self.clients[c].tabs[t];
                match which {
                    Which::Sync => tab.sync_op = Some(running),
                    Which::Local => tab.local_op = Some(running),
                }
                if dead {
                    self.crash(c)?;
                }
                Ok(false)
            }
            Poll::Ready(done) => {
                if dead {
                    // The process died in this operation: its outcome was never seen.
                    if let Some(info) = running.append {
                        self.in_doubt[c].push(info);
                    }
                    self.crash(c)?;
                    return Ok(true);
                }
                self.finish(c, t, running.append, done)?;
                Ok(true)
            }
        }
    }

    fn finish(&mut self, c: usize, t: usize, append: Option<AppendInfo>, done: Done) -> Outcome {
        match done {
            Done::Append(result) => {
                let info = append.ok_or("an append without its batch")?;
                for id in &info.ids {
                    self.in_flight[c].remove(id);
                }
                match result {
                    Ok(outcome) => {
                        if outcome.results.len() != info.ids.len() {
                            return Err(format!(
                                "client {c}: {} results for a batch of {}",
                                outcome.results.len(),
                                info.ids.len()
                            ));
                        }
                        for (id, result) in info.ids.iter().zip(&outcome.results) {
                            match result {
                                AppendResult::Appended(_) => {
                                    // An id retention dropped here is new to the replica
                                    // again; the server holds it and answers `duplicate`.
                                    let dropped = self.clients[c].tabs[t].engine.dropped();
                                    let cut_away = self
                                        .server_ids
                                        .iter()
                                        .take(dropped as usize)
                                        .any(|known| known == id);
                                    if cut_away {
                                        self.count("retention: an id dropped here appended again");
                                    } else {
                                        *self.attempts.entry((c, *id)).or_default() += 1;
                                        self.attempt_order[c].push(*id);
                                    }
                                    self.figures.appended += 1;
                                }
                                AppendResult::Duplicate(_) => self.figures.idempotent_retries += 1,
                            }
                        }
                        self.log(|| format!("client {c} tab {t} appended {:?}", outcome.results));
                    }
                    Err(Error::WrongExpectedVersion { .. }) => self.figures.local_conflicts += 1,
                    // A stream this replica knows closed takes nothing more; nothing written.
                    Err(Error::StreamDeleted(_)) => {
                        self.count("append refused: its stream is closed")
                    }
                    // A batch is wholly a retry or wholly new: one that mixes a known
                    // event with new ones is refused, writing nothing. Templates keep an
                    // id's content, so a known id never comes with other content here.
                    Err(e @ Error::DuplicateId { .. })
                        if e.to_string().contains("mixes retries") =>
                    {
                        self.count("a batch mixing retries with new events refused");
                    }
                    Err(e) if is_injected(&e) => {}
                    Err(e) => return Err(format!("client {c}: append failed: {e}")),
                }
            }
            Done::Sync(result) => match result {
                Ok(report) => {
                    self.figures.syncs += 1;
                    self.log(|| format!("client {c} synced: {report:?}"));
                }
                Err(SyncError::Transport(TransportError::Unreachable(_))) => {}
                Err(SyncError::Store(e)) if is_injected(&e) => {}
                Err(e) => return Err(format!("client {c}: sync failed: {e}")),
            },
            Done::Other(what, result) => match result {
                Ok(()) => {}
                // Another tab cut the log past the snapshot meanwhile: refused, as it must be.
                Err(Error::NotRetained { .. }) => {
                    self.count("snapshot refused: below the retention cut");
                }
                // The log was reset while the cut was planned: nothing was dropped.
                Err(Error::Storage(m)) if m.contains("reset meanwhile") => {
                    self.count("retention refused: its log was reset meanwhile");
                }
                // The log was reset while the snapshot waited: refused, as it must be.
                Err(Error::InvalidArgument(m)) if m.contains("since been reset") => {
                    self.count("snapshot refused: its log was reset meanwhile");
                }
                // Likewise when events it folded were erased meanwhile.
                Err(Error::InvalidArgument(m)) if m.contains("erased since") => {
                    self.count("snapshot refused: what it folded was erased meanwhile");
                }
                Err(e) if is_injected(&e) => {}
                Err(e) => return Err(format!("client {c}: {what} failed: {e}")),
            },
        }
        self.follow(c, t)?;
        self.check_replica(c)
    }

    /// Folds what tab `t` of client `c` holds beyond its projection's position. A
    /// projection that lagged behind a retention cut (another tab of its client cut while
    /// it had not folded up to there) cannot: it is opened again from the snapshot that
    /// covers the cut.
    fn follow(&mut self, c: usize, t: usize) -> Outcome {
        let tab = &mut self.clients[c].tabs[t];
        match tab.runner.catch_up(&tab.engine) {
            Ok(()) => Ok(()),
            Err(Error::NotRetained { .. }) => {
                let engine = tab.engine.clone();
                // The simulator's own look at the disk: no faults.
                let faults = self.clients[c].faults.clone();
                faults.active.set(false);
                let reopened = block_on(ProjectionRunner::open(&*engine, DigestProjection));
                faults.active.set(!self.healing);
                self.clients[c].tabs[t].runner = reopened.map_err(|e| {
                    format!("client {c}: a projection behind the retention cut does not open again: {e}")
                })?;
                self.count("retention: a projection behind the cut opened again from its snapshot");
                Ok(())
            }
            Err(e) => Err(format!("client {c}: projection: {e}")),
        }
    }

    fn start_random(&mut self) -> Outcome {
        let c = self.rng.below(self.cfg.clients);
        let t = self.rng.below(self.clients[c].tabs.len());
        let client = &self.clients[c];
        let tab = &client.tabs[t];
        if t == client.leader && tab.sync_op.is_none() && self.rng.chance(0.45) {
            self.start_sync(c);
            return Ok(());
        }
        if tab.local_op.is_some() {
            return Ok(());
        }
        let engine = tab.engine.clone();
        // A retention cut (weight 0 without retention: the other draws stay as they were).
        let retain = self.cfg.retain;
        let kind = self
            .rng
            .weighted(&[70, 10, 12, 8, if retain.is_some() { 10 } else { 0 }]);
        let running = match kind {
            0 => self.start_append(c, t),
            1 => Running {
                fut: Box::pin(async move {
                    Done::Other("catch-up", engine.catch_up().await.map(|_| ()))
                }),
                append: None,
            },
            3 => Running {
                fut: Box::pin(async move {
                    Done::Other("compaction", engine.compact().await.map(|_| ()))
                }),
                append: None,
            },
            // A snapshot; with retention, then a cut up to what it covers (as the
            // TypeScript runtime applies the policy after its snapshots).
            _ => {
                self.follow(c, t)?;
                let tab = &mut self.clients[c].tabs[t];
                let record = SnapshotRecord {
                    name: "digest".into(),
                    version: 1,
                    position: tab.runner.position(),
                    state: serde_json::to_string(tab.runner.state()).map_err(|e| e.to_string())?,
                };
                let generation = tab.runner.log_generation();
                let erasures = engine.erasures();
                let cut = (kind == 4).then(|| Retention::events(retain.unwrap_or(1)));
                if cut.is_some() {
                    self.log(|| format!("client {c} tab {t}: snapshot, then retention"));
                }
                let counters = self.counters.clone();
                Running {
                    fut: Box::pin(async move {
                        let stored = engine
                            .put_snapshot_from(&record, generation, erasures)
                            .await;
                        match (stored, cut) {
                            (Ok(()), Some(policy)) => {
                                let cut = engine.retain(policy, &[("digest", 1)]).await;
                                if let Ok(Some(_)) = cut {
                                    count(&counters, "retention: cut");
                                }
                                Done::Other("retention", cut.map(|_| ()))
                            }
                            (stored, _) => Done::Other("snapshot", stored),
                        }
                    }),
                    append: None,
                }
            }
        };
        self.clients[c].tabs[t].local_op = Some(running);
        Ok(())
    }

    fn start_sync(&mut self, c: usize) {
        let client = &mut self.clients[c];
        let engine = client.tabs[client.leader].engine.clone();
        let sync = client.sync.clone();
        let leader = client.leader;
        client.tabs[leader].sync_op = Some(Running {
            fut: Box::pin(async move { Done::Sync(sync.sync(&engine).await) }),
            append: None,
        });
    }

    fn start_append(&mut self, c: usize, t: usize) -> Running {
        let engine = self.clients[c].tabs[t].engine.clone();
        let size = 1 + self.rng.weighted(&[6, 3, 1]);
        let mut planned: BTreeMap<String, u64> = BTreeMap::new();
        let mut events = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..size {
            let reuse = !self.template_ids.is_empty() && self.rng.chance(self.cfg.repeat_id);
            let id = if reuse {
                let id = self.template_ids[self.rng.below(self.template_ids.len())];
                if self.in_flight[c].contains(&id) || ids.contains(&id) {
                    // Another tab of this client is appending it right now, or it is in
                    // this batch already (one id twice in a batch is an invalid event).
                    continue;
                }
                id
            } else {
                let stream = format!("s{}", self.rng.below(self.cfg.streams));
                let version = *planned
                    .entry(stream.clone())
                    .or_insert_with(|| engine.stream_version(&stream));
                let erasure = self.cfg.erase > 0.0 && self.rng.chance(self.cfg.erase);
                let lifecycle =
                    (!erasure && self.cfg.lifecycle > 0.0 && self.rng.chance(self.cfg.lifecycle))
                        .then(|| {
                            if self.rng.chance(0.1) {
                                "$StreamClosed"
                            } else {
                                "$StreamDeleted"
                            }
                        });
                let roll = self.rng.unit();
                let expected = if erasure {
                    // Erasures expect nothing (a rejected one would leave this replica's
                    // copies erased while the server's are not).
                    ExpectedVersion::Any
                } else if roll < 0.45 {
                    ExpectedVersion::Any
                } else if roll < 0.55 {
                    ExpectedVersion::NoStream
                } else if roll < 0.65 {
                    ExpectedVersion::Exists
                } else if roll < 0.95 {
                    ExpectedVersion::Exact(version)
                } else {
                    ExpectedVersion::Exact(version + 1)
                };
                planned.insert(stream.clone(), version + 1);
                self.ids.set(self.ids.get() + 1);
                let id = make_id(0xe0, self.ids.get());
                let n = self.rng.between(0, 1000) as i64 - 500;
                self.templates.insert(
                    id,
                    Template {
                        stream,
                        n,
                        expected,
                        erasure,
                        lifecycle,
                    },
                );
                self.template_ids.push(id);
                id
            };
            let template = &self.templates[&id];
            let event = NewEvent::new(
                template.stream.clone(),
                if template.erasure {
                    "$StreamErased"
                } else {
                    template.lifecycle.unwrap_or("Noted")
                },
                &serde_json::json!({ "n": template.n, "tag": tag_of(&id) }),
            )
            .expect("a JSON payload")
            .with_id(id)
            .expecting(template.expected);
            events.push(event);
            ids.push(id);
        }
        self.in_flight[c].extend(ids.iter().copied());
        self.log(|| {
            let ids: Vec<String> = ids.iter().map(short).collect();
            format!("client {c} tab {t} appends {}", ids.join(" "))
        });
        Running {
            fut: Box::pin(async move { Done::Append(engine.append(events).await) }),
            append: Some(AppendInfo { ids }),
        }
    }

    fn deliver_random(&mut self) -> Outcome {
        let len = self.net.queue.borrow().len();
        if len == 0 {
            return self.poll_random();
        }
        let index = if self.rng.chance(self.cfg.reorder) {
            self.rng.below(len)
        } else {
            0
        };
        if index > 0 {
            self.count("net: message reordered");
        }
        self.deliver(index, true)
    }

    fn serve(&mut self, request: &Request, client: usize) -> Reply {
        match request {
            Request::Push(push) => {
                let response = self.server.push(STORE, push);
                for result in &response.results {
                    if let annals::protocol::PushResult::Ok { id, .. } = result {
                        self.acked.insert(*id);
                    }
                }
                let head = self.server.head(STORE) as usize;
                if head > self.server_ids.len() {
                    let pulled = self
                        .server
                        .pull(STORE, self.server_ids.len() as u64, usize::MAX);
                    self.server_ids.extend(pulled.events.iter().map(|e| e.id));
                }
                Reply::Push(response)
            }
            Request::Pull { after, limit } => {
                let mut response = self.server.pull(STORE, *after, *limit);
                if self.sabotage.corrupt_pulls_to_client_0 && client == 0 {
                    if let Some(e) = response.events.first_mut() {
                        e.data = serde_json::value::RawValue::from_string("{\"n\":12345}".into())
                            .expect("JSON");
                    }
                }
                Reply::Pull(response)
            }
        }
    }

    /// Delivers message `index` of the queue: a request reaches the server (perhaps twice,
    /// perhaps never), an answer reaches its client (unless it gave up waiting).
    fn deliver(&mut self, index: usize, faults: bool) -> Outcome {
        let message = self.net.queue.borrow_mut().remove(index);
        let client = message.slot.client;
        let cut_off = faults && self.clients[client].partitioned;
        match message.payload {
            Payload::Request(request) => {
                if cut_off {
                    self.count("net: request lost (partition)");
                    return Ok(());
                }
                if faults && self.rng.chance(self.cfg.drop_request) {
                    self.count("net: request lost");
                    return Ok(());
                }
                let reply = self.serve(&request, client);
                self.log(|| describe(client, &request, &reply));
                self.mix(self.server_ids.len() as u64);
                if faults && self.rng.chance(self.cfg.duplicate) {
                    self.count("net: request duplicated");
                    self.net.queue.borrow_mut().push(crate::net::Message {
                        slot: message.slot.clone(),
                        payload: Payload::Request(request),
                    });
                }
                if faults
                    && (self.clients[client].partitioned || self.rng.chance(self.cfg.drop_response))
                {
                    self.count("net: response lost");
                    return Ok(());
                }
                self.net.queue.borrow_mut().push(crate::net::Message {
                    slot: message.slot,
                    payload: Payload::Reply(reply),
                });
            }
            Payload::Reply(reply) => {
                if cut_off {
                    self.count("net: response lost (partition)");
                    return Ok(());
                }
                if !self.net.answer(&message.slot, Ok(reply)) && faults {
                    self.count("net: late answer discarded");
                }
            }
        }
        Ok(())
    }

    fn reload_tab(&mut self) -> Outcome {
        let c = self.rng.below(self.cfg.clients);
        if self.clients[c].tabs.len() < 2 {
            return Ok(());
        }
        let t = self.rng.below(self.clients[c].tabs.len());
        self.count("tab: closed and reopened");
        self.log(|| format!("client {c} tab {t} reloads"));
        let tab = self.clients[c].tabs.remove(t);
        for running in [tab.sync_op, tab.local_op].into_iter().flatten() {
            // Dropped before its transaction committed (a commit finishes the operation
            // in the same poll), so it wrote nothing: not an attempt.
            if let Some(info) = running.append {
                for id in &info.ids {
                    self.in_flight[c].remove(id);
                }
            }
        }
        block_on(tab.engine.close());
        let was_leader = self.clients[c].leader == t;
        let fresh = self.open_tab(c)?;
        let client = &mut self.clients[c];
        client.tabs.insert(t, fresh);
        if was_leader {
            // Another tab takes over sync (Web Locks hand the lock on).
            client.leader = (t + 1) % client.tabs.len();
            let sync = self.new_sync_client(c);
            self.clients[c].sync = sync;
        }
        self.check_replica(c)
    }

    fn restart_server(&mut self) -> Outcome {
        self.count("server: restarted");
        self.log(|| "server restarts".to_string());
        self.net.queue.borrow_mut().clear();
        for slot in self.net.waiting() {
            self.net.answer(
                &slot,
                Err(TransportError::Unreachable("connection reset".into())),
            );
        }
        let replace =
            self.sabotage.server_forgets_on_restart || self.rng.chance(self.cfg.replace_db);
        if replace {
            if !self.sabotage.server_forgets_on_restart {
                self.count("server: database replaced (new epoch)");
                let acked = std::mem::take(&mut self.acked);
                self.old_acked.extend(acked);
            }
            self.log(|| "  the server's database is replaced".to_string());
            self.server.wipe(STORE);
            self.old_logs.push(std::mem::take(&mut self.server_ids));
        }
        Ok(())
    }

    /// After client `c` learned of a new epoch: what it held confirmed (not pending) of
    /// what replaced databases had acknowledged is lost by design; what it held pending
    /// must still reach the new server.
    fn note_resets(&mut self, c: usize) -> Outcome {
        let epoch = block_on(annals::storage::Storage::meta(
            &self.clients[c].disk,
            "epoch",
        ))
        .map_err(|e| e.to_string())?;
        let previous = std::mem::replace(&mut self.clients[c].epoch_on_disk, epoch.clone());
        if previous.is_none() || previous == epoch {
            return Ok(());
        }
        let pending = self.pending_on_disk(c)?;
        for id in &self.old_acked {
            if !pending.contains(id) {
                self.forgivable.insert((c, *id));
            }
        }
        Ok(())
    }

    /// The pending events on client `c`'s disk (the simulator's look: no faults).
    fn pending_on_disk(&self, c: usize) -> Outcome<BTreeSet<EventId>> {
        let engine = block_on(Engine::open(
            self.clients[c].disk.another_handle(),
            self.options(c),
        ))
        .map_err(|e| format!("client {c}: reading its disk: {e}"))?;
        let mut pending = BTreeSet::new();
        engine
            .fold_pending(|e| {
                pending.insert(e.id);
            })
            .map_err(|e| e.to_string())?;
        block_on(engine.close());
        Ok(pending)
    }

    // ---- checks while running -----------------------------------------------------------------

    /// Every tab's confirmed log is a prefix of the server's log (of the current epoch, or
    /// of an earlier one that the tab has not left yet); pending events are unique and not
    /// confirmed.
    fn check_replica(&mut self, c: usize) -> Outcome {
        for (t, tab) in self.clients[c].tabs.iter().enumerate() {
            let engine = &tab.engine;
            let head = engine.confirmed_head();
            // Retention dropped the events up to here: the log held starts after it.
            let dropped = engine.dropped();
            let mut confirmed = Vec::with_capacity(head as usize);
            let mut gap = None;
            engine
                .fold_range(dropped, head, |e| {
                    if gap.is_none() && e.position != dropped + confirmed.len() as u64 + 1 {
                        gap = Some(e.position);
                    }
                    confirmed.push(e.id);
                })
                .map_err(|e| format!("client {c} tab {t}: {e}"))?;
            if let Some(position) = gap {
                return Err(format!(
                    "client {c} tab {t}: position {position} out of place"
                ));
            }
            if dropped + confirmed.len() as u64 != head {
                return Err(format!(
                    "client {c} tab {t}: {} confirmed events for head {head}",
                    confirmed.len()
                ));
            }
            let prefix_of = |log: &Vec<EventId>| {
                let from = (dropped as usize).min(log.len());
                log.len() >= from + confirmed.len()
                    && log[from..from + confirmed.len()] == confirmed[..]
            };
            if !prefix_of(&self.server_ids) && !self.old_logs.iter().any(prefix_of) {
                let first_difference = confirmed
                    .iter()
                    .zip(&self.server_ids)
                    .position(|(a, b)| a != b)
                    .unwrap_or(self.server_ids.len().min(confirmed.len()));
                let names = |ids: &[EventId]| ids.iter().map(short).collect::<Vec<_>>().join(" ");
                return Err(format!(
                    "client {c} tab {t}: its confirmed log ({} events) is no server log's prefix; \
                     first difference at position {}\n  replica: {}\n  server:  {}{}",
                    confirmed.len(),
                    first_difference + 1,
                    names(&confirmed),
                    names(&self.server_ids),
                    self.old_logs
                        .iter()
                        .map(|l| format!("\n  earlier: {}", names(l)))
                        .collect::<String>()
                ));
            }
            let confirmed: BTreeSet<EventId> = confirmed.into_iter().collect();
            let mut pending = BTreeSet::new();
            let mut bad = None;
            engine
                .fold_pending(|e| {
                    if confirmed.contains(&e.id) || !pending.insert(e.id) {
                        bad = Some(e.id);
                    }
                })
                .map_err(|e| e.to_string())?;
            if let Some(id) = bad {
                return Err(format!(
                    "client {c} tab {t}: pending event {id} is twice in the replica"
                ));
            }
        }
        Ok(())
    }

    // ---- healing ---------------------------------------------------------------------------------

    /// Ends every fault, lets what is in flight finish, then syncs every client until
    /// nothing changes.
    fn heal(&mut self) -> Outcome {
        self.healing = true;
        self.log(|| "heal".to_string());
        for client in &mut self.clients {
            client.faults.active.set(false);
            client.partitioned = false;
        }
        for c in 0..self.cfg.clients {
            self.net.set_offline(c, false);
        }
        let mut idle_rounds = 0;
        for _ in 0..10_000 {
            let ops = self.running_ops();
            if ops.is_empty() {
                break;
            }
            let mut progress = false;
            while !self.net.queue.borrow().is_empty() {
                self.deliver(0, false)?;
                progress = true;
            }
            for (c, t, which) in ops {
                if self.clients[c].tabs.len() > t && self.poll_op(c, t, which)? {
                    progress = true;
                }
            }
            if !progress {
                idle_rounds += 1;
                // Requests lost earlier are never answered: their clients time out.
                for slot in self.net.waiting() {
                    self.net
                        .answer(&slot, Err(TransportError::Unreachable("timed out".into())));
                }
                if idle_rounds > 100 {
                    return Err("operations stuck after healing".into());
                }
            }
        }
        if !self.running_ops().is_empty() {
            return Err("operations still running after healing".into());
        }
        for round in 0.. {
            if round == 10 {
                return Err("the replicas did not converge in 10 rounds of sync".into());
            }
            let head_before = self.server_ids.len();
            for c in 0..self.cfg.clients {
                self.sync_to_end(c)?;
            }
            let quiet = self.server_ids.len() == head_before
                && self.clients.iter().all(|client| {
                    let engine = &client.tabs[client.leader].engine;
                    engine.pending_count() == 0
                        && engine.confirmed_head() as usize == self.server_ids.len()
                });
            if quiet {
                break;
            }
        }
        for c in 0..self.cfg.clients {
            for t in 0..self.clients[c].tabs.len() {
                let tab = &mut self.clients[c].tabs[t];
                block_on(tab.engine.catch_up()).map_err(|e| format!("client {c}: {e}"))?;
                self.follow(c, t)?;
            }
            self.note_resets(c)?;
            self.check_replica(c)?;
        }
        Ok(())
    }

    /// One sync of client `c` on a healthy network, to its end.
    fn sync_to_end(&mut self, c: usize) -> Outcome {
        self.start_sync(c);
        let leader = self.clients[c].leader;
        for _ in 0..10_000 {
            if self.clients[c].tabs[leader].sync_op.is_none() {
                return Ok(());
            }
            let sync = self.clients[c].sync.clone();
            let running = self.clients[c].tabs[leader].sync_op.take().expect("a sync");
            let mut fut = running.fut;
            let mut cx = Context::from_waker(Waker::noop());
            let polled = fut.as_mut().poll(&mut cx);
            self.note_resets(c)?;
            match polled {
                Poll::Ready(Done::Sync(Ok(_))) => {
                    self.figures.syncs += 1;
                    self.follow(c, leader)?;
                    return self.check_replica(c);
                }
                Poll::Ready(Done::Sync(Err(e))) => {
                    return Err(format!(
                        "client {c}: sync failed on a healthy network: {e} ({:?})",
                        sync.status()
                    ))
                }
                Poll::Ready(_) => return Err("not a sync".into()),
                Poll::Pending => {
                    self.clients[c].tabs[leader].sync_op = Some(Running { fut, append: None });
                    while !self.net.queue.borrow().is_empty() {
                        self.deliver(0, false)?;
                    }
                }
            }
        }
        Err(format!(
            "client {c}: a sync on a healthy network never ended"
        ))
    }

    // ---- the final checks -------------------------------------------------------------------------

    fn check_final(&mut self) -> Vec<String> {
        let mut violations = Vec::new();
        let server_log = self.server.pull(STORE, 0, usize::MAX).events;
        self.figures.confirmed = server_log.len() as u64;
        let digest = digest_of(&server_log);

        // The server's log: gapless, each id once, versions following each other, every
        // expectation met.
        let mut ids = BTreeSet::new();
        let mut versions: BTreeMap<&str, u64> = BTreeMap::new();
        // Per stream: its last event's type, and whether it was closed (for good).
        let mut ends: BTreeMap<&str, (&str, bool)> = BTreeMap::new();
        for (i, e) in server_log.iter().enumerate() {
            if e.position != i as u64 + 1 {
                violations.push(format!("server position {} at index {i}", e.position));
            }
            if !ids.insert(e.id) {
                self.figures.duplicated += 1;
                violations.push(format!("event {} is twice in the server's log", e.id));
            }
            let version = versions.entry(&e.stream).or_default();
            *version += 1;
            if e.version != *version {
                violations.push(format!(
                    "event {} has version {} in stream {}, expected {}",
                    e.id, e.version, e.stream, version
                ));
            }
            let (last, closed) = ends.get(e.stream.as_str()).copied().unwrap_or(("", false));
            if closed && e.event_type != "$StreamErased" {
                violations.push(format!(
                    "event {} follows the close of stream {}",
                    e.id, e.stream
                ));
            }
            ends.insert(
                &e.stream,
                (&e.event_type, closed || e.event_type == "$StreamClosed"),
            );
            match e.event_type.as_str() {
                "$StreamDeleted" => self.count("server log: a stream deleted"),
                "$StreamClosed" => self.count("server log: a stream closed"),
                _ => {}
            }
            match self.templates.get(&e.id) {
                None => violations.push(format!("event {} was never generated", e.id)),
                Some(t) => {
                    let met = match t.expected {
                        ExpectedVersion::Any => true,
                        // A deleted stream starts again: no_stream holds right after it.
                        ExpectedVersion::NoStream => e.version == 1 || last == "$StreamDeleted",
                        ExpectedVersion::Exists => e.version >= 2,
                        ExpectedVersion::Exact(v) => e.version == v + 1,
                    };
                    if !met || t.stream != e.stream {
                        violations.push(format!(
                            "event {} stored at version {} of {} against its expectation {} on {}",
                            e.id, e.version, e.stream, t.expected, t.stream
                        ));
                    }
                }
            }
        }
        if digest.gaps != 0 {
            violations.push(format!("{} version gaps in the server's log", digest.gaps));
        }

        // Erasure: an event is erased when a later `$StreamErased` of its stream is in the
        // log (or when a replica erased it before pushing it: its erasure, appended after
        // it there, may land earlier when another client pushed the same erasure first);
        // then its data is found nowhere: not in the server's log, and not on any client's
        // disk (segments and outbox). Replicas read it erased (compared below).
        let mut erased_below: BTreeMap<&str, u64> = BTreeMap::new();
        for e in server_log
            .iter()
            .filter(|e| e.event_type == "$StreamErased")
        {
            let below = erased_below.entry(&e.stream).or_default();
            *below = (*below).max(e.version);
        }
        let mut erased_tags = Vec::new();
        for e in &server_log {
            let erased = erased_below
                .get(e.stream.as_str())
                .is_some_and(|v| e.version < *v);
            if (erased && !e.erased) || (e.erased && (e.data.get() != "null" || e.meta.is_some())) {
                violations.push(format!(
                    "server event {} (version {} of {}) is {}erased, its data {}",
                    e.id,
                    e.version,
                    e.stream,
                    if e.erased { "" } else { "not " },
                    e.data.get()
                ));
            }
            if e.erased {
                erased_tags.push(tag_of(&e.id));
            }
        }
        self.figures.erased = erased_tags.len() as u64;
        for c in 0..self.cfg.clients {
            let fresh = block_on(self.clients[c].disk.changes(Known::default()));
            let Ok(fresh) = fresh else {
                violations.push(format!("client {c}: its disk cannot be read"));
                continue;
            };
            let stored: Vec<String> = fresh
                .segments
                .iter()
                .map(|s| String::from_utf8_lossy(&s.bytes).into_owned())
                .chain(
                    fresh
                        .pending
                        .iter()
                        .map(|p| String::from_utf8_lossy(&p.bytes).into_owned()),
                )
                .collect();
            for tag in &erased_tags {
                if stored.iter().any(|bytes| bytes.contains(tag.as_str())) {
                    violations.push(format!(
                        "client {c}: the erased data {tag} is still on its disk"
                    ));
                }
            }
        }

        // Nothing acknowledged is lost.
        for id in &self.acked {
            if !ids.contains(id) {
                self.figures.lost += 1;
                violations.push(format!("event {id} was acknowledged, then lost"));
            }
        }

        // Every replica: the server's log, its projection, whether read live or reopened.
        let mut persisted: BTreeMap<(usize, EventId), u32> = BTreeMap::new();
        for c in 0..self.cfg.clients {
            let mut diverged = false;
            for (t, tab) in self.clients[c].tabs.iter().enumerate() {
                let dropped = tab.engine.dropped();
                if dropped > 0 {
                    self.figures.cut += 1;
                }
                match tab.engine.read(&ReadQuery {
                    after: dropped,
                    ..ReadQuery::default()
                }) {
                    Ok(log) => {
                        let server = &server_log[(dropped as usize).min(server_log.len())..];
                        if let Some(d) = difference(&log, server) {
                            diverged = true;
                            violations.push(format!("client {c} tab {t}: {d}"));
                        }
                    }
                    Err(e) => violations.push(format!("client {c} tab {t}: read failed: {e}")),
                }
                if *tab.runner.state() != digest {
                    diverged = true;
                    violations.push(format!(
                        "client {c} tab {t}: projection {:?} differs from the server's {:?}",
                        tab.runner.state(),
                        digest
                    ));
                }
            }
            let storage = SimStorage {
                inner: self.clients[c].disk.another_handle(),
                faults: self.clients[c].faults.clone(),
            };
            let options = self.options(c);
            let reopened = block_on(async {
                let engine = Engine::open(storage, options).await?;
                let runner = ProjectionRunner::open(&engine, DigestProjection).await?;
                let rejected = engine.rejected().await?;
                let log = engine.read(&ReadQuery {
                    after: engine.dropped(),
                    ..ReadQuery::default()
                })?;
                Ok::<_, Error>((log, runner.state().clone(), rejected, engine.dropped()))
            });
            match reopened {
                Err(e) => violations.push(format!("client {c}: reopening failed: {e}")),
                Ok((log, state, rejected, dropped)) => {
                    let server = &server_log[(dropped as usize).min(server_log.len())..];
                    if let Some(d) = difference(&log, server) {
                        diverged = true;
                        violations.push(format!("client {c} reopened: {d}"));
                    }
                    if state != digest {
                        diverged = true;
                        violations.push(format!(
                            "client {c} reopened: projection {state:?} differs from {digest:?}"
                        ));
                    }
                    for r in rejected {
                        *persisted.entry((c, r.event.id)).or_default() += 1;
                        self.figures.rejected += 1;
                    }
                }
            }
            if diverged {
                self.figures.diverged += 1;
            }
        }

        // Rejections: announced at most as often as persisted.
        let mut announced: BTreeMap<(usize, EventId), u32> = BTreeMap::new();
        for key in self.reported.borrow().iter() {
            *announced.entry(*key).or_default() += 1;
        }
        for (key, n) in &announced {
            self.figures.announced += u64::from(*n);
            if *n > persisted.get(key).copied().unwrap_or(0) {
                violations.push(format!(
                    "client {} announced the rejection of {} {n} times, its list holds fewer",
                    key.0, key.1
                ));
            }
        }

        // Every attempt ends in the log or in the rejected list, once.
        let origin_of: BTreeMap<EventId, Option<usize>> = server_log
            .iter()
            .map(|e| {
                (
                    e.id,
                    e.origin
                        .as_ref()
                        .and_then(|o| self.client_index.get(o).copied()),
                )
            })
            .collect();
        let mut keys: BTreeSet<(usize, EventId)> = self.attempts.keys().copied().collect();
        keys.extend(persisted.keys().copied());
        for key in keys {
            let (c, id) = key;
            let n = self.attempts.get(&key).copied().unwrap_or(0);
            let r = persisted.get(&key).copied().unwrap_or(0);
            let stored_by_me = origin_of.get(&id).copied().flatten() == Some(c);
            let in_log = origin_of.contains_key(&id);
            if r > n {
                violations.push(format!(
                    "client {c}: {id} rejected {r} times, appended {n} times"
                ));
            } else if !in_log && r < n && !self.forgivable.contains(&key) {
                self.figures.dropped += 1;
                violations.push(format!(
                    "client {c}: {id} appended {n} times, rejected {r} times, and not in the log: dropped"
                ));
            } else if stored_by_me && r >= n {
                violations.push(format!(
                    "client {c}: {id} is in the log and was also reported rejected ({r} of {n})"
                ));
            }
        }
        for e in &server_log {
            match origin_of.get(&e.id).copied().flatten() {
                Some(c) if self.attempts.get(&(c, e.id)).copied().unwrap_or(0) > 0 => {}
                _ => violations.push(format!(
                    "event {} is in the log but its origin {:?} never appended it",
                    e.id, e.origin
                )),
            }
        }

        // Each client's events reach the server in the order it appended them.
        let position: BTreeMap<EventId, (u64, Option<usize>)> = server_log
            .iter()
            .map(|e| (e.id, (e.position, origin_of.get(&e.id).copied().flatten())))
            .collect();
        for c in 0..self.cfg.clients {
            let mut last_attempt: BTreeMap<EventId, usize> = BTreeMap::new();
            for (i, id) in self.attempt_order[c].iter().enumerate() {
                last_attempt.insert(*id, i);
            }
            let mut order: Vec<(usize, EventId)> =
                last_attempt.into_iter().map(|(id, i)| (i, id)).collect();
            order.sort();
            let mut previous = 0;
            for (_, id) in order {
                if let Some((p, Some(origin))) = position.get(&id) {
                    if *origin == c {
                        if *p < previous {
                            violations.push(format!(
                                "client {c}: {id} appended after an event the server put at {previous}, but is at {p}"
                            ));
                        }
                        previous = *p;
                    }
                }
            }
        }

        self.figures.faults = self.counters.borrow().clone();
        violations
    }
}

fn short(id: &EventId) -> String {
    let text = id.to_string();
    format!("#{}", u64::from_str_radix(&text[24..], 16).unwrap_or(0))
}

fn describe(client: usize, request: &Request, reply: &Reply) -> String {
    match (request, reply) {
        (Request::Push(_), Reply::Push(response)) => {
            let results: Vec<String> = response
                .results
                .iter()
                .map(|r| match r {
                    annals::protocol::PushResult::Ok { id, position, .. } => {
                        format!("{} ok@{position}", short(id))
                    }
                    annals::protocol::PushResult::Duplicate { id, position, .. } => {
                        format!("{} dup@{position}", short(id))
                    }
                    annals::protocol::PushResult::Rejected { id, .. } => {
                        format!("{} rejected", short(id))
                    }
                })
                .collect();
            format!(
                "  server <- push from client {client}: {}",
                results.join(", ")
            )
        }
        (Request::Pull { after, limit }, Reply::Pull(response)) => format!(
            "  server <- pull from client {client} after {after} limit {limit}: {} events, head {}",
            response.events.len(),
            response.head
        ),
        _ => "  mismatched reply".into(),
    }
}

/// How a replica's log differs from the server's, if it does.
fn difference(replica: &[Event], server: &[Event]) -> Option<String> {
    if replica.len() != server.len() {
        return Some(format!(
            "{} events, the server has {}",
            replica.len(),
            server.len()
        ));
    }
    for (a, b) in replica.iter().zip(server) {
        let same = a.id == b.id
            && a.position == b.position
            && a.stream == b.stream
            && a.version == b.version
            && a.event_type == b.event_type
            && a.data.get() == b.data.get()
            && a.meta.as_ref().map(|m| m.get()) == b.meta.as_ref().map(|m| m.get())
            && a.time == b.time
            && a.origin == b.origin
            && a.erased == b.erased
            && !a.pending;
        if !same {
            return Some(format!(
                "position {} differs: {:?} vs the server's {:?}",
                b.position, a, b
            ));
        }
    }
    None
}
