//! The PostgreSQL backend, for several server instances behind a load balancer.
//!
//! - A push is one transaction that first locks the store's row in `stores`
//!   (`SELECT ... FOR UPDATE`), so pushes to one store are serialised across every instance
//!   and positions are assigned under that lock: a reader never sees a position that a
//!   slower writer fills in later. Pushes to different stores do not wait for each other.
//! - No per-event round trips: one query for the batch's already stored ids (a join
//!   with `UNNEST($ids)`) and one for its streams' current versions (table `streams`),
//!   pipelined; then one multi-row insert (`UNNEST` of arrays), one upsert of the stream
//!   versions, one head update and the `NOTIFY`, pipelined too. The answer is sent after
//!   `COMMIT` returns, so acknowledged events are durable.
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
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Row, Statement};

use crate::event::Event;
use crate::server::sqlite::raw_json;
use crate::server::store::{
    distinct_streams, event_bytes, new_epoch, plan_push, stored_id, stored_u64, to_i64, BoxFuture,
    Changes, Placed, Refusal, ServerStore, StoreError, StoreInfo, PULL_BYTE_BUDGET,
};
use crate::sync::authority::Authorities;
use crate::sync::protocol::{PullResponse, PushEvent, PushResponse, PushResult};

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
);
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
    upsert_streams: Statement,
    update_head: Statement,
    notify: Statement,
    read_events: Statement,
    stream_events: Statement,
}

struct PgConn {
    client: Client,
    st: Statements,
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
            upsert_streams,
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
            // Joins against UNNEST rather than `= ANY($2)`: the generic plan of the latter
            // may filter every row of the store (index on store_id only) once statistics
            // are stale, growing with the store; the join always probes the unique index.
            client.prepare(
                "SELECT e.id, e.position, e.version
                 FROM UNNEST($2::bytea[]) AS k(id)
                 JOIN events e ON e.store_id = $1 AND e.id = k.id"
            ),
            client.prepare(
                "SELECT r.id, r.fingerprint, r.reason, r.actual_version
                 FROM UNNEST($2::bytea[]) AS k(id)
                 JOIN rejections r ON r.store_id = $1 AND r.id = k.id"
            ),
            client.prepare(
                "INSERT INTO rejections (store_id, id, fingerprint, reason, actual_version)
                 SELECT $1, t.id, t.fingerprint, t.reason, t.actual_version
                 FROM UNNEST($2::bytea[], $3::bigint[], $4::text[], $5::bigint[])
                      AS t(id, fingerprint, reason, actual_version)
                 ON CONFLICT DO NOTHING"
            ),
            client.prepare(
                "SELECT s.stream, s.version
                 FROM UNNEST($2::text[]) AS k(stream)
                 JOIN streams s ON s.store_id = $1 AND s.stream = k.stream"
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
                 SELECT $1, t.stream, t.version FROM UNNEST($2::text[], $3::bigint[]) AS t(stream, version)
                 ON CONFLICT (store_id, stream) DO UPDATE SET version = EXCLUDED.version"
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
            st: Statements {
                lock_store,
                read_store,
                create_store,
                existing_ids,
                refused_ids,
                insert_rejections,
                stream_versions,
                insert_events,
                upsert_streams,
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
            if !conn.client.is_closed() {
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
        })
    }

    async fn push_inner(
        &self,
        store: &str,
        client_id: &str,
        events: &[PushEvent],
    ) -> Result<PushResponse, StoreError> {
        let mut lease = self.pool.get().await?;
        let PgConn { client, st } = lease.conn()?;
        let tx = client.transaction().await?;
        let row = match tx.query_opt(&st.lock_store, &[&store]).await? {
            Some(row) => row,
            None => {
                tx.execute(&st.create_store, &[&store, &new_epoch()?])
                    .await?;
                tx.query_one(&st.lock_store, &[&store]).await?
            }
        };
        let (store_id, head, epoch) = store_row(&row)?;

        let ids: Vec<&[u8]> = events.iter().map(|e| &e.id.0[..]).collect();
        let streams = distinct_streams(events);
        let id_params: [&(dyn ToSql + Sync); 2] = [&store_id, &ids];
        let stream_params: [&(dyn ToSql + Sync); 2] = [&store_id, &streams];
        let (id_rows, refused_rows, version_rows) = tokio::try_join!(
            tx.query(&st.existing_ids, &id_params),
            tx.query(&st.refused_ids, &id_params),
            tx.query(&st.stream_versions, &stream_params),
        )?;
        let mut existing = HashMap::with_capacity(id_rows.len());
        for row in &id_rows {
            existing.insert(
                stored_id(row.try_get::<_, &[u8]>(0)?)?,
                Placed {
                    position: stored_u64(row.try_get(1)?, "position")?,
                    version: stored_u64(row.try_get(2)?, "version")?,
                },
            );
        }
        let mut refused: HashMap<_, Vec<Refusal>> = HashMap::new();
        for row in &refused_rows {
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
        let mut versions = HashMap::with_capacity(version_rows.len());
        for row in &version_rows {
            versions.insert(
                row.try_get::<_, String>(0)?,
                stored_u64(row.try_get(1)?, "version")?,
            );
        }

        let mut histories: HashMap<String, Vec<Event>> = HashMap::new();
        let claimed = self.authorities.claimed_streams(events);
        if !claimed.is_empty() {
            let params: [&(dyn ToSql + Sync); 2] = [&store_id, &claimed];
            for row in tx.query(&st.stream_events, &params).await? {
                let event = event_from_row(&row)?;
                histories
                    .entry(event.stream.clone())
                    .or_default()
                    .push(event);
            }
        }
        let mut check = self.authorities.checker(histories);
        let plan = plan_push(
            head,
            events,
            &existing,
            &refused,
            &versions,
            Some(&mut check),
        );
        if !plan.refusals.is_empty() {
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
            let params: [&(dyn ToSql + Sync); 5] =
                [&store_id, &ids, &fingerprints, &reasons, &actuals];
            tx.execute(&st.insert_rejections, &params).await?;
        }

        if !plan.inserts.is_empty() {
            let n = plan.inserts.len();
            let mut positions = Vec::with_capacity(n);
            let mut ids = Vec::with_capacity(n);
            let mut streams = Vec::with_capacity(n);
            let mut versions = Vec::with_capacity(n);
            let mut types = Vec::with_capacity(n);
            let mut data = Vec::with_capacity(n);
            let mut metas = Vec::with_capacity(n);
            let mut times = Vec::with_capacity(n);
            for (index, placed) in &plan.inserts {
                let event = events
                    .get(*index)
                    .ok_or_else(|| StoreError::Task("push plan out of range".into()))?;
                positions.push(to_i64(placed.position, "position")?);
                ids.push(&event.id.0[..]);
                streams.push(event.stream.as_str());
                versions.push(to_i64(placed.version, "version")?);
                types.push(event.event_type.as_str());
                data.push(event.data.get());
                metas.push(event.meta.as_ref().map(|m| m.get()));
                times.push(to_i64(event.time, "time")?);
            }
            let mut touched = Vec::with_capacity(plan.stream_versions.len());
            let mut touched_versions = Vec::with_capacity(plan.stream_versions.len());
            for (stream, version) in &plan.stream_versions {
                touched.push(stream.as_str());
                touched_versions.push(to_i64(*version, "version")?);
            }
            let new_head = to_i64(plan.head, "head")?;
            let insert_params: [&(dyn ToSql + Sync); 10] = [
                &store_id, &positions, &ids, &streams, &versions, &types, &data, &metas, &times,
                &client_id,
            ];
            let upsert_params: [&(dyn ToSql + Sync); 3] = [&store_id, &touched, &touched_versions];
            let head_params: [&(dyn ToSql + Sync); 2] = [&store_id, &new_head];
            let notify_params: [&(dyn ToSql + Sync); 2] = [&CHANNEL, &store];
            // Pipelined: sent together, answered in order.
            tokio::try_join!(
                tx.execute(&st.insert_events, &insert_params),
                tx.execute(&st.upsert_streams, &upsert_params),
                tx.execute(&st.update_head, &head_params),
                tx.execute(&st.notify, &notify_params),
            )?;
        }
        tx.commit().await?;
        Ok(PushResponse {
            results: plan.results,
            head: plan.head,
            epoch,
        })
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
