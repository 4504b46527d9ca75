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
//! - Readers use their own connections (WAL lets them read while the writer writes).
//! - A push reads the versions of the streams it touches only when this process's last
//!   push to the store did not leave the head where it is now ([`Known`]); each version is
//!   checked as it is written.
//! - Long polls are woken in-process through [`Changes`].

use std::collections::HashMap;
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

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stores (
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
";

/// Erases the events of a stream (`?2`) below a version (`?3`): see [`crate::erasure`].
const ERASE_EVENTS: &str = "UPDATE events SET data = 'null', meta = NULL, erased = 1
    WHERE store_id = ?1 AND stream = ?2 AND version < ?3 AND erased = 0";

/// The schema version this code writes (`PRAGMA user_version`). 2 added
/// `events.schema_version`, 3 `events.erased`; an older file gains them when opened
/// ([`migrate`]).
const FORMAT: i64 = 3;

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
}

/// The versions of a store's streams (those with a row) as this process's last push to
/// it left them, at `head`. They hold while the head is the one they were left at: every
/// push that moves a stream's version moves the head, under the write lock, whichever
/// process makes it. The push that uses them checks each one as it writes it all the same
/// (see [`Inner::push_once`]).
struct Known {
    store_id: i64,
    head: u64,
    versions: HashMap<String, u64>,
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
            writer.execute_batch(SCHEMA)?;
            migrate(&mut writer)?;
            Ok(Inner {
                path,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                authorities,
                known: Mutex::new(HashMap::new()),
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

/// Brings a database written by an older server to [`FORMAT`], in one transaction (which
/// takes the write lock first, so two servers opening the same old file do not both alter
/// it). Format 1 lacks `events.schema_version`: every event stored then was at schema
/// version 1, which the column's default says.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let has_schema_version = tx
        .prepare("SELECT 1 FROM pragma_table_info('events') WHERE name = 'schema_version'")?
        .exists([])?;
    if !has_schema_version {
        tx.execute_batch(
            "ALTER TABLE events ADD COLUMN schema_version INTEGER NOT NULL DEFAULT 1",
        )?;
    }
    // Format 3: nothing stored before erasure existed is erased.
    let has_erased = tx
        .prepare("SELECT 1 FROM pragma_table_info('events') WHERE name = 'erased'")?
        .exists([])?;
    if !has_erased {
        tx.execute_batch("ALTER TABLE events ADD COLUMN erased INTEGER NOT NULL DEFAULT 0")?;
    }
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
        // back and the push planned again knowing the stored ids. It also uses the stream
        // versions remembered from the last push; should one prove out of date, the push
        // is planned again reading them all.
        let mut known = lock(&self.known).remove(store);
        let mut look_up_ids = false;
        loop {
            let remembered = known.take();
            let can_forget = remembered.is_some();
            match Self::push_once(
                &mut conn,
                &self.authorities,
                store,
                client_id,
                events,
                look_up_ids,
                remembered,
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
                Attempted::StaleVersions if can_forget => {}
                Attempted::StoredIdFound => {
                    return Err(StoreError::Corrupt(
                        "an id looked up as new is stored after all".into(),
                    ))
                }
                Attempted::StaleVersions => {
                    return Err(StoreError::Corrupt(
                        "a stream's version moved under the write lock".into(),
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

    /// The stored versions of `streams` (those with a row), read under the write lock.
    fn stream_versions<'a>(
        tx: &Connection,
        store_id: i64,
        streams: impl IntoIterator<Item = &'a str>,
        versions: &mut HashMap<String, u64>,
    ) -> Result<(), StoreError> {
        let mut find =
            tx.prepare_cached("SELECT version FROM streams WHERE store_id = ?1 AND stream = ?2")?;
        for stream in streams {
            let found = find
                .query_row(params![store_id, stream], |r| r.get::<_, i64>(0))
                .optional()?;
            match found {
                Some(version) => {
                    versions.insert(stream.to_owned(), stored_u64(version, "version")?);
                }
                None => {
                    versions.remove(stream);
                }
            }
        }
        Ok(())
    }

    /// One push transaction; with `look_up_ids` false it assumes the ids are new and
    /// answers [`Attempted::StoredIdFound`] (having written nothing) when one is not. It
    /// takes the versions of the streams `known` holds from it when the head is still the
    /// one it was left at, and answers [`Attempted::StaleVersions`] (having written
    /// nothing) when one of them is not what is stored.
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
        let (store_id, head, epoch) = Self::ensure_store(&tx, store)?;
        let known = known
            .filter(|k| k.store_id == store_id && k.head == head)
            .map(|k| k.versions)
            .unwrap_or_default();

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
        // A stream's version is taken from memory, or read; a stream without a row has
        // none in `versions` (which holds the other streams remembered too).
        let mut versions = known;
        let (mut remembered, unknown): (Vec<&str>, Vec<&str>) = distinct_streams(events)
            .into_iter()
            .partition(|s| versions.contains_key(*s));
        Self::stream_versions(&tx, store_id, unknown, &mut versions)?;

        let mut ends = HashMap::new();
        let any_ended = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM stream_ends WHERE store_id = ?1)")?
            .query_row([store_id], |r| r.get::<_, bool>(0))?;
        if any_ended {
            let mut find = tx.prepare_cached(
                "SELECT kind FROM stream_ends WHERE store_id = ?1 AND stream = ?2",
            )?;
            for stream in distinct_streams(events) {
                let found = find
                    .query_row(params![store_id, stream], |r| r.get::<_, String>(0))
                    .optional()?;
                if let Some(end) = found.as_deref().map(stream_end_from).transpose()?.flatten() {
                    ends.insert(stream.to_owned(), end);
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
        if plan.rejects_any() && (!look_up_ids || !remembered.is_empty()) {
            // A rejection is an answer, and a stored id answers `duplicate` before any
            // check: look the ids up, and read the remembered versions (still under the
            // lock), and plan again.
            if !look_up_ids {
                existing = Self::stored_ids(&tx, store_id, events)?;
            }
            Self::stream_versions(&tx, store_id, remembered.drain(..), &mut versions)?;
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
            // Streams with a version have a row: each moves only from the version the
            // plan started from (which checks a remembered one), in one probe rather than
            // an upsert's two; the others get one.
            let mut update = tx.prepare_cached(
                "UPDATE streams SET version = ?3 WHERE store_id = ?1 AND stream = ?2 AND version = ?4",
            )?;
            let mut create = tx.prepare_cached(
                "INSERT INTO streams (store_id, stream, version) VALUES (?1, ?2, ?3)",
            )?;
            for (stream, version) in &plan.stream_versions {
                let new = to_i64(*version, "version")?;
                match versions.get(stream) {
                    Some(old) => {
                        let old = to_i64(*old, "version")?;
                        if update.execute(params![store_id, stream, new, old])? != 1 {
                            // Dropping the transaction rolls it back.
                            return Ok(Attempted::StaleVersions);
                        }
                    }
                    None => {
                        create.execute(params![store_id, stream, new])?;
                    }
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
            tx.prepare_cached("UPDATE stores SET head = ?1 WHERE id = ?2")?
                .execute(params![to_i64(plan.head, "head")?, store_id])?;
        }
        tx.commit()?;
        // What the next push may take from memory: this push's streams as it left them,
        // beside the other streams remembered at the head it started from.
        for (stream, version) in plan.stream_versions {
            match versions.get_mut(stream.as_str()) {
                Some(v) => *v = version,
                None => {
                    versions.insert(stream, version);
                }
            }
        }
        Ok(Attempted::Done(
            PushResponse {
                results: plan.results,
                head: plan.head,
                epoch,
            },
            Known {
                store_id,
                head: plan.head,
                versions,
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
    /// A remembered stream version is not the stored one: nothing was written.
    StaleVersions,
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
            let response = self
                .blocking(move |inner| inner.push(&name, &client, &events))
                .await?;
            if response
                .results
                .iter()
                .any(|r| matches!(r, crate::protocol::PushResult::Ok { .. }))
            {
                self.changes.notify(store);
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
    async fn a_remembered_stream_version_that_is_not_the_stored_one_is_read_again() {
        let path = temp_db("stale");
        let store = SqliteStore::open(&path, Authorities::default())
            .await
            .unwrap();
        assert_eq!(
            push(&store, event(1, ExpectedVersion::NoStream)).await,
            Ok((1, 1))
        );
        // The stored version moves without the head (as after a restore): whatever the
        // server remembers, the stored one decides.
        let sneak = |version: i64| {
            Connection::open(&path)
                .unwrap()
                .execute("UPDATE streams SET version = ?1", [version])
                .unwrap()
        };
        sneak(5);
        // Refused by the remembered version 1: read again, and accepted.
        assert_eq!(
            push(&store, event(2, ExpectedVersion::Exact(5))).await,
            Ok((2, 6))
        );
        sneak(9);
        // Accepted at the remembered version: its write finds 9, and it is planned again.
        assert_eq!(
            push(&store, event(3, ExpectedVersion::Any)).await,
            Ok((3, 10))
        );
        assert_eq!(
            push(&store, event(4, ExpectedVersion::Exact(10))).await,
            Ok((4, 11))
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
