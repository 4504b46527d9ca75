//! PostgreSQL backend: the stream versions this instance remembers per store, so that a
//! push need not look them up (see `push`), and whether the store had refusals or
//! lifecycle ends, so that a push of a store without any need not look them up either.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

/// The maps of stream names a push fills and looks up once per pushed stream, several
/// times a push: hashed with a seeded fast hasher rather than SipHash.
pub(super) type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
pub(super) type Set<K> = HashSet<K, foldhash::fast::RandomState>;

/// At most this many stream versions are remembered, over all stores.
pub(super) const MAX_KNOWN_STREAMS: usize = 100_000;

/// The stream versions of a store as this instance last saw them, at `head`.
pub(super) struct Known {
    pub(super) store_id: i64,
    pub(super) head: u64,
    /// The store's `last_push` then: the memory is current while the store shows it.
    pub(super) last_push: i64,
    /// The store's epoch and `versions_at` then.
    pub(super) epoch: String,
    pub(super) versions_at: u64,
    /// Whether the store had refusals / lifecycle ends then (never unset once set).
    pub(super) any_refusals: bool,
    pub(super) any_ends: bool,
    /// Whether the last push found the memory still current. If not (other instances
    /// push to this store too), the next push looks every stream up in its first round
    /// trip rather than paying a second one for the streams it skipped.
    pub(super) trusted: bool,
    /// Version of each stream (0: no events).
    pub(super) versions: Map<String, u64>,
    /// The streams whose version moved since the store's `versions_at` (all of them in
    /// `versions`), when this instance saw every push since: a fold of the versions then
    /// writes those without reading the events.
    pub(super) moved: Option<Set<String>>,
}

/// Per store, the [`Known`] versions; a push takes its store's out while it runs (a
/// concurrent push to the same store looks everything up) and puts the new ones back.
#[derive(Default)]
pub(super) struct KnownVersions {
    inner: Mutex<KnownInner>,
}

#[derive(Default)]
struct KnownInner {
    stores: HashMap<String, Known>,
    /// Stream versions held, over all stores (at most [`MAX_KNOWN_STREAMS`]).
    streams: usize,
}

impl KnownVersions {
    fn lock(&self) -> MutexGuard<'_, KnownInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn take(&self, store: &str) -> Option<Known> {
        let mut inner = self.lock();
        let known = inner.stores.remove(store)?;
        inner.streams -= known.versions.len();
        Some(known)
    }

    pub(super) fn put(&self, store: &str, known: Known) {
        if known.versions.len() > MAX_KNOWN_STREAMS {
            return;
        }
        let mut inner = self.lock();
        if let Some(held) = inner.stores.get(store) {
            // A concurrent push put a later state back first.
            if held.store_id == known.store_id && held.head > known.head {
                return;
            }
        }
        if let Some(held) = inner.stores.remove(store) {
            inner.streams -= held.versions.len();
        }
        while inner.streams + known.versions.len() > MAX_KNOWN_STREAMS {
            let Some(other) = inner.stores.keys().next().cloned() else {
                break;
            };
            if let Some(held) = inner.stores.remove(&other) {
                inner.streams -= held.versions.len();
            }
        }
        inner.streams += known.versions.len();
        inner.stores.insert(store.to_owned(), known);
    }
}
