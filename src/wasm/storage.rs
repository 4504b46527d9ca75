//! The storage a JS store runs on: picked by name at open, then used through [`Storage`]
//! by plain delegation.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::storage::indexeddb::IndexedDbStorage;
use crate::storage::memory::MemoryStorage;
use crate::storage::{
    CompactionReport, Fresh, Known, Prepare, Scope, Segment, SnapshotRecord, Storage,
};

thread_local! {
    /// Memory stores opened with `sharedMemory`, by name: every open gets another handle on
    /// the same data, as tabs share one IndexedDB database. They live as long as the module.
    static SHARED_MEMORY: RefCell<HashMap<String, MemoryStorage>> = RefCell::new(HashMap::new());
}

pub enum AnyStorage {
    Memory(MemoryStorage),
    IndexedDb(IndexedDbStorage),
}

impl AnyStorage {
    /// The backend for `kind` (`"indexeddb"` or `"memory"`).
    pub fn choose(name: &str, kind: &str, shared_memory: bool) -> Result<Self> {
        match kind {
            "memory" if shared_memory => Ok(AnyStorage::Memory(SHARED_MEMORY.with(|stores| {
                stores
                    .borrow_mut()
                    .entry(name.to_owned())
                    .or_default()
                    .another_handle()
            }))),
            "memory" => Ok(AnyStorage::Memory(MemoryStorage::new())),
            "indexeddb" if shared_memory => Err(Error::InvalidArgument(
                "`sharedMemory` applies to memory storage only".into(),
            )),
            "indexeddb" => Ok(AnyStorage::IndexedDb(IndexedDbStorage::new(name))),
            other => Err(Error::InvalidArgument(format!(
                "`storage` must be \"indexeddb\" or \"memory\", got {other:?}"
            ))),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStorage::Memory($s) => $call,
            AnyStorage::IndexedDb($s) => $call,
        }
    };
}

impl Storage for AnyStorage {
    async fn open(&self) -> Result<()> {
        delegate!(self, s => s.open().await)
    }

    async fn changes(&self, known: Known) -> Result<Fresh> {
        delegate!(self, s => s.changes(known).await)
    }

    async fn outline(&self) -> Result<Fresh> {
        delegate!(self, s => s.outline().await)
    }

    async fn segments_after(&self, after: u64, limit: usize) -> Result<(Vec<Segment>, Known)> {
        delegate!(self, s => s.segments_after(after, limit).await)
    }

    async fn transact(
        &self,
        known: Known,
        scope: Scope,
        prepare: &mut Prepare<'_>,
    ) -> Result<Known> {
        delegate!(self, s => s.transact(known, scope, prepare).await)
    }

    async fn compact(&self, target_bytes: usize) -> Result<CompactionReport> {
        delegate!(self, s => s.compact(target_bytes).await)
    }

    async fn put_snapshot(&self, snapshot: &SnapshotRecord) -> Result<()> {
        delegate!(self, s => s.put_snapshot(snapshot).await)
    }

    async fn snapshot(&self, name: &str) -> Result<Option<SnapshotRecord>> {
        delegate!(self, s => s.snapshot(name).await)
    }

    async fn delete_snapshot(&self, name: &str) -> Result<()> {
        delegate!(self, s => s.delete_snapshot(name).await)
    }

    async fn meta(&self, key: &str) -> Result<Option<String>> {
        delegate!(self, s => s.meta(key).await)
    }

    async fn put_meta(&self, key: &str, value: &str) -> Result<()> {
        delegate!(self, s => s.put_meta(key, value).await)
    }

    fn close(&self) {
        delegate!(self, s => s.close())
    }
}
