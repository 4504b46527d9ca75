//! PostgreSQL backend: a small pool of connections, each with its statements prepared.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::Client;

use super::settings::PgSettings;
use super::statements::Statements;
use crate::server::store::StoreError;

pub(super) struct PgConn {
    pub(super) client: Client,
    pub(super) st: Statements,
    /// True from `BEGIN` until the transaction is known to be over; a connection dropped
    /// in this state (a cancelled push) is closed, not reused, which rolls it back.
    pub(super) in_transaction: bool,
}

impl PgConn {
    async fn open(settings: &PgSettings) -> Result<Self, StoreError> {
        let client = settings.connect().await?;
        let st = Statements::prepare(&client).await?;
        Ok(PgConn {
            client,
            in_transaction: false,
            st,
        })
    }
}

/// A small connection pool: at most `size` connections, idle ones reused, broken ones
/// dropped.
pub(super) struct Pool {
    settings: PgSettings,
    idle: Mutex<Vec<PgConn>>,
    permits: Semaphore,
}

pub(super) struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<PgConn>,
    _permit: SemaphorePermit<'a>,
}

impl Lease<'_> {
    pub(super) fn conn(&mut self) -> Result<&mut PgConn, StoreError> {
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
    pub(super) fn new(settings: PgSettings) -> Self {
        Pool {
            permits: Semaphore::new(settings.pool_size),
            settings,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn idle_lock(&self) -> MutexGuard<'_, Vec<PgConn>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) async fn get(&self) -> Result<Lease<'_>, StoreError> {
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
