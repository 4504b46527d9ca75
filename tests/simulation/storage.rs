//! A storage wrapper that makes a client's disk misbehave on purpose: it yields before
//! operations (so that tabs and sync interleave at every await), fails reads and writes,
//! aborts transactions after they were prepared, and kills the process in the middle of a
//! write (before or after the commit). Whatever it does, a transaction stays whole or
//! absent, as IndexedDB guarantees.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use annals::storage::{
    CompactionReport, Fresh, Known, Prepare, Scope, Segment, SnapshotRecord, Storage,
};
use annals::{Error, MemoryStorage, Result};

use crate::rng::Rng;

pub type Counters = Rc<RefCell<BTreeMap<&'static str, u64>>>;

pub fn count(counters: &Counters, kind: &'static str) {
    *counters.borrow_mut().entry(kind).or_default() += 1;
}

/// The marker every injected failure carries, so that the simulation can tell them from
/// real ones.
pub const INJECTED: &str = "injected";

pub fn is_injected(e: &Error) -> bool {
    match e {
        Error::Storage(m) | Error::QuotaExceeded(m) => m.contains(INJECTED),
        _ => false,
    }
}

/// One client's disk trouble, shared by its tabs.
pub struct DiskFaults {
    rng: RefCell<Rng>,
    pub active: Cell<bool>,
    pub p_yield: f64,
    pub p_fail: f64,
    /// Of the failures of a write, the share where the process dies with it.
    pub p_crash: f64,
    /// The process died in the middle of a write: every later call fails until the
    /// simulator restarts the client.
    dead: Cell<bool>,
    counters: Counters,
    /// Sabotage: the disk stores what an erasure leaves out (its commits' `erase` and
    /// dropped snapshots are ignored).
    pub keeps_erased_data: Cell<bool>,
}

enum WriteFault {
    None,
    /// Refused before anything ran.
    Refused,
    /// Prepared, then aborted (quota, a failed request): nothing is stored.
    Aborted,
    /// The process dies while the transaction is in flight: nothing is stored.
    DiesBeforeCommit,
    /// The transaction commits, and the process dies before it hears so.
    DiesAfterCommit,
}

impl DiskFaults {
    pub fn new(rng: Rng, p_yield: f64, p_fail: f64, p_crash: f64, counters: Counters) -> Self {
        DiskFaults {
            rng: RefCell::new(rng),
            active: Cell::new(true),
            p_yield,
            p_fail,
            p_crash,
            dead: Cell::new(false),
            counters,
            keeps_erased_data: Cell::new(false),
        }
    }

    pub fn is_dead(&self) -> bool {
        self.dead.get()
    }

    pub fn revive(&self) {
        self.dead.set(false);
    }

    fn chance(&self, p: f64) -> bool {
        self.active.get() && self.rng.borrow_mut().chance(p)
    }

    fn check_alive(&self) -> Result<()> {
        if self.dead.get() {
            Err(Error::Storage(format!("{INJECTED}: the process is gone")))
        } else {
            Ok(())
        }
    }

    fn yield_point(&self) -> YieldOnce {
        YieldOnce(!self.chance(self.p_yield))
    }

    fn read_fault(&self) -> Result<()> {
        self.check_alive()?;
        if self.chance(self.p_fail / 4.0) {
            count(&self.counters, "disk: read failed");
            return Err(Error::Storage(format!("{INJECTED}: read failed")));
        }
        Ok(())
    }

    fn write_fault(&self) -> WriteFault {
        if !self.chance(self.p_fail) {
            return WriteFault::None;
        }
        if self.chance(self.p_crash) {
            self.dead.set(true);
            if self.rng.borrow_mut().chance(0.5) {
                count(&self.counters, "crash: mid-write, before commit");
                WriteFault::DiesBeforeCommit
            } else {
                count(&self.counters, "crash: mid-write, after commit");
                WriteFault::DiesAfterCommit
            }
        } else if self.rng.borrow_mut().chance(0.5) {
            count(&self.counters, "disk: write refused");
            WriteFault::Refused
        } else {
            count(&self.counters, "disk: transaction aborted");
            WriteFault::Aborted
        }
    }
}

/// Returns `Pending` once (waking itself) when it was told to yield.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// A tab's handle on a client's disk.
#[derive(Clone)]
pub struct SimStorage {
    pub inner: MemoryStorage,
    pub faults: Rc<DiskFaults>,
}

fn injected_write(kind: &str) -> Error {
    Error::Storage(format!("{INJECTED}: {kind}"))
}

impl Storage for SimStorage {
    async fn open(&self) -> Result<()> {
        self.faults.yield_point().await;
        self.faults.read_fault()?;
        self.inner.open().await
    }

    async fn changes(&self, known: Known) -> Result<Fresh> {
        self.faults.yield_point().await;
        self.faults.read_fault()?;
        self.inner.changes(known).await
    }

    async fn outline(&self) -> Result<Fresh> {
        self.faults.yield_point().await;
        self.faults.read_fault()?;
        self.inner.outline().await
    }

    async fn segments_after(&self, after: u64, limit: usize) -> Result<(Vec<Segment>, Known)> {
        self.faults.yield_point().await;
        self.faults.read_fault()?;
        self.inner.segments_after(after, limit).await
    }

    async fn transact(
        &self,
        known: Known,
        scope: Scope,
        prepare: &mut Prepare<'_>,
    ) -> Result<Known> {
        self.faults.yield_point().await;
        self.faults.check_alive()?;
        match self.faults.write_fault() {
            WriteFault::None if self.faults.keeps_erased_data.get() => {
                let mut keep = |fresh: &annals::storage::Fresh| {
                    let mut commit = prepare(fresh)?;
                    commit.erase.clear();
                    commit.drop_snapshots_from = None;
                    Ok(commit)
                };
                self.inner.transact(known, scope, &mut keep).await
            }
            WriteFault::None => self.inner.transact(known, scope, prepare).await,
            WriteFault::Refused => Err(injected_write("transaction refused")),
            WriteFault::Aborted => {
                let aborted = self
                    .inner
                    .transact(known, scope, &mut |fresh| {
                        prepare(fresh)?;
                        Err(Error::QuotaExceeded(format!("{INJECTED}: aborted")))
                    })
                    .await;
                Err(aborted.expect_err("an aborted transaction committed"))
            }
            WriteFault::DiesBeforeCommit => {
                let _ = self
                    .inner
                    .transact(known, scope, &mut |fresh| {
                        prepare(fresh)?;
                        Err(injected_write("died before commit"))
                    })
                    .await;
                Err(injected_write("died before commit"))
            }
            WriteFault::DiesAfterCommit => {
                self.inner.transact(known, scope, prepare).await?;
                Err(injected_write("died after commit"))
            }
        }
    }

    async fn compact(&self, target_bytes: usize) -> Result<CompactionReport> {
        self.faults.yield_point().await;
        self.faults.check_alive()?;
        match self.faults.write_fault() {
            WriteFault::None => self.inner.compact(target_bytes).await,
            WriteFault::Refused | WriteFault::Aborted | WriteFault::DiesBeforeCommit => {
                Err(injected_write("compaction failed"))
            }
            WriteFault::DiesAfterCommit => {
                self.inner.compact(target_bytes).await?;
                Err(injected_write("died after compaction"))
            }
        }
    }

    async fn put_snapshot(&self, snapshot: &SnapshotRecord) -> Result<()> {
        self.faults.yield_point().await;
        self.faults.check_alive()?;
        match self.faults.write_fault() {
            WriteFault::None => self.inner.put_snapshot(snapshot).await,
            WriteFault::DiesAfterCommit => {
                self.inner.put_snapshot(snapshot).await?;
                Err(injected_write("died after the snapshot"))
            }
            _ => Err(injected_write("snapshot write failed")),
        }
    }

    async fn snapshot(&self, name: &str) -> Result<Option<SnapshotRecord>> {
        self.faults.yield_point().await;
        self.faults.read_fault()?;
        self.inner.snapshot(name).await
    }

    async fn delete_snapshot(&self, name: &str) -> Result<()> {
        self.faults.yield_point().await;
        self.faults.check_alive()?;
        self.inner.delete_snapshot(name).await
    }

    async fn meta(&self, key: &str) -> Result<Option<String>> {
        self.faults.yield_point().await;
        self.faults.read_fault()?;
        self.inner.meta(key).await
    }

    async fn put_meta(&self, key: &str, value: &str) -> Result<()> {
        self.faults.yield_point().await;
        self.faults.check_alive()?;
        match self.faults.write_fault() {
            WriteFault::None => self.inner.put_meta(key, value).await,
            WriteFault::DiesAfterCommit => {
                self.inner.put_meta(key, value).await?;
                Err(injected_write("died after a meta write"))
            }
            _ => Err(injected_write("meta write failed")),
        }
    }

    fn close(&self) {
        self.inner.close();
    }
}
