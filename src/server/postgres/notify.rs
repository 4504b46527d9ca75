//! PostgreSQL backend: `LISTEN`/`NOTIFY`, how a commit on one instance wakes the long polls
//! of every other instance.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};

use super::settings::PgSettings;
use crate::server::store::{Changes, StoreError};

/// The NOTIFY channel; the payload is the store name.
pub const CHANNEL: &str = "annals_events";

/// Keeps a `LISTEN annals_events` connection open (reconnecting with backoff) and turns
/// notifications into wake-ups. After every (re)connection it wakes every waiter, since
/// notifications sent while it was away are lost.
pub(super) async fn listen(
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
