//! The storage a JS store runs on: picked by name at open, then used through [`Storage`]
//! by plain delegation.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::Promise;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::error::{Error, Result};
use crate::storage::indexeddb::IndexedDbStorage;
use crate::storage::memory::MemoryStorage;
use crate::storage::{
    CompactionReport, Entered, Fresh, Known, Prepare, Scope, Segment, SnapshotRecord, Storage,
    WriterLock,
};

#[wasm_bindgen(typescript_custom_section)]
const WRITER_LOCK_TS: &str = r#"
/** The store's writer lock (the package's writer-lock.ts): the lease, or a promise of it. */
export interface WasmWriterLock {
  enter(): number | Promise<number>;
  leave(): void;
}
"#;

#[wasm_bindgen]
extern "C" {
    /// The store's writer lock as the package makes it (pkg/src/writer-lock.ts, over Web
    /// Locks): `enter()` returns the lease when held, else a promise of it; `leave()` ends
    /// the write.
    #[wasm_bindgen(typescript_type = "WasmWriterLock")]
    pub type JsWriterLock;
    #[wasm_bindgen(method, catch)]
    fn enter(this: &JsWriterLock) -> std::result::Result<JsValue, JsValue>;
    #[wasm_bindgen(method)]
    fn leave(this: &JsWriterLock);
}

/// [`WriterLock`] over the package's JS lock.
struct WebWriterLock(JsWriterLock);

impl WriterLock for WebWriterLock {
    fn enter(&self) -> Entered<'_> {
        let entered = match self.0.enter() {
            Ok(entered) => entered,
            Err(thrown) => return Entered::Wait(Box::pin(async move { Err(lock_error(thrown)) })),
        };
        if let Some(lease) = entered.as_f64() {
            return Entered::Held(lease as u64);
        }
        Entered::Wait(Box::pin(async move {
            let promise: Promise = entered.dyn_into().map_err(|_| {
                Error::Storage("the writer lock gave neither a lease nor a promise".into())
            })?;
            let lease = JsFuture::from(promise).await.map_err(lock_error)?;
            lease
                .as_f64()
                .map(|lease| lease as u64)
                .ok_or_else(|| Error::Storage("the writer lock's lease is not a number".into()))
        }))
    }

    fn leave(&self) {
        self.0.leave();
    }
}

/// A failed wait for the writer lock: the store closed meanwhile (the wait was aborted), or
/// the platform's lock failed.
fn lock_error(thrown: JsValue) -> Error {
    let name = js_sys::Reflect::get(&thrown, &JsValue::from_str("name"))
        .ok()
        .and_then(|n| n.as_string());
    match name.as_deref() {
        Some("AbortError") => Error::Closed,
        _ => Error::Storage(format!(
            "the writer lock failed: {}",
            js_sys::Reflect::get(&thrown, &JsValue::from_str("message"))
                .ok()
                .and_then(|m| m.as_string())
                .unwrap_or_else(|| format!("{thrown:?}"))
        )),
    }
}

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
    /// The backend for `kind` (`"indexeddb"` or `"memory"`). An IndexedDB store's writes
    /// take `writer` when given (a memory store's handles share one map, written in place).
    pub fn choose(
        name: &str,
        kind: &str,
        shared_memory: bool,
        writer: Option<JsWriterLock>,
    ) -> Result<Self> {
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
            "indexeddb" => {
                let storage = IndexedDbStorage::new(name);
                if let Some(writer) = writer {
                    storage.set_writer_lock(Rc::new(WebWriterLock(writer)));
                }
                Ok(AnyStorage::IndexedDb(storage))
            }
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
