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
/** The store's writer lock (the package's writer-lock.ts): the lease, or a promise that
 * settles once it is held (then the core enters again). */
export interface WasmWriterLock {
  enter(): number | Promise<unknown>;
  leave(): void;
}
"#;

#[wasm_bindgen]
extern "C" {
    /// The store's writer lock as the package makes it (pkg/src/writer-lock.ts, over Web
    /// Locks): `enter()` returns the lease when held (counting the write in), else a
    /// promise that settles once it is; `leave()` ends the write.
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
        match self.enter_once() {
            Ok(Ok(lease)) => Entered::Held(lease),
            Ok(Err(first_wait)) => Entered::Wait(Box::pin(async move {
                let mut wait = first_wait;
                loop {
                    // Settles once held; entering again counts the write in, in the same
                    // microtask turn (nothing else can take the lock in between).
                    JsFuture::from(wait).await.map_err(lock_error)?;
                    match self.enter_once()? {
                        Ok(lease) => return Ok(lease),
                        Err(again) => wait = again,
                    }
                }
            })),
            Err(e) => Entered::Wait(Box::pin(async move { Err(e) })),
        }
    }

    fn leave(&self) {
        self.0.leave();
    }
}

impl WebWriterLock {
    /// One `enter()`: the lease (the write counted in), or the promise to wait on.
    fn enter_once(&self) -> Result<std::result::Result<u64, Promise>> {
        let entered = self.0.enter().map_err(lock_error)?;
        if let Some(lease) = entered.as_f64() {
            return Ok(Ok(lease as u64));
        }
        entered.dyn_into::<Promise>().map(Err).map_err(|_| {
            Error::Storage("the writer lock gave neither a lease nor a promise".into())
        })
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
