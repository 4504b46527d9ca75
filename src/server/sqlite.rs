//! The embedded SQLite backend (the default): one file, one process.
//!
//! - One writer connection. A push runs in one `BEGIN IMMEDIATE` transaction, which takes
//!   the database's write lock before reading the head, so positions are assigned under
//!   the lock (also against another process on the same file) and no reader ever sees a
//!   position that a slower writer fills in later.
//! - `journal_mode=WAL` with `synchronous=FULL`: every commit syncs the WAL before the push
//!   is answered, so an acknowledged event survives a power loss, not only a crash of this
//!   process (`NORMAL` would only survive the latter). The cost is one fsync per push, which
//!   batching amortises.
//! - Checkpoints (copying the WAL into the database file, and syncing it) run off the
//!   push's path: once about [`CHECKPOINT_BYTES`] of events were pushed since the last
//!   one, a push starts one in the background, on its own connection, after its commit
//!   (a `PASSIVE` checkpoint waits for no reader or writer). SQLite's own checkpoint on
//!   commit is kept at a higher threshold ([`BACKSTOP_PAGES`]), should they fall behind.
//!   Durability does not depend on them: each commit syncs the WAL.
//! - Readers use their own connections (WAL lets them read while the writer writes).
//! - A push writes no stream version. A stream's version is derived: its row in
//!   `stream_versions` (every stream's version as of the store's `versions_at`), raised by
//!   its events after that position. Once the events after `versions_at` reach
//!   [`FOLD_EVERY`], the push that gets there folds the versions of the streams they moved
//!   into `stream_versions` and moves `versions_at` to the head.
//! - The process remembers the versions ([`Known`]): a push takes them from memory while
//!   the store's row shows the head and the random `last_push` mark its last push left
//!   (every push that writes events sets a new mark, whichever process makes it), and
//!   otherwise reads the events after `versions_at` once (at most about [`FOLD_EVERY`] of
//!   them, one range of the primary key) and probes `stream_versions` for the rest.
//! - Long polls are woken in-process through [`Changes`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde_json::value::RawValue;

use crate::event::Event;
use crate::protocol::{PullResponse, PushEvent, PushResponse};
use crate::push::authority::Authorities;
use crate::server::store::{
    distinct_streams, event_bytes, new_epoch, now_ms, plan_push, stored_id, stored_schema_version,
    stored_u64, stream_end_from, stream_end_name, to_i64, BoxFuture, Changes, Placed, Refusal,
    ServerStore, StoreError, StoreInfo, Stored, PULL_BYTE_BUDGET,
};

/// The tables of every format (those of a new file as this code writes them; an older
/// file gains what it lacks in [`migrate`]).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stores (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    epoch      TEXT NOT NULL,
    head       INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    -- `stream_versions` holds every stream's version as of this position; the events
    -- after it (up to the head) hold the later ones.
    versions_at INTEGER NOT NULL DEFAULT 0,
    -- A random number each push that writes events sets: a process's memory of the
    -- store is current while it finds the number its own last push set.
    last_push  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS events (
    store_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    id       BLOB NOT NULL,
    stream   TEXT NOT NULL,
    version  INTEGER NOT NULL,
    type     TEXT NOT NULL,
    data     TEXT NOT NULL,
    meta     TEXT,
    time     INTEGER NOT NULL,
    origin   TEXT,
    schema_version INTEGER NOT NULL DEFAULT 1,
    -- 1: erased (its stream's $StreamErased came later): data 'null', meta NULL.
    erased   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (store_id, position)
);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_id ON events (store_id, id);
-- Streams whose last event is a lifecycle event ($StreamDeleted: 'deleted',
-- $StreamClosed: 'closed'): what the push rules need to refuse a closed stream and let
-- `no_stream` restart a deleted one. Rows only for such streams.
CREATE TABLE IF NOT EXISTS stream_ends (
    store_id INTEGER NOT NULL,
    stream   TEXT NOT NULL,
    kind     TEXT NOT NULL,
    PRIMARY KEY (store_id, stream)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rejections (
    store_id       INTEGER NOT NULL,
    id             BLOB NOT NULL,
    fingerprint    INTEGER NOT NULL,
    reason         TEXT NOT NULL,
    actual_version INTEGER,
    PRIMARY KEY (store_id, id, fingerprint)
) WITHOUT ROWID;
";

/// Format 4: the stream versions as of `stores.versions_at` (see [`FOLD_EVERY`]). `streams`,
/// where formats 1 to 3 kept every stream's version current on every push, is kept as a
/// view that shows nothing and takes no writes, as a fence: a server of an older build
/// still running on the file fails its pushes (its statements are prepared again against
/// the new schema, and a view cannot be written) rather than number events from versions
/// nobody updates any more. One starting anew refuses the file by its format.
const STREAM_VERSIONS: &str = "
CREATE TABLE IF NOT EXISTS stream_versions (
    store_id INTEGER NOT NULL,
    stream   TEXT NOT NULL,
    version  INTEGER NOT NULL,
    PRIMARY KEY (store_id, stream)
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS streams AS
    SELECT NULL AS store_id, NULL AS stream, NULL AS version WHERE 0;
";

/// Erases the events of a stream (`?2`) below a version (`?3`): see [`crate::erasure`].
const ERASE_EVENTS: &str = "UPDATE events SET data = 'null', meta = NULL, erased = 1
    WHERE store_id = ?1 AND stream = ?2 AND version < ?3 AND erased = 0";

/// The schema version this code writes (`PRAGMA user_version`). 2 added
/// `events.schema_version`, 3 `events.erased`, 4 derived stream versions
/// ([`STREAM_VERSIONS`], `stores.versions_at` and `stores.last_push`); an older file gains
/// them when opened ([`migrate`]). Every build refuses a file of a later format.
const FORMAT: i64 = 4;

/// Events after a store's `versions_at` before a push folds the versions they moved into
/// `stream_versions`: what a push that cannot use this process's memory reads (one range
/// of the primary key), against one write per moved stream per so many events for the
/// pushes that can.
const FOLD_EVERY: u64 = 10_000;

/// Bytes of events pushed (their data, meta, stream and type, plus [`ROW_BYTES`] each)
/// after which a push starts a checkpoint: about the 1,000 pages at which SQLite would
/// make the committing writer run one.
const CHECKPOINT_BYTES: usize = 4 * 1024 * 1024;

/// What an event's row and index entries take beyond its variable parts, roughly.
const ROW_BYTES: usize = 64;

/// The writer's automatic checkpoint (`wal_autocheckpoint`, in pages), for when the
/// background ones fall behind.
const BACKSTOP_PAGES: i64 = 10_000;

/// Idle reader connections kept open.
const MAX_IDLE_READERS: usize = 8;

/// At most this many stream versions are remembered (see [`Known`]), over all stores.
const MAX_KNOWN_STREAMS: usize = 100_000;

pub struct SqliteStore {
    inner: Arc<Inner>,
    changes: Changes,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    authorities: Authorities,
    /// Per store, the stream versions the last push left (taken out by the push that uses
    /// them, put back when it commits).
    known: Mutex<HashMap<String, Known>>,
    /// The connection background checkpoints run on (at most one at a time).
    checkpointer: Mutex<Checkpointer>,
    /// Bytes pushed since the last checkpoint started (see [`CHECKPOINT_BYTES`]).
    since_checkpoint: std::sync::atomic::AtomicUsize,
}

/// The versions of a store's streams as this process's last push to it left them, at
/// `head`. They hold while the store's row shows that head and `last_push`: every push
/// that moves a stream's version sets a new random `last_push` under the write lock,
/// whichever process makes it (random, so that a file restored from a backup and pushed
/// to again never shows the number remembered).
struct Known {
    store_id: i64,
    head: u64,
    last_push: i64,
    versions_at: u64,
    /// Current versions: every stream in `moved`, and others as read.
    versions: HashMap<String, u64>,
    /// The streams with events after `versions_at`: what a fold writes.
    moved: HashSet<String>,
}

impl Known {
    /// Whether this memory is of the store as `row` shows it now.
    fn holds(&self, row: &StoreRow) -> bool {
        self.store_id == row.id
            && self.head == row.head
            && self.last_push == row.last_push
            && self.versions_at == row.versions_at
    }
}

/// Whether a background checkpoint runs.
enum Checkpointer {
    /// None runs; the connection, once opened.
    Idle(Option<Connection>),
    Running,
}

/// A store's row, read under the write lock by a push.
struct StoreRow {
    id: i64,
    head: u64,
    epoch: String,
    versions_at: u64,
    last_push: i64,
}

/// A fresh `stores.last_push`.
fn new_push_mark() -> Result<i64, StoreError> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| StoreError::Task(format!("no randomness for a push: {e}")))?;
    Ok(i64::from_le_bytes(bytes))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // rusqlite rolls back a transaction dropped during a panic, so the connection behind a
    // poisoned lock is still consistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The path in `sqlite://relative/path.db` or `sqlite:///absolute/path.db`.
pub fn path_from_url(url: &str) -> Result<PathBuf, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::BadUrl(format!("{url:?} does not start with sqlite://")))?;
    if rest.is_empty() {
        return Err(StoreError::BadUrl(format!("{url:?} names no file")));
    }
    Ok(PathBuf::from(rest))
}

impl SqliteStore {
    /// Opens (creating the file, its directory and the tables if needed) the database.
    pub async fn open(path: &Path, authorities: Authorities) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let inner = tokio::task::spawn_blocking(move || -> Result<Inner, StoreError> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut writer = open_connection(&path, false)?;
            let format: i64 = writer.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if format > FORMAT {
                return Err(StoreError::Corrupt(format!(
                    "{} was written in format {format}; this server reads up to {FORMAT}",
                    path.display()
                )));
            }
            migrate(&mut writer)?;
            writer.pragma_update(None, "wal_autocheckpoint", BACKSTOP_PAGES)?;
            Ok(Inner {
                path,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                authorities,
                known: Mutex::new(HashMap::new()),
                checkpointer: Mutex::new(Checkpointer::Idle(None)),
                since_checkpoint: std::sync::atomic::AtomicUsize::new(0),
            })
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        Ok(SqliteStore {
            inner: Arc::new(inner),
            changes: Changes::default(),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

/// Creates the tables of a new file, or brings a database written by an older server to
/// [`FORMAT`], in one transaction (which takes the write lock first, so two servers
/// opening the same file do not both alter it). Format 1 lacks `events.schema_version`:
/// every event stored then was at schema version 1, which the column's default says.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
    let has_column = |table: &str, column: &str| -> Result<bool, StoreError> {
        Ok(tx
            .prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
            .exists([table, column])?)
    };
    if !has_column("events", "schema_version")? {
        tx.execute_batch(
            "ALTER TABLE events ADD COLUMN schema_version INTEGER NOT NULL DEFAULT 1",
        )?;
    }
    // Format 3: nothing stored before erasure existed is erased.
    if !has_column("events", "erased")? {
        tx.execute_batch("ALTER TABLE events ADD COLUMN erased INTEGER NOT NULL DEFAULT 0")?;
    }
    // Format 4: the table `streams` was current at every store's head; renamed, it is
    // `stream_versions` as of the head.
    if !has_column("stores", "versions_at")? {
        tx.execute_batch("ALTER TABLE stores ADD COLUMN versions_at INTEGER NOT NULL DEFAULT 0")?;
    }
    if !has_column("stores", "last_push")? {
        tx.execute_batch("ALTER TABLE stores ADD COLUMN last_push INTEGER NOT NULL DEFAULT 0")?;
    }
    let streams_is_a_table = tx
        .prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'streams'")?
        .exists([])?;
    if streams_is_a_table {
        tx.execute_batch(
            "ALTER TABLE streams RENAME TO stream_versions;
             UPDATE stores SET versions_at = head;",
        )?;
    }
    tx.execute_batch(STREAM_VERSIONS)?;
    tx.pragma_update(None, "user_version", FORMAT)?;
    tx.commit()?;
    Ok(())
}

fn open_connection(path: &Path, read_only: bool) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    if read_only {
        conn.pragma_update(None, "query_only", true)?;
    }
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

impl Inner {
    fn reader(&self) -> Result<Connection, StoreError> {
        match lock(&self.readers).pop() {
            Some(conn) => Ok(conn),
            None => open_connection(&self.path, true),
        }
    }

    /// Counts `bytes` pushed. When a checkpoint is due and none runs, marks one running and
    /// answers its connection (if already open), for the caller to run
    /// [`Inner::checkpoint`] with.
    fn checkpoint_due(&self, bytes: usize) -> Option<Option<Connection>> {
        use std::sync::atomic::Ordering;
        let total = self.since_checkpoint.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if total < CHECKPOINT_BYTES {
            return None;
        }
        let mut checkpointer = lock(&self.checkpointer);
        match std::mem::replace(&mut *checkpointer, Checkpointer::Running) {
            Checkpointer::Idle(conn) => {
                self.since_checkpoint.store(0, Ordering::Relaxed);
                Some(conn)
            }
            Checkpointer::Running => None,
        }
    }

    /// Copies what the WAL holds into the database file, as far as no reader still needs
    /// the older pages, without waiting for anyone. A failure is logged: the WAL keeps the
    /// data, and the next checkpoint (or the writer's own) tries again.
    fn checkpoint(&self, conn: Option<Connection>) {
        let run = |conn: Option<Connection>| -> Result<Connection, StoreError> {
            let conn = match conn {
                Some(conn) => conn,
                None => open_connection(&self.path, false)?,
            };
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
            Ok(conn)
        };
        let kept = match run(conn) {
            Ok(conn) => Some(conn),
            Err(e) => {
                tracing::warn!(error = %e, "background checkpoint failed");
                None
            }
        };
        *lock(&self.checkpointer) = Checkpointer::Idle(kept);
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = lock(&self.readers);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }

    /// Finds the store, creating it (with a fresh epoch) if it does not exist yet.
    fn ensure_store(conn: &Connection, name: &str) -> Result<(i64, u64, String), StoreError> {
        if let Some(found) = Self::find_store(conn, name)? {
            return Ok(found);
        }
        conn.prepare_cached(
            "INSERT INTO stores (name, epoch, head, created_ms) VALUES (?1, ?2, 0, ?3)
             ON CONFLICT (name) DO NOTHING",
        )?
        .execute(params![name, new_epoch()?, now_ms()])?;
        Self::find_store(conn, name)?
            .ok_or_else(|| StoreError::Corrupt(format!("store `{name}` vanished after creation")))
    }

    fn find_store(conn: &Connection, name: &str) -> Result<Option<(i64, u64, String)>, StoreError> {
        let row = conn
            .prepare_cached("SELECT id, head, epoch FROM stores WHERE name = ?1")?
            .query_row([name], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .optional()?;
        row.map(|(id, head, epoch)| Ok((id, stored_u64(head, "head")?, epoch)))
            .transpose()
    }

    fn push(
        &self,
        store: &str,
        client_id: &str,
        events: &[PushEvent],
    ) -> Result<PushResponse, StoreError> {
        let mut conn = lock(&self.writer);
        // Most pushes carry new ids only: the first attempt lets the unique index find a
        // stored one instead of looking every id up; if it does, the transaction is rolled
        // back and the push planned again knowing the stored ids.
        let mut known = lock(&self.known).remove(store);
        let mut look_up_ids = false;
        loop {
            match Self::push_once(
                &mut conn,
                &self.authorities,
                store,
                client_id,
                events,
                look_up_ids,
                known.take(),
            )? {
                Attempted::Done(response, known) => {
                    let mut all = lock(&self.known);
                    let held: usize = all.values().map(|k| k.versions.len()).sum();
                    if held + known.versions.len() > MAX_KNOWN_STREAMS {
                        all.clear();
                    }
                    if known.versions.len() <= MAX_KNOWN_STREAMS {
                        all.insert(store.to_owned(), known);
                    }
                    return Ok(response);
                }
                Attempted::StoredIdFound if !look_up_ids => look_up_ids = true,
                Attempted::StoredIdFound => {
                    return Err(StoreError::Corrupt(
                        "an id looked up as new is stored after all".into(),
                    ))
                }
            }
        }
    }

    /// Looks up which of `events` are stored already.
    fn stored_ids(
        tx: &Connection,
        store_id: i64,
        events: &[PushEvent],
    ) -> Result<HashMap<crate::event::EventId, Stored>, StoreError> {
        let mut existing = HashMap::new();
        let mut find = tx.prepare_cached(
            "SELECT position, version, stream, type, schema_version, data, meta, erased
             FROM events WHERE store_id = ?1 AND id = ?2",
        )?;
        for event in events {
            let found = find
                .query_row(params![store_id, &event.id.0[..]], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, bool>(7)?,
                    ))
                })
                .optional()?;
            if let Some((
                position,
                version,
                stream,
                event_type,
                schema_version,
                data,
                meta,
                erased,
            )) = found
            {
                existing.insert(
                    event.id,
                    Stored::of(
                        Placed {
                            position: stored_u64(position, "position")?,
                            version: stored_u64(version, "version")?,
                        },
                        &stream,
                        &event_type,
                        stored_schema_version(schema_version)?,
                        &data,
                        meta.as_deref(),
                        erased,
                    ),
                );
            }
        }
        Ok(existing)
    }

    /// The store's row for a push, creating the store on first use.
    fn push_store(conn: &Connection, name: &str) -> Result<StoreRow, StoreError> {
        let read = |conn: &Connection| -> Result<Option<StoreRow>, StoreError> {
            let row = conn
                .prepare_cached(
                    "SELECT id, head, epoch, versions_at, last_push FROM stores WHERE name = ?1",
                )?
                .query_row([name], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })
                .optional()?;
            row.map(|(id, head, epoch, versions_at, last_push)| {
                Ok(StoreRow {
                    id,
                    head: stored_u64(head, "head")?,
                    epoch,
                    versions_at: stored_u64(versions_at, "versions_at")?,
                    last_push,
                })
            })
            .transpose()
        };
        if let Some(row) = read(conn)? {
            return Ok(row);
        }
        Self::ensure_store(conn, name)?;
        read(conn)?
            .ok_or_else(|| StoreError::Corrupt(format!("store `{name}` vanished after creation")))
    }

    /// The versions of the store's streams as stored, read under the write lock: those
    /// the events after `versions_at` moved (all of them), then `streams` that these
    /// did not move from `stream_versions` (a stream without a row there has no events).
    fn read_versions(
        tx: &Connection,
        row: &StoreRow,
        streams: &[&str],
    ) -> Result<(HashMap<String, u64>, HashSet<String>), StoreError> {
        let mut versions: HashMap<String, u64> = HashMap::new();
        if row.head > row.versions_at {
            let mut tail = tx.prepare_cached(
                "SELECT stream, version FROM events
                 WHERE store_id = ?1 AND position > ?2 AND position <= ?3",
            )?;
            let mut rows = tail.query(params![
                row.id,
                to_i64(row.versions_at, "versions_at")?,
                to_i64(row.head, "head")?
            ])?;
            while let Some(r) = rows.next()? {
                let version = stored_u64(r.get(1)?, "version")?;
                let stream = r
                    .get_ref(0)?
                    .as_str()
                    .map_err(|e| StoreError::Corrupt(format!("a stored stream name: {e}")))?;
                match versions.get_mut(stream) {
                    Some(v) => *v = (*v).max(version),
                    None => {
                        versions.insert(stream.to_owned(), version);
                    }
                }
            }
        }
        let moved = versions.keys().cloned().collect();
        Self::read_folded(tx, row.id, streams, &mut versions)?;
        Ok((versions, moved))
    }

    /// Adds to `versions` those of `streams` it lacks, from `stream_versions` (for streams
    /// that the events after `versions_at` did not move; one without a row has no events).
    fn read_folded(
        tx: &Connection,
        store_id: i64,
        streams: &[&str],
        versions: &mut HashMap<String, u64>,
    ) -> Result<(), StoreError> {
        let mut find = tx.prepare_cached(
            "SELECT version FROM stream_versions WHERE store_id = ?1 AND stream = ?2",
        )?;
        for stream in streams {
            if versions.contains_key(*stream) {
                continue;
            }
            let found = find
                .query_row(params![store_id, stream], |r| r.get::<_, i64>(0))
                .optional()?;
            if let Some(version) = found {
                versions.insert((*stream).to_owned(), stored_u64(version, "version")?);
            }
        }
        Ok(())
    }

    /// One push transaction; with `look_up_ids` false it assumes the ids are new and
    /// answers [`Attempted::StoredIdFound`] (having written nothing) when one is not. It
    /// takes the stream versions from `known` when that holds (see [`Known`]).
    fn push_once(
        conn: &mut Connection,
        authorities: &Authorities,
        store: &str,
        client_id: &str,
        events: &[PushEvent],
        look_up_ids: bool,
        known: Option<Known>,
    ) -> Result<Attempted, StoreError> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row = Self::push_store(&tx, store)?;
        let (store_id, head) = (row.id, row.head);
        // What the store's row will show after this push.
        let (mut versions_at, mut last_push) = (row.versions_at, row.last_push);
        let streams = distinct_streams(events);

        let mut existing = if look_up_ids {
            Self::stored_ids(&tx, store_id, events)?
        } else {
            HashMap::new()
        };
        let mut refused: HashMap<_, Vec<Refusal>> = HashMap::new();
        // Refusals are remembered rarely: one query saves a lookup per event when a store
        // has none.
        let any_refused = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM rejections WHERE store_id = ?1)")?
            .query_row([store_id], |r| r.get::<_, bool>(0))?;
        if any_refused {
            let mut find = tx.prepare_cached(
                "SELECT fingerprint, reason, actual_version FROM rejections
                 WHERE store_id = ?1 AND id = ?2",
            )?;
            for event in events.iter().filter(|e| !existing.contains_key(&e.id)) {
                let mut rows = find.query(params![store_id, &event.id.0[..]])?;
                while let Some(row) = rows.next()? {
                    let actual: Option<i64> = row.get(2)?;
                    refused.entry(event.id).or_default().push(Refusal {
                        // Stored as the same 64 bits, signed.
                        fingerprint: row.get::<_, i64>(0)? as u64,
                        reason: row.get(1)?,
                        actual_version: actual
                            .map(|v| stored_u64(v, "actual_version"))
                            .transpose()?,
                    });
                }
            }
        }
        // The versions come from memory when it holds (with the streams it lacks read from
        // `stream_versions`: memory has every stream moved since `versions_at`), or are
        // read. A stream without events has none in `versions` (which holds the other
        // streams remembered too).
        let (mut versions, mut moved, remembered) = match known.filter(|k| k.holds(&row)) {
            Some(k) => {
                let (mut versions, moved) = (k.versions, k.moved);
                Self::read_folded(&tx, store_id, &streams, &mut versions)?;
                (versions, moved, true)
            }
            None => {
                let (versions, moved) = Self::read_versions(&tx, &row, &streams)?;
                (versions, moved, false)
            }
        };

        let mut ends = HashMap::new();
        let any_ended = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM stream_ends WHERE store_id = ?1)")?
            .query_row([store_id], |r| r.get::<_, bool>(0))?;
        if any_ended {
            let mut find = tx.prepare_cached(
                "SELECT kind FROM stream_ends WHERE store_id = ?1 AND stream = ?2",
            )?;
            for stream in &streams {
                let found = find
                    .query_row(params![store_id, stream], |r| r.get::<_, String>(0))
                    .optional()?;
                if let Some(end) = found.as_deref().map(stream_end_from).transpose()?.flatten() {
                    ends.insert((*stream).to_owned(), end);
                }
            }
        }

        let mut histories = HashMap::new();
        let claimed = authorities.claimed_streams(events);
        if !claimed.is_empty() {
            let mut select = tx.prepare_cached(
                "SELECT id, position, stream, version, type, data, meta, time, origin, schema_version, erased
                 FROM events WHERE store_id = ?1 AND stream = ?2 ORDER BY position",
            )?;
            for stream in claimed {
                let mut rows = select.query(params![store_id, stream])?;
                let mut history = Vec::new();
                while let Some(row) = rows.next()? {
                    history.push(event_from_row(row)?);
                }
                histories.insert(stream.to_owned(), history);
            }
        }
        let mut plan = plan_push(
            head,
            events,
            &existing,
            &refused,
            &versions,
            &ends,
            Some(&mut authorities.checker(histories.clone())),
        );
        if plan.rejects_any() && (!look_up_ids || remembered) {
            // A rejection is an answer, and a stored id answers `duplicate` before any
            // check: look the ids up, and read the versions if they came from memory
            // (still under the lock), and plan again.
            if !look_up_ids {
                existing = Self::stored_ids(&tx, store_id, events)?;
            }
            if remembered {
                (versions, moved) = Self::read_versions(&tx, &row, &streams)?;
            }
            plan = plan_push(
                head,
                events,
                &existing,
                &refused,
                &versions,
                &ends,
                Some(&mut authorities.checker(histories)),
            );
        }
        if !plan.refusals.is_empty() {
            let mut remember = tx.prepare_cached(
                "INSERT OR IGNORE INTO rejections (store_id, id, fingerprint, reason, actual_version)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (index, refusal) in &plan.refusals {
                let event = events
                    .get(*index)
                    .ok_or_else(|| StoreError::Task("push plan out of range".into()))?;
                remember.execute(params![
                    store_id,
                    &event.id.0[..],
                    refusal.fingerprint as i64,
                    refusal.reason,
                    refusal
                        .actual_version
                        .map(|v| to_i64(v, "actual_version"))
                        .transpose()?,
                ])?;
            }
        }

        if !plan.inserts.is_empty() {
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (store_id, position, id, stream, version, type, data, meta, time, origin, schema_version, erased)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for (index, placed) in &plan.inserts {
                let event = events
                    .get(*index)
                    .ok_or_else(|| StoreError::Task("push plan out of range".into()))?;
                let inserted = insert.execute(params![
                    store_id,
                    to_i64(placed.position, "position")?,
                    &event.id.0[..],
                    event.stream,
                    to_i64(placed.version, "version")?,
                    event.event_type,
                    event.data.get(),
                    event.meta.as_ref().map(|m| m.get()),
                    to_i64(event.time, "time")?,
                    client_id,
                    i64::from(event.schema_version),
                    event.erased,
                ]);
                match inserted {
                    Ok(_) => {}
                    // Positions are assigned under the write lock, so only the id index can
                    // refuse the row. Dropping the transaction rolls it back.
                    Err(e) if !look_up_ids && is_unique_violation(&e) => {
                        return Ok(Attempted::StoredIdFound)
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            for (stream, end) in &plan.stream_ends {
                match end {
                    Some(end) => tx
                        .prepare_cached(
                            "INSERT INTO stream_ends (store_id, stream, kind) VALUES (?1, ?2, ?3)
                             ON CONFLICT (store_id, stream) DO UPDATE SET kind = excluded.kind",
                        )?
                        .execute(params![store_id, stream, stream_end_name(Some(*end))])?,
                    None => tx
                        .prepare_cached(
                            "DELETE FROM stream_ends WHERE store_id = ?1 AND stream = ?2",
                        )?
                        .execute(params![store_id, stream])?,
                };
            }
            // Erasures: the stream's earlier events lose their data and meta, in this
            // transaction (those of this push included).
            for (stream, before) in &plan.erasures {
                tx.prepare_cached(ERASE_EVENTS)?.execute(params![
                    store_id,
                    stream,
                    to_i64(*before, "version")?
                ])?;
            }
            // No stream version is written, but once the events after `versions_at` reach
            // FOLD_EVERY (this push's included): then those of every stream they moved.
            for (stream, version) in &plan.stream_versions {
                match versions.get_mut(stream.as_str()) {
                    Some(v) => *v = *version,
                    None => {
                        versions.insert(stream.clone(), *version);
                    }
                }
                if !moved.contains(stream.as_str()) {
                    moved.insert(stream.clone());
                }
            }
            if plan.head.saturating_sub(versions_at) >= FOLD_EVERY {
                let mut fold = tx.prepare_cached(
                    "INSERT INTO stream_versions (store_id, stream, version) VALUES (?1, ?2, ?3)
                     ON CONFLICT (store_id, stream) DO UPDATE SET version = excluded.version",
                )?;
                for stream in moved.drain() {
                    let version = versions.get(&stream).ok_or_else(|| {
                        StoreError::Task(format!("stream `{stream}` moved but has no version"))
                    })?;
                    fold.execute(params![store_id, stream, to_i64(*version, "version")?])?;
                }
                versions_at = plan.head;
            }
            last_push = new_push_mark()?;
            tx.prepare_cached(
                "UPDATE stores SET head = ?1, last_push = ?2, versions_at = ?3 WHERE id = ?4",
            )?
            .execute(params![
                to_i64(plan.head, "head")?,
                last_push,
                to_i64(versions_at, "versions_at")?,
                store_id
            ])?;
        }
        tx.commit()?;
        // What the next push may take from memory: this push's streams as it left them,
        // beside the other streams known at the head it started from.
        Ok(Attempted::Done(
            PushResponse {
                results: plan.results,
                head: plan.head,
                epoch: row.epoch,
            },
            Known {
                store_id,
                head: plan.head,
                last_push,
                versions_at,
                versions,
                moved,
            },
        ))
    }

    fn pull(&self, store: &str, after: u64, limit: usize) -> Result<PullResponse, StoreError> {
        let mut conn = self.reader()?;
        let result = Self::pull_on(&mut conn, store, after, limit);
        self.give_back(conn);
        match result? {
            Some(response) => Ok(response),
            // A store nobody has used yet: create it (a write) so that it has an epoch.
            None => {
                let (_, head, epoch) = Self::ensure_store(&lock(&self.writer), store)?;
                Ok(PullResponse {
                    events: Vec::new(),
                    head,
                    epoch,
                    more: false,
                })
            }
        }
    }

    /// Which of `ids` the store holds, read on a reader connection.
    fn stored_ids_of(
        &self,
        store: &str,
        ids: &[crate::event::EventId],
    ) -> Result<std::collections::HashSet<crate::event::EventId>, StoreError> {
        let mut conn = self.reader()?;
        let result = (|| {
            let tx = conn.transaction()?;
            let mut found = std::collections::HashSet::new();
            let Some((store_id, _, _)) = Self::find_store(&tx, store)? else {
                return Ok(found);
            };
            let mut find =
                tx.prepare_cached("SELECT 1 FROM events WHERE store_id = ?1 AND id = ?2")?;
            for id in ids {
                if find
                    .query_row(params![store_id, &id.0[..]], |_| Ok(()))
                    .optional()?
                    .is_some()
                {
                    found.insert(*id);
                }
            }
            Ok(found)
        })();
        self.give_back(conn);
        result
    }

    fn pull_on(
        conn: &mut Connection,
        store: &str,
        after: u64,
        limit: usize,
    ) -> Result<Option<PullResponse>, StoreError> {
        // One read transaction: the head and the events come from the same snapshot.
        let tx = conn.transaction()?;
        let Some((store_id, head, epoch)) = Self::find_store(&tx, store)? else {
            return Ok(None);
        };
        let mut events = Vec::new();
        if after < head {
            let mut select = tx.prepare_cached(
                "SELECT id, position, stream, version, type, data, meta, time, origin, schema_version, erased
                 FROM events WHERE store_id = ?1 AND position > ?2 AND position <= ?3
                 ORDER BY position LIMIT ?4",
            )?;
            let mut rows = select.query(params![
                store_id,
                to_i64(after, "after")?,
                to_i64(head, "head")?,
                i64::try_from(limit).unwrap_or(i64::MAX)
            ])?;
            let mut bytes = 0usize;
            while bytes < PULL_BYTE_BUDGET {
                let Some(row) = rows.next()? else { break };
                let event = event_from_row(row)?;
                bytes += event_bytes(&event);
                events.push(event);
            }
        }
        let last = events.last().map_or(after, |e| e.position);
        Ok(Some(PullResponse {
            more: last < head,
            events,
            head,
            epoch,
        }))
    }
}

/// How one push transaction ended.
enum Attempted {
    /// Committed, leaving the store's streams at these versions.
    Done(PushResponse, Known),
    /// An id assumed new is stored: nothing was written.
    StoredIdFound,
}

fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

/// An event from a row of `SELECT id, position, stream, version, type, data, meta, time,
/// origin, schema_version, erased`.
fn event_from_row(row: &rusqlite::Row<'_>) -> Result<Event, StoreError> {
    let data: String = row.get(5)?;
    let meta: Option<String> = row.get(6)?;
    Ok(Event {
        id: stored_id(&row.get::<_, Vec<u8>>(0)?)?,
        position: stored_u64(row.get(1)?, "position")?,
        stream: row.get(2)?,
        version: stored_u64(row.get(3)?, "version")?,
        event_type: row.get(4)?,
        schema_version: stored_schema_version(row.get(9)?)?,
        data: raw_json(data)?,
        meta: meta.map(raw_json).transpose()?,
        time: stored_u64(row.get(7)?, "time")?,
        origin: row.get(8)?,
        pending: false,
        erased: row.get(10)?,
    })
}

pub(crate) fn raw_json(text: String) -> Result<Box<RawValue>, StoreError> {
    RawValue::from_string(text).map_err(|e| StoreError::Corrupt(format!("stored JSON: {e}")))
}

impl ServerStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn push<'a>(
        &'a self,
        store: &'a str,
        client_id: &'a str,
        events: Vec<PushEvent>,
    ) -> BoxFuture<'a, Result<PushResponse, StoreError>> {
        Box::pin(async move {
            let (name, client) = (store.to_owned(), client_id.to_owned());
            let bytes: usize = events
                .iter()
                .map(|e| {
                    e.data.get().len()
                        + e.meta.as_ref().map_or(0, |m| m.get().len())
                        + e.stream.len()
                        + e.event_type.len()
                        + ROW_BYTES
                })
                .sum();
            let response = self
                .blocking(move |inner| inner.push(&name, &client, &events))
                .await?;
            if response
                .results
                .iter()
                .any(|r| matches!(r, crate::protocol::PushResult::Ok { .. }))
            {
                self.changes.notify(store);
                if let Some(conn) = self.inner.checkpoint_due(bytes) {
                    // Not awaited: the answer goes out while it runs.
                    let inner = Arc::clone(&self.inner);
                    tokio::task::spawn_blocking(move || inner.checkpoint(conn));
                }
            }
            Ok(response)
        })
    }

    fn pull<'a>(
        &'a self,
        store: &'a str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<PullResponse, StoreError>> {
        let name = store.to_owned();
        Box::pin(self.blocking(move |inner| inner.pull(&name, after, limit)))
    }

    fn info<'a>(&'a self, store: &'a str) -> BoxFuture<'a, Result<StoreInfo, StoreError>> {
        let name = store.to_owned();
        Box::pin(self.blocking(move |inner| {
            let (_, head, epoch) = Inner::ensure_store(&lock(&inner.writer), &name)?;
            Ok(StoreInfo { head, epoch })
        }))
    }

    fn stored_ids<'a>(
        &'a self,
        store: &'a str,
        ids: &'a [crate::event::EventId],
    ) -> BoxFuture<'a, Result<std::collections::HashSet<crate::event::EventId>, StoreError>> {
        let (name, ids) = (store.to_owned(), ids.to_vec());
        Box::pin(self.blocking(move |inner| inner.stored_ids_of(&name, &ids)))
    }

    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.blocking(|inner| {
            let conn = inner.reader()?;
            let result = conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0));
            inner.give_back(conn);
            result.map(|_| ()).map_err(StoreError::from)
        }))
    }

    fn changes(&self) -> &Changes {
        &self.changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventId, ExpectedVersion};
    use crate::protocol::PushResult;

    fn event(n: u8, expected: ExpectedVersion) -> PushEvent {
        PushEvent {
            id: EventId([n; 16]),
            stream: "s".into(),
            event_type: "T".into(),
            schema_version: 1,
            data: RawValue::from_string("1".into()).unwrap(),
            meta: None,
            time: 0,
            expected_version: expected,
            erased: false,
        }
    }

    /// (position, version) of an accepted event, or the actual version of a rejected one.
    async fn push(store: &SqliteStore, event: PushEvent) -> Result<(u64, u64), Option<u64>> {
        let response = store.push("store", "client", vec![event]).await.unwrap();
        match &response.results[0] {
            PushResult::Ok {
                position, version, ..
            } => Ok((*position, *version)),
            PushResult::Rejected { actual_version, .. } => Err(*actual_version),
            other => panic!("{other:?}"),
        }
    }

    fn temp_db(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("annals-sqlite-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("annals.db")
    }

    #[tokio::test]
    async fn two_servers_on_one_file_see_each_others_stream_versions() {
        let path = temp_db("two");
        let a = SqliteStore::open(&path, Authorities::default())
            .await
            .unwrap();
        let b = SqliteStore::open(&path, Authorities::default())
            .await
            .unwrap();
        assert_eq!(
            push(&a, event(1, ExpectedVersion::NoStream)).await,
            Ok((1, 1))
        );
        assert_eq!(
            push(&b, event(2, ExpectedVersion::Exact(1))).await,
            Ok((2, 2))
        );
        // `a` remembers the stream at version 1, but the head moved since.
        assert_eq!(
            push(&a, event(3, ExpectedVersion::Exact(1))).await,
            Err(Some(2))
        );
        assert_eq!(
            push(&a, event(4, ExpectedVersion::Exact(2))).await,
            Ok((3, 3))
        );
        assert_eq!(push(&b, event(5, ExpectedVersion::Any)).await, Ok((4, 4)));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[tokio::test]
    async fn a_rejection_by_a_remembered_version_is_checked_against_the_stored_one() {
        let path = temp_db("stale");
        let store = SqliteStore::open(&path, Authorities::default())
            .await
            .unwrap();
        assert_eq!(
            push(&store, event(1, ExpectedVersion::NoStream)).await,
            Ok((1, 1))
        );
        // The stored version moves without the head or the push mark (as a bug in the
        // memory would show): a rejection is an answer, so the stored version decides it.
        Connection::open(&path)
            .unwrap()
            .execute("UPDATE events SET version = 5", [])
            .unwrap();
        assert_eq!(
            push(&store, event(2, ExpectedVersion::Exact(5))).await,
            Ok((2, 6))
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[tokio::test]
    async fn a_remembered_version_is_not_trusted_once_the_store_shows_another_push_mark() {
        let path = temp_db("mark");
        let store = SqliteStore::open(&path, Authorities::default())
            .await
            .unwrap();
        assert_eq!(
            push(&store, event(1, ExpectedVersion::NoStream)).await,
            Ok((1, 1))
        );
        // The store as another timeline left it at the same head (a file restored from a
        // backup and pushed to by another server): another version, another mark.
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "UPDATE events SET version = 9; UPDATE stores SET last_push = last_push + 1;",
            )
            .unwrap();
        // Placed after the stored version, not the remembered one (which would make it 2).
        assert_eq!(
            push(&store, event(2, ExpectedVersion::Any)).await,
            Ok((2, 10))
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    fn event_on(stream: &str, n: u32, expected: ExpectedVersion) -> PushEvent {
        let mut id = [0xee; 16];
        id[..4].copy_from_slice(&n.to_le_bytes());
        PushEvent {
            id: EventId(id),
            stream: stream.into(),
            ..event(0, expected)
        }
    }

    /// Pushes `count` events to store "store", over `streams` in turn, 1,000 per push,
    /// with ids numbered from `first`; answers the head.
    async fn push_many(store: &SqliteStore, streams: &[&str], count: u32, first: u32) -> u64 {
        let mut head = 0;
        for start in (0..count).step_by(1_000) {
            let events: Vec<PushEvent> = (start..count.min(start + 1_000))
                .map(|i| {
                    let stream = streams[i as usize % streams.len()];
                    event_on(stream, first + i, ExpectedVersion::Any)
                })
                .collect();
            let response = store.push("store", "client", events).await.unwrap();
            assert!(response
                .results
                .iter()
                .all(|r| matches!(r, PushResult::Ok { .. })));
            head = response.head;
        }
        head
    }

    /// `(head, versions_at)` of store "store", and its rows of `stream_versions`.
    fn stored(path: &Path) -> ((u64, u64), Vec<(String, u64)>) {
        let conn = Connection::open(path).unwrap();
        let row = conn
            .query_row(
                "SELECT head, versions_at FROM stores WHERE name = 'store'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let folded = conn
            .prepare(
                "SELECT stream, version FROM stream_versions
                 WHERE store_id = (SELECT id FROM stores WHERE name = 'store') ORDER BY stream",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        (row, folded)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_push_that_reaches_fold_every_events_writes_the_versions_and_others_derive_from_them(
    ) {
        let path = temp_db("fold");
        let store = SqliteStore::open(&path, Authorities::default())
            .await
            .unwrap();
        let ten: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
        let ten: Vec<&str> = ten.iter().map(String::as_str).collect();
        let n = FOLD_EVERY as u32;
        assert_eq!(
            push(&store, event_on("early", 0, ExpectedVersion::NoStream)).await,
            Ok((1, 1))
        );
        assert_eq!(push_many(&store, &ten, n - 2, 1).await, FOLD_EVERY - 1);
        // No version written yet.
        assert_eq!(stored(&path), ((FOLD_EVERY - 1, 0), vec![]));
        // The push that reaches FOLD_EVERY events folds every stream they moved.
        assert_eq!(
            push(&store, event_on("s9", n, ExpectedVersion::Any)).await,
            Ok((FOLD_EVERY, FOLD_EVERY / 10))
        );
        let (row, folded) = stored(&path);
        assert_eq!(row, (FOLD_EVERY, FOLD_EVERY));
        let mut expected = vec![("early".to_owned(), 1)];
        expected.extend(ten.iter().map(|s| (s.to_string(), FOLD_EVERY / 10)));
        expected[9].1 -= 1; // s8: one event short of the others
        assert_eq!(folded, expected);
        // Pushes after it write none again.
        assert_eq!(
            push_many(&store, &["s3", "late"], 1_000, n + 1).await,
            FOLD_EVERY + 1_000
        );
        assert_eq!(stored(&path), ((FOLD_EVERY + 1_000, FOLD_EVERY), expected));

        // A server without memory of the store derives each version: from stream_versions
        // (early, s9), the events after versions_at (late), or both (s3).
        let fresh = SqliteStore::open(&path, Authorities::default())
            .await
            .unwrap();
        let v = FOLD_EVERY / 10 + 500;
        let head = FOLD_EVERY + 1_000;
        assert_eq!(
            push(&fresh, event_on("s3", 2 * n, ExpectedVersion::Exact(v))).await,
            Ok((head + 1, v + 1))
        );
        assert_eq!(
            push(
                &fresh,
                event_on("late", 2 * n + 1, ExpectedVersion::Exact(500))
            )
            .await,
            Ok((head + 2, 501))
        );
        assert_eq!(
            push(
                &fresh,
                event_on("early", 2 * n + 2, ExpectedVersion::Exact(1))
            )
            .await,
            Ok((head + 3, 2))
        );
        assert_eq!(
            push(&fresh, event_on("s9", 2 * n + 3, ExpectedVersion::Exact(1))).await,
            Err(Some(FOLD_EVERY / 10))
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fold_by_one_server_writes_the_streams_another_server_moved() {
        let path = temp_db("fold-two");
        let a = SqliteStore::open(&path, Authorities::default())
            .await
            .unwrap();
        let b = SqliteStore::open(&path, Authorities::default())
            .await
            .unwrap();
        let n = FOLD_EVERY as u32;
        assert_eq!(
            push(&a, event_on("a", 0, ExpectedVersion::NoStream)).await,
            Ok((1, 1))
        );
        // `b` moves stream "b", which `a` never pushed to.
        assert_eq!(push_many(&b, &["b"], n - 2, 1).await, FOLD_EVERY - 1);
        // `a` makes the fold: its memory is out of date, so it reads what moved.
        assert_eq!(
            push(&a, event_on("a", n, ExpectedVersion::Exact(1))).await,
            Ok((FOLD_EVERY, 2))
        );
        assert_eq!(
            stored(&path),
            (
                (FOLD_EVERY, FOLD_EVERY),
                vec![("a".to_owned(), 2), ("b".to_owned(), FOLD_EVERY - 2)]
            )
        );
        // And `b` goes on from there.
        assert_eq!(
            push(
                &b,
                event_on("b", n + 1, ExpectedVersion::Exact(FOLD_EVERY - 2))
            )
            .await,
            Ok((FOLD_EVERY + 1, FOLD_EVERY - 1))
        );
        assert_eq!(
            push(
                &a,
                event_on("b", n + 2, ExpectedVersion::Exact(FOLD_EVERY - 2))
            )
            .await,
            Err(Some(FOLD_EVERY - 1))
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A file as format-3 servers wrote it: `streams` current at each store's head.
    const FORMAT_3: &str = "CREATE TABLE IF NOT EXISTS stores (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    epoch      TEXT NOT NULL,
    head       INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS streams (
    store_id INTEGER NOT NULL,
    stream   TEXT NOT NULL,
    version  INTEGER NOT NULL,
    PRIMARY KEY (store_id, stream)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    store_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    id       BLOB NOT NULL,
    stream   TEXT NOT NULL,
    version  INTEGER NOT NULL,
    type     TEXT NOT NULL,
    data     TEXT NOT NULL,
    meta     TEXT,
    time     INTEGER NOT NULL,
    origin   TEXT,
    schema_version INTEGER NOT NULL DEFAULT 1,
    -- 1: erased (its stream's $StreamErased came later): data 'null', meta NULL.
    erased   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (store_id, position)
);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_id ON events (store_id, id);
-- Streams whose last event is a lifecycle event ($StreamDeleted: 'deleted',
-- $StreamClosed: 'closed'): what the push rules need to refuse a closed stream and let
-- `no_stream` restart a deleted one. Rows only for such streams.
CREATE TABLE IF NOT EXISTS stream_ends (
    store_id INTEGER NOT NULL,
    stream   TEXT NOT NULL,
    kind     TEXT NOT NULL,
    PRIMARY KEY (store_id, stream)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rejections (
    store_id       INTEGER NOT NULL,
    id             BLOB NOT NULL,
    fingerprint    INTEGER NOT NULL,
    reason         TEXT NOT NULL,
    actual_version INTEGER,
    PRIMARY KEY (store_id, id, fingerprint)
) WITHOUT ROWID;
INSERT INTO stores (id, name, epoch, head, created_ms) VALUES
    (1, 'store', '00000000000000000000000000000001', 6, 0),
    (2, 'other', '00000000000000000000000000000002', 2, 0);
INSERT INTO events (store_id, position, id, stream, version, type, data, time) VALUES
    (1, 1, x'00000000000000000000000000000001', 'x', 1, 'T', '1', 0),
    (1, 2, x'00000000000000000000000000000002', 'y', 1, 'T', '1', 0),
    (1, 3, x'00000000000000000000000000000003', 'x', 2, 'T', '1', 0),
    (1, 4, x'00000000000000000000000000000004', 'z', 1, 'T', '1', 0),
    (1, 5, x'00000000000000000000000000000005', 'x', 3, 'T', '1', 0),
    (1, 6, x'00000000000000000000000000000006', 'z', 2, 'T', '1', 0),
    (2, 1, x'00000000000000000000000000000007', 'x', 1, 'T', '1', 0),
    (2, 2, x'00000000000000000000000000000008', 'x', 2, 'T', '1', 0);
INSERT INTO streams (store_id, stream, version) VALUES
    (1, 'x', 3), (1, 'y', 1), (1, 'z', 2), (2, 'x', 2);
PRAGMA user_version = 3;
";

    #[tokio::test]
    async fn a_format_3_file_opens_in_format_4_with_every_stream_at_its_version() {
        let path = temp_db("format-3");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        Connection::open(&path)
            .unwrap()
            .execute_batch(FORMAT_3)
            .unwrap();
        // A format-3 server, running on the file since before the migration, with its
        // statements prepared then.
        let older = Connection::open(&path).unwrap();
        let mut older_update = older
            .prepare(
                "UPDATE streams SET version = ?3 WHERE store_id = ?1 AND stream = ?2 AND version = ?4",
            )
            .unwrap();
        let store = SqliteStore::open(&path, Authorities::default())
            .await
            .unwrap();
        // Its next push fails (the statement is prepared again against a view).
        assert!(older_update.execute(params![1, "x", 4, 3]).is_err());
        drop(older_update);
        drop(older);
        {
            let conn = Connection::open(&path).unwrap();
            let format: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(format, 4);
            let rows: Vec<(i64, String, i64)> = conn
                .prepare("SELECT store_id, stream, version FROM stream_versions ORDER BY 1, 2")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let expected = [(1, "x", 3), (1, "y", 1), (1, "z", 2), (2, "x", 2)]
                .map(|(id, s, v)| (id, s.to_owned(), v));
            assert_eq!(rows, expected);
            let at: Vec<(i64, i64)> = conn
                .prepare("SELECT head, versions_at FROM stores ORDER BY id")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(at, [(6, 6), (2, 2)]);
            // The fence: `streams` shows nothing and takes no writes (an older server's
            // push fails rather than number events from it).
            let shown: i64 = conn
                .query_row("SELECT count(*) FROM streams", [], |r| r.get(0))
                .unwrap();
            assert_eq!(shown, 0);
            assert!(conn
                .execute("UPDATE streams SET version = 4 WHERE stream = 'x'", [])
                .is_err());
            assert!(conn
                .execute("INSERT INTO streams VALUES (1, 'w', 1)", [])
                .is_err());
        }
        assert_eq!(
            push(&store, event_on("x", 1, ExpectedVersion::Exact(3))).await,
            Ok((7, 4))
        );
        assert_eq!(
            push(&store, event_on("y", 2, ExpectedVersion::Exact(1))).await,
            Ok((8, 2))
        );
        assert_eq!(
            push(&store, event_on("z", 3, ExpectedVersion::Exact(1))).await,
            Err(Some(2))
        );
        let other = store
            .push(
                "other",
                "client",
                vec![event_on("x", 4, ExpectedVersion::Exact(2))],
            )
            .await
            .unwrap();
        assert!(
            matches!(
                other.results[0],
                PushResult::Ok {
                    position: 3,
                    version: 3,
                    ..
                }
            ),
            "{other:?}"
        );
        // Opened again (already format 4): nothing changes.
        drop(store);
        let again = SqliteStore::open(&path, Authorities::default())
            .await
            .unwrap();
        assert_eq!(
            push(&again, event_on("x", 5, ExpectedVersion::Exact(4))).await,
            Ok((9, 5))
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pushed_events_reach_the_database_file_long_before_the_writers_own_checkpoint() {
        let path = temp_db("checkpoint");
        let store = SqliteStore::open(&path, Authorities::default())
            .await
            .unwrap();
        // Pushes of 100 events of about 4 KB, to somewhat more than CHECKPOINT_BYTES: a
        // tenth of the WAL pages (BACKSTOP_PAGES) at which the writer checkpoints itself.
        let data = RawValue::from_string(format!("\"{}\"", "x".repeat(4_000))).unwrap();
        let pushes = CHECKPOINT_BYTES / (100 * 4_000) + 2;
        for p in 0..pushes {
            let events = (0..100)
                .map(|i| PushEvent {
                    data: data.clone(),
                    ..event_on("big", (p * 100 + i) as u32, ExpectedVersion::Any)
                })
                .collect();
            store.push("store", "client", events).await.unwrap();
        }
        // The WAL holds them at first; a background checkpoint copies them over.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(&path).unwrap().len() < CHECKPOINT_BYTES as u64 {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file holds {} bytes",
                std::fs::metadata(&path).unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[tokio::test]
    async fn a_file_of_a_later_format_is_refused() {
        let path = temp_db("later");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", FORMAT + 1)
            .unwrap();
        let refused = SqliteStore::open(&path, Authorities::default()).await;
        assert!(
            matches!(&refused, Err(StoreError::Corrupt(m)) if m.contains("format 5")),
            "{:?}",
            refused.err()
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
