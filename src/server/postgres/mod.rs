//! Server storage: the PostgreSQL backend, for several server instances behind a load
//! balancer.
//!
//! - A push is one transaction that first locks the store's row in `stores`
//!   (`SELECT ... FOR UPDATE`), so pushes to one store are serialised across every instance
//!   and positions are assigned under that lock: a reader never sees a position that a
//!   slower writer fills in later. Pushes to different stores do not wait for each other.
//! - Two round trips per push, neither with per-event statements. The first sends
//!   `BEGIN`, the lock and the lookups the push needs together: under READ COMMITTED every
//!   statement takes its snapshot when it starts, and the server runs them in order, so
//!   the lookups see the state left by the previous holder of the lock. The second sends
//!   the multi-row insert (`UNNEST` of arrays), the store's row (head, `last_push`), the
//!   `NOTIFY` and `COMMIT` together; the answer is sent only after every one of them
//!   succeeded, `COMMIT` included, so acknowledged events are durable.
//! - No push writes stream versions. A stream's version is derived: its row in
//!   `stream_versions`, which holds every version as of the store's `versions_at`, raised
//!   by the events after it (a range of the primary key). Every `FLUSH_EVERY` events the
//!   push that crosses the mark folds them into `stream_versions` in the same transaction
//!   (from this instance's memory when it saw every push since, else from the events).
//! - An instance remembers each store's stream versions as its last push left them, and
//!   uses them (rather than looking any up) while the store's row shows the `last_push`
//!   number that push set: every push that writes events sets a new random one, so
//!   another instance's push, or another timeline of a restored database, is noticed.
//!   A rejection is never answered from memory: the versions are read first.
//! - The store's row also says whether it ever had a remembered refusal or a lifecycle
//!   end (`refusals`, `ends`); a push of a store without any (as this instance last saw
//!   it) does not look them up, and looks them up after the lock if the row says
//!   otherwise.
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
//!
//! Files: `settings.rs` (the URL), `schema.rs` (tables and migration), `pool.rs`
//! (connections), `statements.rs` (the SQL), `versions.rs` (the remembered stream
//! versions), `push.rs` (the push transaction, in phases), `notify.rs` (`LISTEN`/`NOTIFY`).

mod notify;
mod pool;
mod push;
mod schema;
mod settings;
mod statements;
#[cfg(test)]
mod tests;
mod versions;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;

use crate::protocol::{PullResponse, PushEvent, PushResponse, PushResult};
use crate::push::authority::Authorities;
use crate::server::store::{
    event_bytes, new_epoch, to_i64, BoxFuture, Changes, ServerStore, StoreError, StoreInfo,
    PULL_BYTE_BUDGET,
};
pub use notify::CHANNEL;
use pool::{PgConn, Pool};
pub use settings::PgSettings;
use statements::{event_from_row, store_row};
use versions::KnownVersions;

/// The PostgreSQL [`ServerStore`].
pub struct PgStore {
    pool: Pool,
    changes: Arc<Changes>,
    listener: JoinHandle<()>,
    authorities: Authorities,
    known: KnownVersions,
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
        schema::migrate(&settings).await?;
        let changes = Arc::new(Changes::default());
        let (ready_tx, ready_rx) = oneshot::channel();
        let listener = tokio::spawn(notify::listen(
            settings.clone(),
            Arc::clone(&changes),
            ready_tx,
        ));
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
        let pool = Pool::new(settings);
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

    fn stored_ids<'a>(
        &'a self,
        store: &'a str,
        ids: &'a [crate::event::EventId],
    ) -> BoxFuture<'a, Result<std::collections::HashSet<crate::event::EventId>, StoreError>> {
        Box::pin(async move {
            let mut lease = self.pool.get().await?;
            let conn = lease.conn()?;
            let keys: Vec<&[u8]> = ids.iter().map(|id| &id.0[..]).collect();
            let rows = statements::existing_ids(&conn.client, &conn.st, store, &keys).await?;
            rows.iter()
                .map(|row| crate::server::store::stored_id(row.try_get::<_, &[u8]>(0)?))
                .collect()
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
