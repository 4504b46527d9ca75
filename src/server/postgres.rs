//! The PostgreSQL backend, for several server instances behind a load balancer.
//!
//! - A push is one transaction that first locks the store's row in `stores`
//!   (`SELECT ... FOR UPDATE`), so pushes to one store are serialised across every instance
//!   and positions are assigned under that lock: a reader never sees a position that a
//!   slower writer fills in later. Pushes to different stores do not wait for each other.
//! - Two round trips per push, neither with per-event statements. The first sends
//!   `BEGIN`, the lock and the lookup of the pushed streams' current versions (table
//!   `streams`) together: under READ COMMITTED every statement takes its snapshot when it
//!   starts, and the server runs them in order, so the lookup sees the state left by the
//!   previous holder of the lock. The second sends the multi-row insert (`UNNEST` of
//!   arrays), the stream version updates, the head update, the `NOTIFY` and `COMMIT`
//!   together; the answer is sent only after every one of them succeeded, `COMMIT`
//!   included, so acknowledged events are durable.
//! - Ids already stored are not looked up first: the unique index on `(store_id, id)`
//!   refuses them, which rolls the whole transaction back, and the push is then planned
//!   again in a new transaction with the lookup (so a retried batch costs one wasted
//!   attempt, and answers `duplicate` as before). A push with a rejected event looks its
//!   ids up before writing, since a stored id answers `duplicate` before any check.
//! - Lookups probe the indexes one key at a time (`LATERAL ... LIMIT 1`), whatever the
//!   statistics: a cached generic plan made while a table was small must not turn into a
//!   scan of the whole store once it has grown.
//! - `NOTIFY annals_events, '<store>'` is sent inside the push transaction (delivered on
//!   commit); every instance keeps one `LISTEN` connection that wakes its long polls.
//!
//! URL: any `postgres://` URL that tokio-postgres understands, plus two options of ours:
//! `schema=NAME` (tables live in that schema, created if needed; the standard
//! `options=-csearch_path%3DNAME` works too, for an existing schema) and `pool_size=N`
//! (connections per instance, default 16).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{oneshot, Semaphore, SemaphorePermit};
use tokio::task::JoinHandle;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Row, Statement};

use crate::event::{Event, EventId};
use crate::protocol::{PullResponse, PushEvent, PushResponse, PushResult};
use crate::push::authority::Authorities;
use crate::server::sqlite::raw_json;
use crate::server::store::{
    distinct_streams, event_bytes, new_epoch, plan_push, stored_id, stored_u64, to_i64, BoxFuture,
    Changes, Placed, Refusal, ServerStore, StoreError, StoreInfo, PULL_BYTE_BUDGET,
};

/// The NOTIFY channel; the payload is the store name.
pub const CHANNEL: &str = "annals_events";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stores (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    epoch      TEXT NOT NULL,
    head       BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS streams (
    store_id BIGINT NOT NULL,
    stream   TEXT NOT NULL,
    version  BIGINT NOT NULL,
    PRIMARY KEY (store_id, stream)
) WITH (fillfactor = 50);
CREATE TABLE IF NOT EXISTS events (
    store_id BIGINT NOT NULL,
    position BIGINT NOT NULL,
    id       BYTEA NOT NULL,
    stream   TEXT NOT NULL,
    version  BIGINT NOT NULL,
    type     TEXT NOT NULL,
    data     TEXT NOT NULL,
    meta     TEXT,
    time     BIGINT NOT NULL,
    origin   TEXT,
    PRIMARY KEY (store_id, position),
    UNIQUE (store_id, id)
);
CREATE TABLE IF NOT EXISTS rejections (
    store_id       BIGINT NOT NULL,
    id             BYTEA NOT NULL,
    fingerprint    BIGINT NOT NULL,
    reason         TEXT NOT NULL,
    actual_version BIGINT,
    PRIMARY KEY (store_id, id, fingerprint)
);
";

/// Every push rewrites the version row of each stream it touches: with half of each page
/// left free, the new row versions fit beside the old ones (HOT updates, no index
/// writes). Databases created before this setting get it at startup; a fillfactor that
/// an operator chose is kept.
const STREAMS_FILLFACTOR: &str = "
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_class
        WHERE oid = to_regclass('streams')
          AND EXISTS (SELECT 1 FROM unnest(reloptions) o WHERE o LIKE 'fillfactor=%')
    ) THEN
        ALTER TABLE streams SET (fillfactor = 50);
    END IF;
END $$;
";

/// Moves the version of streams that have a row, each only from the version the push was
/// planned with (the caller counts the rows). An update rather than an upsert, which
/// would probe every key twice and lock each row on its own.
const UPDATE_STREAMS: &str = "
UPDATE streams s SET version = t.version
FROM UNNEST($2::text[], $3::bigint[], $4::bigint[]) AS t(stream, old, version)
WHERE s.store_id = $1 AND s.stream = t.stream AND s.version = t.old";

/// At most this many stream versions are remembered, over all stores.
const MAX_KNOWN_STREAMS: usize = 100_000;

/// Starts a push transaction. Explicitly READ COMMITTED: the lookups pipelined behind the
/// lock rely on each statement taking a new snapshot.
const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";

/// Serialises schema creation between instances starting at the same time.
const MIGRATION_LOCK: i64 = 0x616e_6e61_6c73; // "annals"

const DEFAULT_POOL_SIZE: usize = 16;

/// A parsed `--database postgres://...`.
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub config: Config,
    pub schema: Option<String>,
    pub pool_size: usize,
}

impl PgSettings {
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut schema = None;
        let mut pool_size = DEFAULT_POOL_SIZE;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "schema" => {
                    let decoded = percent_decode(value)
                        .filter(|s| is_valid_schema(s))
                        .ok_or_else(|| {
                            StoreError::BadUrl(format!(
                                "schema={value:?}: use 1 to 63 of a-z A-Z 0-9 _, not starting with a digit"
                            ))
                        })?;
                    schema = Some(decoded);
                }
                "pool_size" => {
                    pool_size = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=1024).contains(n))
                        .ok_or_else(|| {
                            StoreError::BadUrl(format!("pool_size={value:?}: use 1 to 1024"))
                        })?;
                }
                _ => kept.push(pair),
            }
        }
        let rebuilt = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let config = Config::from_str(&rebuilt).map_err(|e| StoreError::BadUrl(e.to_string()))?;
        Ok(PgSettings {
            config,
            schema,
            pool_size,
        })
    }

    /// A plain connection (search path set), its connection task spawned.
    async fn connect(&self) -> Result<Client, StoreError> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "postgres connection closed");
            }
        });
        // Durable before acknowledged: a database whose default is `synchronous_commit =
        // off` would answer COMMIT before the WAL is flushed; stronger settings are kept.
        let mut setup = String::from(
            "SELECT set_config('synchronous_commit', 'on', false) \
             WHERE current_setting('synchronous_commit') = 'off';",
        );
        if let Some(schema) = &self.schema {
            setup.push_str(&format!("SET search_path TO {};", quote_ident(schema)));
        }
        client.batch_execute(&setup).await?;
        Ok(client)
    }
}

fn is_valid_schema(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The statements every pooled connection prepares once.
struct Statements {
    lock_store: Statement,
    read_store: Statement,
    create_store: Statement,
    existing_ids: Statement,
    refused_ids: Statement,
    insert_rejections: Statement,
    stream_versions: Statement,
    insert_events: Statement,
    insert_streams: Statement,
    update_head: Statement,
    notify: Statement,
    read_events: Statement,
    stream_events: Statement,
}

struct PgConn {
    client: Client,
    st: Statements,
    /// True from `BEGIN` until the transaction is known to be over; a connection dropped
    /// in this state (a cancelled push) is closed, not reused, which rolls it back.
    in_transaction: bool,
}

impl PgConn {
    async fn open(settings: &PgSettings) -> Result<Self, StoreError> {
        let client = settings.connect().await?;
        let (
            lock_store,
            read_store,
            create_store,
            existing_ids,
            refused_ids,
            insert_rejections,
            stream_versions,
            insert_events,
            insert_streams,
            update_head,
            notify,
            read_events,
            stream_events,
        ) = tokio::try_join!(
            client.prepare("SELECT id, head, epoch FROM stores WHERE name = $1 FOR UPDATE"),
            client.prepare("SELECT id, head, epoch FROM stores WHERE name = $1"),
            client.prepare(
                "INSERT INTO stores (name, epoch) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING"
            ),
            // Both lookups take the store by name, so that they can be sent with the lock.
            // One index probe per key (LATERAL ... LIMIT 1 cannot become a join that reads
            // the whole store): neither `= ANY($2)` nor a plain join with UNNEST is safe
            // from a generic plan cached while the table was small, which filters or
            // hashes every row of the store.
            client.prepare(
                "SELECT e.id, e.position, e.version
                 FROM UNNEST($2::bytea[]) AS k(id)
                 CROSS JOIN LATERAL (
                     SELECT e.id, e.position, e.version FROM events e
                     WHERE e.store_id = (SELECT id FROM stores WHERE name = $1) AND e.id = k.id
                     LIMIT 1
                 ) e"
            ),
            // Refusals remembered for the pushed ids (usually none: one probe per key).
            client.prepare(
                "SELECT r.id, r.fingerprint, r.reason, r.actual_version
                 FROM UNNEST($2::bytea[]) AS k(id)
                 CROSS JOIN LATERAL (
                     SELECT r.id, r.fingerprint, r.reason, r.actual_version FROM rejections r
                     WHERE r.store_id = (SELECT id FROM stores WHERE name = $1) AND r.id = k.id
                 ) r"
            ),
            client.prepare(
                "INSERT INTO rejections (store_id, id, fingerprint, reason, actual_version)
                 SELECT $1, t.id, t.fingerprint, t.reason, t.actual_version
                 FROM UNNEST($2::bytea[], $3::bigint[], $4::text[], $5::bigint[])
                      AS t(id, fingerprint, reason, actual_version)
                 ON CONFLICT DO NOTHING"
            ),
            client.prepare(
                "SELECT k.stream, s.version
                 FROM UNNEST($2::text[]) AS k(stream)
                 CROSS JOIN LATERAL (
                     SELECT s.version FROM streams s
                     WHERE s.store_id = (SELECT id FROM stores WHERE name = $1) AND s.stream = k.stream
                     LIMIT 1
                 ) s"
            ),
            client.prepare(
                "INSERT INTO events (store_id, position, id, stream, version, type, data, meta, time, origin)
                 SELECT $1, t.position, t.id, t.stream, t.version, t.type, t.data, t.meta, t.time, $10
                 FROM UNNEST($2::bigint[], $3::bytea[], $4::text[], $5::bigint[], $6::text[],
                             $7::text[], $8::text[], $9::bigint[])
                      AS t(position, id, stream, version, type, data, meta, time)"
            ),
            client.prepare(
                "INSERT INTO streams (store_id, stream, version)
                 SELECT $1, t.stream, t.version FROM UNNEST($2::text[], $3::bigint[]) AS t(stream, version)"
            ),
            client.prepare("UPDATE stores SET head = $2 WHERE id = $1"),
            client.prepare("SELECT pg_notify($1, $2)"),
            client.prepare(
                "SELECT id, position, stream, version, type, data, meta, time, origin
                 FROM events WHERE store_id = $1 AND position > $2 AND position <= $3
                 ORDER BY position LIMIT $4"
            ),
            client.prepare(
                "SELECT id, position, stream, version, type, data, meta, time, origin
                 FROM events WHERE store_id = $1 AND stream = ANY($2::text[])
                 ORDER BY position"
            ),
        )?;
        Ok(PgConn {
            client,
            in_transaction: false,
            st: Statements {
                lock_store,
                read_store,
                create_store,
                existing_ids,
                refused_ids,
                insert_rejections,
                stream_versions,
                insert_events,
                insert_streams,
                update_head,
                notify,
                read_events,
                stream_events,
            },
        })
    }
}

/// A small connection pool: at most `size` connections, idle ones reused, broken ones
/// dropped.
struct Pool {
    settings: PgSettings,
    idle: Mutex<Vec<PgConn>>,
    permits: Semaphore,
}

struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<PgConn>,
    _permit: SemaphorePermit<'a>,
}

impl Lease<'_> {
    fn conn(&mut self) -> Result<&mut PgConn, StoreError> {
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::Task("connection already returned".into()))
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if !conn.client.is_closed() && !conn.in_transaction {
                self.pool.idle_lock().push(conn);
            }
        }
    }
}

impl Pool {
    fn idle_lock(&self) -> MutexGuard<'_, Vec<PgConn>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn get(&self) -> Result<Lease<'_>, StoreError> {
        let permit = tokio::time::timeout(Duration::from_secs(30), self.permits.acquire())
            .await
            .map_err(|_| StoreError::Unavailable("no free database connection for 30 s".into()))?
            .map_err(|_| StoreError::Unavailable("the connection pool is closed".into()))?;
        let reused = loop {
            let Some(conn) = self.idle_lock().pop() else {
                break None;
            };
            if !conn.client.is_closed() {
                break Some(conn);
            }
        };
        let conn = match reused {
            Some(conn) => conn,
            None => PgConn::open(&self.settings).await?,
        };
        Ok(Lease {
            pool: self,
            conn: Some(conn),
            _permit: permit,
        })
    }
}

pub struct PgStore {
    pool: Pool,
    changes: Arc<Changes>,
    listener: JoinHandle<()>,
    authorities: Authorities,
    known: KnownVersions,
}

/// The stream versions of a store as this instance last saw them, at `head`.
struct Known {
    store_id: i64,
    head: u64,
    /// Whether the last push found the memory still current. If not (other instances
    /// push to this store too), the next push looks every stream up in its first round
    /// trip rather than paying a second one for the streams it skipped.
    trusted: bool,
    /// Version of each stream (0: no events).
    versions: HashMap<String, u64>,
}

/// Per store, the [`Known`] versions; a push takes its store's out while it runs (a
/// concurrent push to the same store looks everything up) and puts the new ones back.
#[derive(Default)]
struct KnownVersions {
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

    fn take(&self, store: &str) -> Option<Known> {
        let mut inner = self.lock();
        let known = inner.stores.remove(store)?;
        inner.streams -= known.versions.len();
        Some(known)
    }

    fn put(&self, store: &str, known: Known) {
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

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PgStore {
    /// Connects, creates the schema and tables if needed, and starts listening for other
    /// instances' commits.
    pub async fn open(url: &str, authorities: Authorities) -> Result<Self, StoreError> {
        let settings = PgSettings::from_url(url)?;
        migrate(&settings).await?;
        let changes = Arc::new(Changes::default());
        let (ready_tx, ready_rx) = oneshot::channel();
        let listener = tokio::spawn(listen(settings.clone(), Arc::clone(&changes), ready_tx));
        match tokio::time::timeout(Duration::from_secs(30), ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                listener.abort();
                return Err(e);
            }
            _ => {
                listener.abort();
                return Err(StoreError::Unavailable(
                    "could not start listening for notifications".into(),
                ));
            }
        }
        let pool = Pool {
            permits: Semaphore::new(settings.pool_size),
            settings,
            idle: Mutex::new(Vec::new()),
        };
        // Fail fast on a database that accepts connections but not our statements.
        drop(pool.get().await?);
        Ok(PgStore {
            pool,
            authorities,
            changes,
            listener,
            known: KnownVersions::default(),
        })
    }

    async fn push_inner(
        &self,
        store: &str,
        client_id: &str,
        events: &[PushEvent],
    ) -> Result<PushResponse, StoreError> {
        let mut lease = self.pool.get().await?;
        let conn = lease.conn()?;
        let mut attempt = Attempt {
            remembered: true,
            look_up_ids: false,
        };
        loop {
            let known = if attempt.remembered {
                self.known.take(store)
            } else {
                None
            };
            match self
                .push_once(conn, store, client_id, events, attempt, known)
                .await
            {
                Ok((response, known)) => {
                    self.known.put(store, known);
                    return Ok(response);
                }
                // Each retry turns one assumption off, so there are at most three attempts.
                Err(Failed {
                    retry: Some(next), ..
                }) if next != attempt && !conn.in_transaction => attempt = next,
                Err(failed) => return Err(failed.error),
            }
        }
    }

    /// One push transaction on `conn`, rolled back if it fails (or the connection is marked
    /// to be closed).
    async fn push_once(
        &self,
        conn: &mut PgConn,
        store: &str,
        client_id: &str,
        events: &[PushEvent],
        attempt: Attempt,
        known: Option<Known>,
    ) -> Result<(PushResponse, Known), Failed> {
        let PgConn {
            client,
            st,
            in_transaction,
        } = conn;
        *in_transaction = true;
        let result = self
            .push_transaction(client, st, store, client_id, events, attempt, known)
            .await;
        match &result {
            Ok(_) | Err(Failed { ended: true, .. }) => *in_transaction = false,
            Err(Failed { ended: false, .. }) => {
                if !client.is_closed() && client.batch_execute("ROLLBACK").await.is_ok() {
                    *in_transaction = false;
                }
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn push_transaction(
        &self,
        client: &Client,
        st: &Statements,
        store: &str,
        client_id: &str,
        events: &[PushEvent],
        attempt: Attempt,
        known: Option<Known>,
    ) -> Result<(PushResponse, Known), Failed> {
        let ids: Vec<&[u8]> = events.iter().map(|e| &e.id.0[..]).collect();
        let streams = distinct_streams(events);
        // The streams whose versions this instance remembers are not looked up, unless the
        // last push found its memory of this store out of date.
        let (skipped, looked_up): (Vec<&str>, Vec<&str>) = match &known {
            Some(k) if k.trusted => streams.iter().partition(|s| k.versions.contains_key(**s)),
            _ => (Vec::new(), streams),
        };
        let store_params: [&(dyn ToSql + Sync); 1] = [&store];
        let (looked_up_ref, ids_ref) = (&looked_up, &ids);
        let lookups = move || async move {
            tokio::try_join!(
                stream_versions(client, st, store, looked_up_ref),
                async move {
                    if attempt.look_up_ids {
                        existing_ids(client, st, store, ids_ref).await
                    } else {
                        Ok(Vec::new())
                    }
                },
                refused_ids(client, st, store, ids_ref),
            )
        };
        // Round trip 1: BEGIN, the lock, then the lookups (which see the state after it).
        let (begun, locked, looked) = tokio::join!(
            client.batch_execute(BEGIN),
            client.query_opt(&st.lock_store, &store_params),
            lookups(),
        );
        begun?;
        let (row, (mut versions, id_rows, refused)) = match locked? {
            Some(row) => (row, looked?),
            None => {
                // A new store. Another instance may create it (and push to it) meanwhile,
                // so look again once it is locked.
                client
                    .execute(&st.create_store, &[&store, &new_epoch()?])
                    .await?;
                tokio::try_join!(
                    async { Ok(client.query_one(&st.lock_store, &store_params).await?) },
                    lookups(),
                )?
            }
        };
        let (store_id, head, epoch) = store_row(&row)?;
        let mut existing = placed_ids(&id_rows)?;

        // What is remembered holds only while the head is the one it was remembered at:
        // every push that changes a stream's version moves the head, under the lock. The
        // writes check it all the same (see below).
        let had_known = known.is_some();
        let current = known
            .as_ref()
            .is_some_and(|k| k.store_id == store_id && k.head == head);
        let mut rest = match known {
            Some(k) if current => k.versions,
            _ => HashMap::new(),
        };
        let mut remembered = false;
        if !skipped.is_empty() {
            if current {
                for s in &skipped {
                    if let Some((name, version)) = rest.remove_entry(*s) {
                        versions.insert(name, version);
                    }
                }
                remembered = true;
            } else {
                // Out of date: one more round trip for the skipped streams.
                versions.extend(stream_versions(client, st, store, &skipped).await?);
            }
        }
        // Every pushed stream now has its version in `versions` (0: no events yet).

        let mut histories: HashMap<String, Vec<Event>> = HashMap::new();
        let claimed = self.authorities.claimed_streams(events);
        if !claimed.is_empty() {
            let params: [&(dyn ToSql + Sync); 2] = [&store_id, &claimed];
            for row in client.query(&st.stream_events, &params).await? {
                let event = event_from_row(&row)?;
                histories
                    .entry(event.stream.clone())
                    .or_default()
                    .push(event);
            }
        }
        let mut plan = plan_push(
            head,
            events,
            &existing,
            &refused,
            &versions,
            Some(&mut self.authorities.checker(histories.clone())),
        );
        if plan.rejects_any() && (!attempt.look_up_ids || remembered) {
            // A rejection is an answer: it must come from the stored state. A stored id
            // answers `duplicate` before any check, so look the ids up, and read the
            // versions that were remembered (still under the lock); then plan again.
            let (id_rows, fresh) =
                tokio::try_join!(existing_ids(client, st, store, &ids), async {
                    if remembered {
                        stream_versions(client, st, store, &skipped).await
                    } else {
                        Ok(HashMap::new())
                    }
                },)?;
            existing = placed_ids(&id_rows)?;
            versions.extend(fresh);
            remembered = false;
            plan = plan_push(
                head,
                events,
                &existing,
                &refused,
                &versions,
                Some(&mut self.authorities.checker(histories)),
            );
        }
        if !plan.refusals.is_empty() {
            // Remembered, so that a retry of a refused event gets the same answer (rare:
            // one more round trip, only for pushes with refusals).
            remember_refusals(client, st, store_id, events, &plan).await?;
        }

        // What the next push on this instance may skip looking up.
        let remember = |versions: HashMap<String, u64>, head: u64| {
            let versions = if versions.len() + rest.len() <= MAX_KNOWN_STREAMS {
                let mut all = rest;
                all.extend(versions);
                all
            } else {
                versions
            };
            Known {
                store_id,
                head,
                trusted: current || !had_known,
                versions,
            }
        };
        if plan.inserts.is_empty() {
            client.batch_execute("COMMIT").await.map_err(ended)?;
            let known = remember(versions, plan.head);
            return Ok((
                PushResponse {
                    results: plan.results,
                    head: plan.head,
                    epoch,
                },
                known,
            ));
        }
        let n = plan.inserts.len();
        let mut positions = Vec::with_capacity(n);
        let mut inserted_ids = Vec::with_capacity(n);
        let mut event_streams = Vec::with_capacity(n);
        let mut event_versions = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut data = Vec::with_capacity(n);
        let mut metas = Vec::with_capacity(n);
        let mut times = Vec::with_capacity(n);
        for (index, placed) in &plan.inserts {
            let event = events
                .get(*index)
                .ok_or_else(|| StoreError::Task("push plan out of range".into()))?;
            positions.push(to_i64(placed.position, "position")?);
            inserted_ids.push(&event.id.0[..]);
            event_streams.push(event.stream.as_str());
            event_versions.push(to_i64(placed.version, "version")?);
            types.push(event.event_type.as_str());
            data.push(event.data.get());
            metas.push(event.meta.as_ref().map(|m| m.get()));
            times.push(to_i64(event.time, "time")?);
        }
        // Streams with a version have a row: updated, each only from the version the plan
        // started from; the others get one (and an existing row fails the insert).
        let (mut known_streams, mut from, mut to) = (Vec::new(), Vec::new(), Vec::new());
        let (mut new_streams, mut new_versions) = (Vec::new(), Vec::new());
        for (stream, version) in &plan.stream_versions {
            let before = versions.get(stream).copied().unwrap_or(0);
            let version = to_i64(*version, "version")?;
            if before > 0 {
                known_streams.push(stream.as_str());
                from.push(to_i64(before, "version")?);
                to.push(version);
            } else {
                new_streams.push(stream.as_str());
                new_versions.push(version);
            }
        }
        let new_head = to_i64(plan.head, "head")?;
        let insert_params: [&(dyn ToSql + Sync); 10] = [
            &store_id,
            &positions,
            &inserted_ids,
            &event_streams,
            &event_versions,
            &types,
            &data,
            &metas,
            &times,
            &client_id,
        ];
        let new_params: [&(dyn ToSql + Sync); 3] = [&store_id, &new_streams, &new_versions];
        let head_params: [&(dyn ToSql + Sync); 2] = [&store_id, &new_head];
        let notify_params: [&(dyn ToSql + Sync); 2] = [&CHANNEL, &store];
        // Round trip 2. When every version was read under the lock, COMMIT goes with it:
        // after a failed statement the server refuses the rest and turns COMMIT into a
        // rollback, so success means every statement succeeded and the transaction is
        // committed (and flushed). Remembered versions are checked first (below).
        let (inserted, updated, created, moved, notified, committed) = tokio::join!(
            client.execute(&st.insert_events, &insert_params),
            async {
                if known_streams.is_empty() {
                    return Ok(0);
                }
                // Planned for the keys at hand each time (an unnamed statement): a generic
                // plan may hash the whole store's streams.
                client
                    .execute_typed(
                        UPDATE_STREAMS,
                        &[
                            (&store_id, Type::INT8),
                            (&known_streams, Type::TEXT_ARRAY),
                            (&from, Type::INT8_ARRAY),
                            (&to, Type::INT8_ARRAY),
                        ],
                    )
                    .await
            },
            async {
                if new_streams.is_empty() {
                    Ok(0)
                } else {
                    client.execute(&st.insert_streams, &new_params).await
                }
            },
            client.execute(&st.update_head, &head_params),
            client.execute(&st.notify, &notify_params),
            async {
                if remembered {
                    Ok(())
                } else {
                    client.batch_execute("COMMIT").await
                }
            },
        );
        let over = !remembered && committed.is_ok();
        let fail = |error: tokio_postgres::Error, retry: Option<Attempt>| Failed {
            error: error.into(),
            ended: over,
            retry,
        };
        // A stored id: plan again knowing the stored ids.
        inserted.map_err(|e| {
            let retry = is_stored_id(&e).then_some(Attempt {
                look_up_ids: true,
                ..attempt
            });
            fail(e, retry)
        })?;
        let fresh = Attempt {
            remembered: false,
            ..attempt
        };
        let updated = updated.map_err(|e| fail(e, None))?;
        // A stream remembered without events has a row after all.
        created.map_err(|e| {
            let retry = (remembered && is_unique_violation(&e)).then_some(fresh);
            fail(e, retry)
        })?;
        moved.map_err(|e| fail(e, None))?;
        notified.map_err(|e| fail(e, None))?;
        committed.map_err(|e| fail(e, None))?;
        if remembered {
            if updated != known_streams.len() as u64 {
                // What this instance remembered is not what is stored (a database restored
                // to an earlier point, say): nothing is kept; plan again from the database.
                return Err(Failed {
                    error: StoreError::Corrupt("remembered stream versions are out of date".into()),
                    ended: false,
                    retry: Some(fresh),
                });
            }
            client.batch_execute("COMMIT").await.map_err(ended)?;
        }
        for (stream, version) in plan.stream_versions {
            versions.insert(stream, version);
        }
        let known = remember(versions, plan.head);
        Ok((
            PushResponse {
                results: plan.results,
                head: plan.head,
                epoch,
            },
            known,
        ))
    }

    /// The store's row, created (with a fresh epoch) if it does not exist yet.
    async fn find_or_create(
        &self,
        conn: &PgConn,
        store: &str,
    ) -> Result<(i64, u64, String), StoreError> {
        if let Some(row) = conn
            .client
            .query_opt(&conn.st.read_store, &[&store])
            .await?
        {
            return store_row(&row);
        }
        conn.client
            .execute(&conn.st.create_store, &[&store, &new_epoch()?])
            .await?;
        store_row(
            &conn
                .client
                .query_one(&conn.st.read_store, &[&store])
                .await?,
        )
    }

    async fn pull_inner(
        &self,
        store: &str,
        after: u64,
        limit: usize,
    ) -> Result<PullResponse, StoreError> {
        let mut lease = self.pool.get().await?;
        let conn = lease.conn()?;
        let (store_id, head, epoch) = self.find_or_create(conn, store).await?;
        let mut events = Vec::new();
        if after < head {
            // Every position up to a committed head is committed (same transaction), so
            // bounding by the head read above never shows a gap.
            let (after, head, limit) = (
                to_i64(after, "after")?,
                to_i64(head, "head")?,
                i64::try_from(limit).unwrap_or(i64::MAX),
            );
            let params: [&(dyn ToSql + Sync); 4] = [&store_id, &after, &head, &limit];
            // Streamed, so that the byte budget bounds memory, not only the answer.
            let rows = conn.client.query_raw(&conn.st.read_events, params).await?;
            let mut rows = std::pin::pin!(rows);
            let mut bytes = 0usize;
            while bytes < PULL_BYTE_BUDGET {
                let Some(row) = rows.next().await.transpose()? else {
                    break;
                };
                let event = event_from_row(&row)?;
                bytes += event_bytes(&event);
                events.push(event);
            }
        }
        let last = events.last().map_or(after, |e| e.position);
        Ok(PullResponse {
            more: last < head,
            events,
            head,
            epoch,
        })
    }
}

/// What a push attempt may assume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attempt {
    /// Use the stream versions this instance remembers (checked when written).
    remembered: bool,
    /// Look the pushed ids up first, rather than count on the unique index.
    look_up_ids: bool,
}

/// A failed push transaction: whether it is over (rolled back by the server after a
/// pipelined `COMMIT`) or still to be rolled back, and how to try again, if it failed
/// only because of an assumption.
struct Failed {
    error: StoreError,
    ended: bool,
    retry: Option<Attempt>,
}

impl<E: Into<StoreError>> From<E> for Failed {
    fn from(error: E) -> Self {
        Failed {
            error: error.into(),
            ended: false,
            retry: None,
        }
    }
}

fn ended(error: tokio_postgres::Error) -> Failed {
    Failed {
        error: error.into(),
        ended: true,
        retry: None,
    }
}

fn is_unique_violation(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

/// True when an insert met an id that the store already holds (the unique index on
/// `(store_id, id)`).
fn is_stored_id(error: &tokio_postgres::Error) -> bool {
    is_unique_violation(error)
        && error.as_db_error().is_some_and(|db| {
            db.table() == Some("events") && db.constraint() != Some("events_pkey")
        })
}

/// The current versions of `streams` (0 for a stream without events), one index probe
/// each.
async fn stream_versions(
    client: &Client,
    st: &Statements,
    store: &str,
    streams: &[&str],
) -> Result<HashMap<String, u64>, StoreError> {
    let mut versions: HashMap<String, u64> = streams.iter().map(|s| ((*s).to_owned(), 0)).collect();
    if streams.is_empty() {
        return Ok(versions);
    }
    for row in client
        .query(&st.stream_versions, &[&store, &streams])
        .await?
    {
        let version = stored_u64(row.try_get(1)?, "version")?;
        if let Some(v) = versions.get_mut(row.try_get::<_, &str>(0)?) {
            *v = version;
        }
    }
    Ok(versions)
}

/// The stored events among `ids`.
async fn existing_ids(
    client: &Client,
    st: &Statements,
    store: &str,
    ids: &[&[u8]],
) -> Result<Vec<Row>, StoreError> {
    Ok(client.query(&st.existing_ids, &[&store, &ids]).await?)
}

/// The refusals remembered for `ids`, by id.
async fn refused_ids(
    client: &Client,
    st: &Statements,
    store: &str,
    ids: &[&[u8]],
) -> Result<HashMap<EventId, Vec<Refusal>>, StoreError> {
    let mut refused: HashMap<EventId, Vec<Refusal>> = HashMap::new();
    for row in client.query(&st.refused_ids, &[&store, &ids]).await? {
        let actual: Option<i64> = row.try_get(3)?;
        refused
            .entry(stored_id(row.try_get::<_, &[u8]>(0)?)?)
            .or_default()
            .push(Refusal {
                // Stored as the same 64 bits, signed.
                fingerprint: row.try_get::<_, i64>(1)? as u64,
                reason: row.try_get(2)?,
                actual_version: actual
                    .map(|v| stored_u64(v, "actual_version"))
                    .transpose()?,
            });
    }
    Ok(refused)
}

/// Stores the refusals of `plan` (inside the push transaction).
async fn remember_refusals(
    client: &Client,
    st: &Statements,
    store_id: i64,
    events: &[PushEvent],
    plan: &crate::push::rules::PushPlan,
) -> Result<(), StoreError> {
    let n = plan.refusals.len();
    let mut ids = Vec::with_capacity(n);
    let mut fingerprints = Vec::with_capacity(n);
    let mut reasons = Vec::with_capacity(n);
    let mut actuals = Vec::with_capacity(n);
    for (index, refusal) in &plan.refusals {
        let event = events
            .get(*index)
            .ok_or_else(|| StoreError::Task("push plan out of range".into()))?;
        ids.push(&event.id.0[..]);
        fingerprints.push(refusal.fingerprint as i64);
        reasons.push(refusal.reason.as_str());
        actuals.push(
            refusal
                .actual_version
                .map(|v| to_i64(v, "actual_version"))
                .transpose()?,
        );
    }
    let params: [&(dyn ToSql + Sync); 5] = [&store_id, &ids, &fingerprints, &reasons, &actuals];
    client.execute(&st.insert_rejections, &params).await?;
    Ok(())
}

/// Stored events by id, from the `existing_ids` lookup.
fn placed_ids(rows: &[Row]) -> Result<HashMap<EventId, Placed>, StoreError> {
    let mut placed = HashMap::with_capacity(rows.len());
    for row in rows {
        placed.insert(
            stored_id(row.try_get::<_, &[u8]>(0)?)?,
            Placed {
                position: stored_u64(row.try_get(1)?, "position")?,
                version: stored_u64(row.try_get(2)?, "version")?,
            },
        );
    }
    Ok(placed)
}

fn store_row(row: &Row) -> Result<(i64, u64, String), StoreError> {
    Ok((
        row.try_get(0)?,
        stored_u64(row.try_get(1)?, "head")?,
        row.try_get(2)?,
    ))
}

fn event_from_row(row: &Row) -> Result<Event, StoreError> {
    Ok(Event {
        id: stored_id(row.try_get::<_, &[u8]>(0)?)?,
        position: stored_u64(row.try_get(1)?, "position")?,
        stream: row.try_get(2)?,
        version: stored_u64(row.try_get(3)?, "version")?,
        event_type: row.try_get(4)?,
        data: raw_json(row.try_get(5)?)?,
        meta: row
            .try_get::<_, Option<String>>(6)?
            .map(raw_json)
            .transpose()?,
        time: stored_u64(row.try_get(7)?, "time")?,
        origin: row.try_get(8)?,
        pending: false,
    })
}

async fn migrate(settings: &PgSettings) -> Result<(), StoreError> {
    let mut client = settings.connect().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    if let Some(schema) = &settings.schema {
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(schema)
        ))
        .await?;
    }
    tx.batch_execute(SCHEMA).await?;
    tx.batch_execute(STREAMS_FILLFACTOR).await?;
    tx.commit().await?;
    Ok(())
}

/// Keeps a `LISTEN annals_events` connection open (reconnecting with backoff) and turns
/// notifications into wake-ups. After every (re)connection it wakes every waiter, since
/// notifications sent while it was away are lost.
async fn listen(
    settings: PgSettings,
    changes: Arc<Changes>,
    ready: oneshot::Sender<Result<(), StoreError>>,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    loop {
        match listen_once(&settings, &changes, &mut ready).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; retrying");
                if let Some(tx) = ready.take() {
                    // The first attempt failed: let `open` report it.
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn listen_once(
    settings: &PgSettings,
    changes: &Arc<Changes>,
    ready: &mut Option<oneshot::Sender<Result<(), StoreError>>>,
) -> Result<(), StoreError> {
    let (client, mut connection) = settings
        .config
        .connect(NoTls)
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let waker = Arc::clone(changes);
    let mut driver = AbortOnDrop(tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) if n.channel() == CHANNEL => {
                    waker.notify(n.payload());
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection lost");
                    break;
                }
            }
        }
    }));
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    tracing::debug!("listening for {CHANNEL}");
    changes.notify_all();
    if let Some(tx) = ready.take() {
        let _ = tx.send(Ok(()));
    }
    // Keep the client alive for as long as the connection runs.
    let _ = (&mut driver.0).await;
    drop(client);
    changes.notify_all();
    Ok(())
}

/// Aborts the task when dropped (the LISTEN driver must not outlive its store).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ServerStore for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn push<'a>(
        &'a self,
        store: &'a str,
        client_id: &'a str,
        events: Vec<PushEvent>,
    ) -> BoxFuture<'a, Result<PushResponse, StoreError>> {
        Box::pin(async move {
            let response = self.push_inner(store, client_id, &events).await?;
            // Other instances hear the NOTIFY; wake this one's waiters right away.
            if response
                .results
                .iter()
                .any(|r| matches!(r, PushResult::Ok { .. }))
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
        Box::pin(self.pull_inner(store, after, limit))
    }

    fn info<'a>(&'a self, store: &'a str) -> BoxFuture<'a, Result<StoreInfo, StoreError>> {
        Box::pin(async move {
            let mut lease = self.pool.get().await?;
            let (_, head, epoch) = self.find_or_create(lease.conn()?, store).await?;
            Ok(StoreInfo { head, epoch })
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut lease = self.pool.get().await?;
            lease.conn()?.client.simple_query("SELECT 1").await?;
            Ok(())
        })
    }

    fn changes(&self) -> &Changes {
        &self.changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ExpectedVersion;
    use serde_json::value::RawValue;

    /// A fresh schema on the test database (`ANNALS_TEST_PG_URL`), dropped on drop.
    struct Scratch {
        base: String,
        schema: String,
    }

    impl Scratch {
        fn new() -> Self {
            let base = std::env::var("ANNALS_TEST_PG_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            Scratch {
                base,
                schema: format!("annals_unit_{}", &new_epoch().unwrap()[..12]),
            }
        }

        fn url(&self, options: &str) -> String {
            let sep = if self.base.contains('?') { '&' } else { '?' };
            format!("{}{sep}schema={}{options}", self.base, self.schema)
        }

        async fn open(&self, options: &str) -> PgStore {
            PgStore::open(&self.url(options), Authorities::default())
                .await
                .expect("open")
        }

        /// A plain connection with the search path on the schema.
        async fn sql(&self) -> Client {
            let settings = PgSettings::from_url(&self.url("")).unwrap();
            let client = settings.connect().await.expect("connect");
            client
                .batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {}",
                    quote_ident(&self.schema)
                ))
                .await
                .unwrap();
            client
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let (base, schema) = (self.base.clone(), self.schema.clone());
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    if let Ok((client, conn)) = tokio_postgres::connect(&base, NoTls).await {
                        tokio::spawn(conn);
                        let _ = client
                            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                            .await;
                    }
                })
            })
            .join();
        }
    }

    fn ev(n: u8, stream: &str, expected: ExpectedVersion) -> PushEvent {
        PushEvent {
            id: EventId([n; 16]),
            stream: stream.into(),
            event_type: "T".into(),
            data: RawValue::from_string(format!("{n}")).unwrap(),
            meta: None,
            time: u64::from(n),
            expected_version: expected,
        }
    }

    fn any(n: u8, stream: &str) -> PushEvent {
        ev(n, stream, ExpectedVersion::Any)
    }

    fn ok(n: u8, position: u64, version: u64) -> PushResult {
        PushResult::Ok {
            id: EventId([n; 16]),
            position,
            version,
        }
    }

    fn duplicate(n: u8, position: u64, version: u64) -> PushResult {
        PushResult::Duplicate {
            id: EventId([n; 16]),
            position,
            version,
        }
    }

    async fn push(store: &PgStore, events: Vec<PushEvent>) -> PushResponse {
        store.push("s", "c", events).await.expect("push")
    }

    /// (stream, version) of every stored event, in position order.
    async fn stored(store: &PgStore) -> Vec<(String, u64)> {
        let pulled = store.pull("s", 0, 1000).await.expect("pull");
        for (i, e) in pulled.events.iter().enumerate() {
            assert_eq!(e.position, i as u64 + 1, "gapless");
        }
        pulled
            .events
            .into_iter()
            .map(|e| (e.stream, e.version))
            .collect()
    }

    #[tokio::test]
    async fn ids_already_stored_answer_duplicate_and_the_connection_stays_usable() {
        let scratch = Scratch::new();
        // One connection: the attempt that meets a stored id must leave it clean.
        let store = scratch.open("&pool_size=1").await;
        push(&store, vec![any(1, "a"), any(2, "a")]).await;
        let retry = push(&store, vec![any(1, "a"), any(3, "b"), any(2, "a")]).await;
        assert_eq!(
            retry.results,
            vec![duplicate(1, 1, 1), ok(3, 3, 1), duplicate(2, 2, 2)]
        );
        let again = push(&store, vec![any(3, "b"), any(3, "b")]).await;
        assert_eq!(again.results, vec![duplicate(3, 3, 1), duplicate(3, 3, 1)]);
        assert_eq!(again.head, 3);
        let next = push(&store, vec![any(4, "a"), any(5, "b")]).await;
        assert_eq!(next.results, vec![ok(4, 4, 3), ok(5, 5, 2)]);
        assert_eq!(stored(&store).await.len(), 5);
    }

    #[tokio::test]
    async fn a_stored_id_answers_duplicate_before_its_expected_version_is_checked() {
        let scratch = Scratch::new();
        let store = scratch.open("").await;
        push(&store, vec![ev(1, "a", ExpectedVersion::NoStream)]).await;
        // Remembered by this instance, then retried: still a duplicate, not a conflict.
        let retry = push(
            &store,
            vec![
                ev(1, "a", ExpectedVersion::NoStream),
                ev(2, "a", ExpectedVersion::Exact(1)),
            ],
        )
        .await;
        assert_eq!(retry.results, vec![duplicate(1, 1, 1), ok(2, 2, 2)]);
    }

    #[tokio::test]
    async fn instances_pushing_to_one_store_keep_versions_exact() {
        let scratch = Scratch::new();
        let (a, b) = (scratch.open("").await, scratch.open("").await);
        for round in 0..4u8 {
            let first = push(&a, vec![any(round * 4 + 1, "x"), any(round * 4 + 2, "y")]).await;
            let second = push(&b, vec![any(round * 4 + 3, "x")]).await;
            let third = push(&a, vec![any(round * 4 + 4, "x")]).await;
            let base = u64::from(round) * 3;
            assert_eq!(
                first.results[0],
                ok(round * 4 + 1, base + base / 3 + 1, base + 1)
            );
            assert_eq!(
                second.results,
                vec![ok(round * 4 + 3, base + base / 3 + 3, base + 2)]
            );
            assert_eq!(
                third.results,
                vec![ok(round * 4 + 4, base + base / 3 + 4, base + 3)]
            );
        }
        // An exact expectation from the other instance's view holds.
        let conflict = push(&b, vec![ev(100, "x", ExpectedVersion::Exact(11))]).await;
        assert!(matches!(
            conflict.results[0],
            PushResult::Rejected {
                actual_version: Some(12),
                ..
            }
        ));
        let fine = push(&a, vec![ev(101, "x", ExpectedVersion::Exact(12))]).await;
        assert_eq!(fine.results, vec![ok(101, 17, 13)]);
    }

    #[tokio::test]
    async fn remembered_versions_that_the_database_contradicts_are_not_used() {
        let scratch = Scratch::new();
        let store = scratch.open("").await;
        let sql = scratch.sql().await;
        // The database changes under the instance without the head moving (as after a
        // restore that another timeline refilled up to the same head).
        let change = |statement: &'static str| {
            let sql = &sql;
            async move { sql.batch_execute(statement).await.unwrap() }
        };
        push(&store, vec![any(1, "a"), any(2, "a"), any(3, "b")]).await;
        // Remembered from this rejection: c has no events.
        let rejected = push(&store, vec![ev(4, "c", ExpectedVersion::Exists)]).await;
        assert!(matches!(
            rejected.results[0],
            PushResult::Rejected {
                actual_version: Some(0),
                ..
            }
        ));
        change("INSERT INTO streams (store_id, stream, version) SELECT store_id, 'c', 4 FROM streams WHERE stream = 'a'").await;
        let c = push(&store, vec![any(5, "c")]).await;
        assert_eq!(c.results, vec![ok(5, 4, 5)]);

        push(&store, vec![any(6, "a"), any(7, "b")]).await; // a = 3, b = 2
        change("UPDATE streams SET version = 7 WHERE stream = 'a'").await;
        let a = push(&store, vec![any(8, "a")]).await;
        assert_eq!(a.results, vec![ok(8, 7, 8)]);

        // A rejection is never answered from memory: b is remembered at 2.
        push(&store, vec![any(9, "b")]).await; // b = 3
        change("UPDATE streams SET version = 1 WHERE stream = 'b'").await;
        let b = push(&store, vec![ev(10, "b", ExpectedVersion::Exact(1))]).await;
        assert_eq!(b.results, vec![ok(10, 9, 2)]);
        let b = push(&store, vec![ev(11, "b", ExpectedVersion::Exact(1))]).await;
        assert!(matches!(
            b.results[0],
            PushResult::Rejected {
                actual_version: Some(2),
                ..
            }
        ));
    }

    #[tokio::test]
    async fn an_older_database_opens_and_its_streams_get_the_fillfactor() {
        let scratch = Scratch::new();
        let sql = scratch.sql().await;
        // The schema as the previous release created it, with data.
        sql.batch_execute(&SCHEMA.replace(" WITH (fillfactor = 50)", ""))
            .await
            .unwrap();
        sql.batch_execute(
            "INSERT INTO stores (name, epoch, head) VALUES ('s', 'e0', 2);
             INSERT INTO streams SELECT id, 'a', 2 FROM stores;
             INSERT INTO events SELECT id, p, decode(repeat(to_hex(p), 32), 'hex'), 'a', p, 'T', '1', NULL, 0, 'c'
             FROM stores, generate_series(1, 2) p;",
        )
        .await
        .unwrap();
        let fillfactor = || async {
            sql.query_one(
                "SELECT reloptions::text FROM pg_class WHERE oid = 'streams'::regclass",
                &[],
            )
            .await
            .unwrap()
            .get::<_, Option<String>>(0)
        };
        assert_eq!(fillfactor().await, None);
        let store = scratch.open("").await;
        assert_eq!(fillfactor().await.as_deref(), Some("{fillfactor=50}"));
        let next = push(&store, vec![any(9, "a")]).await;
        assert_eq!(next.results, vec![ok(9, 3, 3)]);
        assert_eq!(next.epoch, "e0");
        drop(store);
        // Opening again changes nothing; a fillfactor chosen by an operator is kept.
        sql.batch_execute("ALTER TABLE streams SET (fillfactor = 70)")
            .await
            .unwrap();
        let store = scratch.open("").await;
        assert_eq!(fillfactor().await.as_deref(), Some("{fillfactor=70}"));
        assert_eq!(stored(&store).await.len(), 3);
    }

    #[test]
    fn urls_take_our_options_out() {
        let s = PgSettings::from_url(
            "postgres://postgres@127.0.0.1:5432/test?schema=my_schema&pool_size=4&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(s.schema.as_deref(), Some("my_schema"));
        assert_eq!(s.pool_size, 4);
        assert_eq!(s.config.get_dbname(), Some("test"));
        assert_eq!(
            s.config.get_connect_timeout(),
            Some(&Duration::from_secs(5))
        );
        let s = PgSettings::from_url(
            "postgres://postgres@127.0.0.1/test?options=-csearch_path%3Dother",
        )
        .unwrap();
        assert_eq!(s.schema, None);
        assert_eq!(s.config.get_options(), Some("-csearch_path=other"));
        for bad in [
            "postgres://h/db?schema=a;drop",
            "postgres://h/db?schema=1a",
            "postgres://h/db?pool_size=0",
            "postgres://h/db?nonsense=1",
        ] {
            assert!(PgSettings::from_url(bad).is_err(), "{bad}");
        }
    }
}
