//! The sync client: pushes the outbox in order, pulls confirmed events in server order,
//! and keeps a replica live (long poll, backoff with jitter, online/offline).
//! The network is behind [`Transport`] and time behind [`Timer`], so the same state
//! machine runs over `fetch` in a browser, HTTP natively, and in-process in tests.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;

use futures::channel::mpsc;
use futures::future::{join, select, Either};
use futures::StreamExt;

use crate::engine::{Engine, Rejection};
use crate::error::Error;
use crate::event::EventId;
use crate::json::{self, JsonResult, Reader};
use crate::protocol::{ErrorBody, PullResponse, PushRequest, PushResponse, PushResult};
use crate::storage::Storage;

/// How a request to the server failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No answer: offline, refused, timed out, or the answer was lost. Retried.
    #[error("the sync server is unreachable: {0}")]
    Unreachable(String),
    /// 401: the token is missing or unknown. Not retried until reconfigured.
    #[error("the sync server refused the token: {0}")]
    Unauthorized(String),
    /// 403: the token does not grant this store.
    #[error("the token does not grant this store: {0}")]
    Forbidden(String),
    /// 5xx: the server failed or is busy; 429: too many requests. Retried (with backoff).
    #[error("the sync server failed ({status}): {message}")]
    Server { status: u16, message: String },
    /// Another 4xx: the request itself is wrong (too large, malformed). Not retried as is.
    #[error("the sync server refused the request ({status} {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// The answer is not what the protocol says.
    #[error("the sync server's answer is malformed: {0}")]
    Protocol(String),
    /// The server answered, but the browser kept the answer from the page: it does not
    /// allow this page's origin (CORS).
    #[error(
        "the server at {url} refused this origin ({origin}): start annals-server with \
         --cors-origin {origin}"
    )]
    CorsRefused { url: String, origin: String },
    /// Something answered that is not an annals sync server (a dev server's HTML page, a
    /// proxy's error page).
    #[error(
        "{url} is not an annals sync server (it answered {answered}); sync.url should be the \
         annals-server address, e.g. http://127.0.0.1:8080"
    )]
    NotSyncServer { url: String, answered: String },
    /// The server speaks another version of the sync protocol: it refused the request
    /// before doing anything (a push wrote nothing).
    #[error("{}", upgrade_message(url, *client, server, message))]
    UpgradeRequired {
        url: String,
        client: u32,
        /// The versions the server says it speaks (empty when it does not say).
        server: Vec<u32>,
        message: String,
    },
}

/// Names both sides' versions and which side to upgrade, when the server said what it
/// speaks.
fn upgrade_message(url: &str, client: u32, server: &[u32], message: &str) -> String {
    let list = |versions: &[u32]| {
        versions
            .iter()
            .map(|v| format!("v{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if server.is_empty() {
        return format!(
            "the sync server at {url} does not speak protocol v{client} ({message}): upgrade \
             annals-server and the annals package to the same release"
        );
    }
    let advice = if server.iter().all(|v| *v > client) {
        "the server is newer: upgrade the annals package in this app"
    } else if server.iter().all(|v| *v < client) {
        "this app is newer: upgrade annals-server"
    } else {
        "upgrade annals-server and the annals package to the same release"
    };
    format!(
        "the sync server at {url} speaks protocol {} and this client speaks v{client}: \
         {advice}; nothing was sent",
        list(server)
    )
}

impl TransportError {
    /// The platform says there is no network (`navigator.onLine` is false).
    pub fn platform_offline() -> Self {
        TransportError::Unreachable(
            "this device is offline (navigator.onLine is false); sync resumes by itself when \
             the network is back"
                .into(),
        )
    }

    /// Nothing answers at `url` although the network is up: the server is down, or `url`
    /// names the wrong host or port. `detail` is what the platform said.
    pub fn server_down(url: &str, detail: &str) -> Self {
        TransportError::Unreachable(format!(
            "nothing answers at {url} ({detail}) although the network is up: start \
             annals-server (--listen sets its address) or fix sync.url; sync retries by itself"
        ))
    }

    /// The body of an answer with HTTP `status`, or the error it stands for (the server's
    /// JSON error body gives the code and message).
    pub fn check_status<B: AsRef<[u8]>>(status: u16, body: B) -> Result<B, TransportError> {
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let body = body.as_ref();
        let parsed = std::str::from_utf8(body)
            .map_err(|_| ())
            .and_then(|text| json::parse(text, ErrorBody::read).map_err(|_| ()));
        let (code, message) = match parsed {
            Ok(parsed) => (parsed.error.code, parsed.error.message),
            Err(_) => (String::new(), String::from_utf8_lossy(body).into_owned()),
        };
        Err(match status {
            401 => TransportError::Unauthorized(message),
            403 => TransportError::Forbidden(message),
            429 | 500..=599 => TransportError::Server { status, message },
            _ => TransportError::Refused {
                status,
                code,
                message,
            },
        })
    }

    /// The answer to a request to `url` (the server's base URL): its HTTP `status`,
    /// `content_type` header and `body`, or the error it stands for. Like
    /// [`TransportError::check_status`], and also tells an answer from something that is not
    /// an annals server (HTML, or a 404 without the server's JSON error body) and a server of
    /// another protocol version apart from a malformed answer.
    pub fn check_answer<B: AsRef<[u8]>>(
        url: &str,
        status: u16,
        content_type: Option<&str>,
        body: B,
    ) -> Result<B, TransportError> {
        let bytes = body.as_ref();
        let media = content_type
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase());
        let is_json = media.as_deref().is_some_and(|m| m.ends_with("json"));
        let looks_html = media.as_deref() == Some("text/html")
            || bytes
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| *b == b'<');
        // 401/403 are meaningful whatever the body (a proxy in front may answer them too).
        if !is_json && !matches!(status, 401 | 403 | 429 | 500..=599) {
            let answered = if looks_html {
                "HTML".to_owned()
            } else {
                match &media {
                    Some(m) => format!("{status} {m}"),
                    None => format!("{status} without a content type"),
                }
            };
            return Err(TransportError::NotSyncServer {
                url: url.to_owned(),
                answered,
            });
        }
        // `error.versions` of a 404 UNSUPPORTED_VERSION: what the server speaks (servers
        // before it was added only said so in the message).
        let server = if status == 404 {
            std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| json::parse(text, read_versions).ok())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        match TransportError::check_status(status, body) {
            Err(TransportError::Refused { code, message, .. })
                if status == 404 && code == crate::ErrorCode::UnsupportedVersion.as_str() =>
            {
                Err(TransportError::UpgradeRequired {
                    url: url.to_owned(),
                    client: crate::protocol::PROTOCOL_VERSION,
                    server,
                    message,
                })
            }
            Err(TransportError::Refused { code, .. })
                if status == 404 && code == crate::ErrorCode::NotFound.as_str() =>
            {
                Err(TransportError::NotSyncServer {
                    url: url.to_owned(),
                    answered: "404 with no sync routes under it".to_owned(),
                })
            }
            other => other,
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TransportError::Unreachable(_)
                | TransportError::Server { .. }
                | TransportError::Protocol(_)
                // Retried with backoff: the fix (a flag, a redeploy) is made elsewhere, and
                // sync should resume by itself once it is.
                | TransportError::CorsRefused { .. }
                | TransportError::NotSyncServer { .. }
                | TransportError::UpgradeRequired { .. }
        )
    }

    /// A token or its grant failed: retried once the credentials change.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            TransportError::Unauthorized(_) | TransportError::Forbidden(_)
        )
    }

    /// The request reached a server (whatever it answered).
    pub fn server_answered(&self) -> bool {
        !matches!(self, TransportError::Unreachable(_))
    }

    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }

    pub fn error_code(&self) -> crate::ErrorCode {
        use crate::ErrorCode;
        match self {
            TransportError::Unauthorized(_) => ErrorCode::Unauthorized,
            TransportError::Forbidden(_) => ErrorCode::Forbidden,
            TransportError::Unreachable(_) => ErrorCode::Offline,
            TransportError::Server { .. } | TransportError::Protocol(_) => ErrorCode::Server,
            TransportError::Refused { .. } => ErrorCode::Refused,
            TransportError::CorsRefused { .. } => ErrorCode::CorsRefused,
            TransportError::NotSyncServer { .. } => ErrorCode::NotSyncServer,
            TransportError::UpgradeRequired { .. } => ErrorCode::UpgradeRequired,
        }
    }
}

/// Why a sync step failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Store(#[from] Error),
    /// [`SyncClient::stop`] was called: this client sends nothing more (the tab closed, or
    /// froze and let another tab sync).
    #[error("sync stopped in this tab: another tab may sync the store now")]
    Stopped,
}

impl SyncError {
    pub fn is_retryable(&self) -> bool {
        match self {
            SyncError::Transport(t) => t.is_retryable(),
            SyncError::Store(e) => matches!(e, Error::Storage(_) | Error::QuotaExceeded(_)),
            SyncError::Stopped => false,
        }
    }

    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }

    pub fn error_code(&self) -> crate::ErrorCode {
        match self {
            SyncError::Transport(t) => t.error_code(),
            SyncError::Store(e) => e.error_code(),
            SyncError::Stopped => crate::ErrorCode::Offline,
        }
    }
}

/// Who the requests are sent as: the bearer token and extra headers (`sync.headers`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub token: String,
    pub headers: Vec<(String, String)>,
}

impl Credentials {
    pub fn bearer(token: &str) -> Self {
        Credentials {
            token: token.to_owned(),
            headers: Vec::new(),
        }
    }
}

/// The two requests of the protocol, for one store.
#[allow(async_fn_in_trait)] // Single-threaded by design, like the storage trait.
pub trait Transport {
    async fn push(&self, request: &PushRequest) -> Result<PushResponse, TransportError>;
    /// Events after `after`; with `wait_seconds > 0` the server holds the answer until
    /// something arrives or the time is up.
    async fn pull(
        &self,
        after: u64,
        limit: usize,
        wait_seconds: u32,
    ) -> Result<PullResponse, TransportError>;
}

/// Sleeping, which only the platform can do.
#[allow(async_fn_in_trait)]
pub trait Timer {
    async fn sleep(&self, ms: u64);
}

/// Exponential backoff with full jitter: the n-th retry waits a random time up to
/// `min(max, base * 2^n)`, so that many clients coming back at once spread out.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub base_ms: u64,
    pub max_ms: u64,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base_ms: 500,
            max_ms: 30_000,
            attempt: 0,
        }
    }
}

impl Backoff {
    /// The next delay; `random` is uniform in `[0, 1)`.
    pub fn next_delay(&mut self, random: f64) -> u64 {
        let ceiling = self
            .base_ms
            .saturating_mul(1u64 << self.attempt.min(20))
            .min(self.max_ms);
        self.attempt = self.attempt.saturating_add(1);
        (ceiling as f64 * random.clamp(0.0, 1.0)) as u64
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    /// Events per push request (the server accepts up to 1,000 by default).
    pub push_batch: usize,
    /// Bytes of request body a push stays under, about (the server accepts 4 MiB by
    /// default); a single larger event still goes alone.
    pub push_bytes: usize,
    /// Events per pull request.
    pub pull_limit: usize,
    /// Seconds a live pull waits on the server for new events.
    pub long_poll_seconds: u32,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            push_batch: 500,
            push_bytes: 2 * 1024 * 1024,
            // The server's largest page by default: fewer round trips.
            pull_limit: 10_000,
            long_poll_seconds: 25,
        }
    }
}

/// What the app sees of sync.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// The last request reached the server (and the platform says it is online).
    pub online: bool,
    /// A sync step is running.
    pub syncing: bool,
    /// Events waiting in the outbox.
    pub pending: usize,
    /// The last confirmed position pulled.
    pub last_pulled: u64,
    pub last_error: Option<String>,
    pub last_error_code: Option<String>,
    /// Requests refused for the token (401/403) since the last success: counted, so that
    /// each refusal is a status change whoever supplies tokens hears.
    pub auth_failures: u32,
}

/// What one full sync did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncReport {
    pub pushed: usize,
    pub pulled: usize,
    pub rejected: Vec<Rejection>,
    /// Times the server's epoch changed and the log was pulled again from the start.
    pub restarts: usize,
}

/// What one push did.
#[derive(Debug, Default)]
struct Pushed {
    /// Events accepted (stored now, or found stored already).
    count: usize,
    /// Their ids and positions.
    accepted: Vec<(EventId, u64)>,
    rejected: Vec<Rejection>,
    /// The server epoch the positions belong to.
    epoch: String,
}

type StatusListener = Rc<dyn Fn(&SyncStatus)>;
type RejectionListener = Rc<dyn Fn(&Rejection)>;

/// Syncs one engine through one transport.
pub struct SyncClient<T: Transport> {
    transport: T,
    options: SyncOptions,
    status: RefCell<SyncStatus>,
    platform_online: Cell<bool>,
    status_listeners: RefCell<Vec<StatusListener>>,
    rejection_listeners: RefCell<Vec<RejectionListener>>,
    wake: RefCell<Option<mpsc::UnboundedSender<()>>>,
    stopped: Cell<bool>,
    /// Bumped by [`SyncClient::credentials_changed`]: a loop stopped by a refused token
    /// retries only with other credentials.
    credentials: Cell<u64>,
    /// This client announced the rejections an earlier one stored but did not announce
    /// (it crashed, or its tab closed, in between).
    announced_stored: Cell<bool>,
    /// Events per push now: `push_batch`, halved while the server refuses pushes as too
    /// large or as holding an event it will not store, doubled back after each success
    /// (below `push_ceiling`).
    push_limit: Cell<usize>,
    /// The fewest events in a push the server refused as too large (`usize::MAX`: none).
    push_ceiling: Cell<usize>,
}

impl<T: Transport> SyncClient<T> {
    pub fn new(transport: T, options: SyncOptions) -> Self {
        SyncClient {
            transport,
            options,
            status: RefCell::new(SyncStatus::default()),
            platform_online: Cell::new(true),
            status_listeners: RefCell::new(Vec::new()),
            rejection_listeners: RefCell::new(Vec::new()),
            wake: RefCell::new(None),
            stopped: Cell::new(false),
            credentials: Cell::new(0),
            announced_stored: Cell::new(false),
            push_limit: Cell::new(options.push_batch.max(1)),
            push_ceiling: Cell::new(usize::MAX),
        }
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    pub fn status(&self) -> SyncStatus {
        self.status.borrow().clone()
    }

    pub fn on_status(&self, listener: impl Fn(&SyncStatus) + 'static) {
        self.status_listeners.borrow_mut().push(Rc::new(listener));
    }

    pub fn on_rejected(&self, listener: impl Fn(&Rejection) + 'static) {
        self.rejection_listeners
            .borrow_mut()
            .push(Rc::new(listener));
    }

    fn update_status(&self, f: impl FnOnce(&mut SyncStatus)) {
        let changed = {
            let mut status = self.status.borrow_mut();
            let before = status.clone();
            f(&mut status);
            *status != before
        };
        if changed {
            let status = self.status();
            let listeners: Vec<StatusListener> = self.status_listeners.borrow().clone();
            for listener in listeners {
                listener(&status);
            }
        }
    }

    fn refresh_counts<S: Storage>(&self, engine: &Engine<S>) {
        self.update_status(|s| {
            s.pending = engine.pending_count();
            s.last_pulled = engine.confirmed_head();
        });
    }

    /// Fails once the client is stopped. Checked before every request: a stopped client's
    /// step may still be running (a tab frozen mid-request resumes it later), and by then
    /// another tab syncs; pushing the outbox from here too would send it twice.
    fn check_running(&self) -> Result<(), SyncError> {
        if self.stopped.get() {
            Err(SyncError::Stopped)
        } else {
            Ok(())
        }
    }

    fn record<R>(&self, result: &Result<R, SyncError>) {
        match result {
            Ok(_) => self.update_status(|s| {
                s.online = self.platform_online.get();
                s.last_error = None;
                s.last_error_code = None;
                s.auth_failures = 0;
            }),
            Err(e) => {
                let transport = match e {
                    SyncError::Transport(t) => Some(t),
                    _ => None,
                };
                self.update_status(|s| {
                    // `online` is about the network: a server that answered "no" is online.
                    match transport {
                        Some(t) if t.server_answered() => s.online = self.platform_online.get(),
                        Some(_) => s.online = false,
                        None => {}
                    }
                    if transport.is_some_and(TransportError::is_auth) {
                        s.auth_failures = s.auth_failures.saturating_add(1);
                    }
                    s.last_error = Some(e.to_string());
                    s.last_error_code = Some(e.code().to_owned());
                })
            }
        }
    }

    /// Pushes one batch of the outbox and records the verdicts. Returns the number of
    /// events accepted, their positions, the rejections, and the server epoch the positions
    /// belong to.
    async fn push_batch<S: Storage>(&self, engine: &Engine<S>) -> Result<Pushed, SyncError> {
        let response = loop {
            self.check_running()?;
            let limit = self.push_limit.get();
            let events = engine.outgoing_within(limit, self.options.push_bytes);
            if events.is_empty() {
                return Ok(Pushed::default());
            }
            // Another tab may have reset the store for another server store since this one
            // bound it: its outbox is no longer this client's to push.
            engine.check_sync_target().await?;
            let client_id = engine.client_id().unwrap_or_default().to_owned();
            let count = events.len();
            let request = PushRequest { client_id, events };
            match self.transport.push(&request).await {
                Ok(response) => {
                    let grown = limit
                        .saturating_mul(2)
                        .min(self.options.push_batch.max(1))
                        .min(self.push_ceiling.get().saturating_sub(1).max(1));
                    self.push_limit.set(grown);
                    break response;
                }
                // The server will not take this push as it is (too large, or an event it
                // refuses to store): try half of it, down to the one event it refuses,
                // which is rejected like any event the server refuses, so that one bad
                // event cannot hold up the outbox forever.
                Err(TransportError::Refused { code, message, .. })
                    if code == crate::ErrorCode::TooLarge.as_str()
                        || code == crate::ErrorCode::InvalidEvent.as_str() =>
                {
                    if count > 1 {
                        if code == crate::ErrorCode::TooLarge.as_str() {
                            self.push_ceiling.set(self.push_ceiling.get().min(count));
                        }
                        self.push_limit.set(count / 2);
                        continue;
                    }
                    let refused = &request.events[0];
                    break PushResponse {
                        results: vec![PushResult::Rejected {
                            id: refused.id,
                            reason: format!("{code}: {message}"),
                            actual_version: None,
                        }],
                        head: engine.confirmed_head(),
                        epoch: engine.epoch().unwrap_or_default(),
                    };
                }
                Err(e) => return Err(e.into()),
            }
        };
        let accepted: Vec<(EventId, u64)> = response
            .results
            .iter()
            .filter_map(|r| match r {
                PushResult::Ok { id, position, .. }
                | PushResult::Duplicate { id, position, .. } => Some((*id, *position)),
                PushResult::Rejected { .. } => None,
            })
            .collect();
        let rejected = engine.settle_push(&response).await?;
        if !rejected.is_empty() {
            self.announce_rejections(engine).await?;
        }
        Ok(Pushed {
            count: accepted.len(),
            accepted,
            rejected,
            epoch: response.epoch,
        })
    }

    /// Tells the rejection listeners of the rejections stored but not announced yet: each
    /// is announced once, even when a crash (or `stop`) came between storing and
    /// announcing it (the next client announces it then). The store's mark moves past them
    /// before the listeners hear them, so a client that takes over meanwhile cannot
    /// announce them again.
    async fn announce_rejections<S: Storage>(&self, engine: &Engine<S>) -> Result<(), SyncError> {
        if self.stopped.get() {
            // The tab is closing or freezing (its listeners may be gone): the client that
            // syncs next announces them.
            return Ok(());
        }
        let rejections = engine.take_unannounced_rejections().await?;
        let listeners: Vec<RejectionListener> = self.rejection_listeners.borrow().clone();
        for rejection in &rejections {
            for listener in &listeners {
                listener(rejection);
            }
        }
        Ok(())
    }

    /// One pull request and its application. Returns `(events applied, more waiting)`.
    async fn pull_once<S: Storage>(
        &self,
        engine: &Engine<S>,
        wait_seconds: u32,
    ) -> Result<(usize, bool, bool), SyncError> {
        // The cursor is the confirmed head on disk: a tab that takes over sync may not
        // have seen what the previous syncing tab pulled (or reset) yet.
        engine.catch_up().await?;
        self.check_running()?;
        let response = self
            .transport
            .pull(
                engine.confirmed_head(),
                self.options.pull_limit,
                wait_seconds,
            )
            .await?;
        let before = engine.confirmed_head();
        let outcome = engine.apply_pull(&response).await?;
        if outcome.reused > 0 {
            self.announce_rejections(engine).await?;
        }
        let applied = (engine.confirmed_head().saturating_sub(before)) as usize;
        self.refresh_counts(engine);
        Ok((applied, response.more || outcome.restart, outcome.restart))
    }

    /// Pulls until the replica has everything the server has (restarting from position 1
    /// when the server's epoch changed). While one page is written, the next one is
    /// already asked for.
    async fn pull_all<S: Storage>(
        &self,
        engine: &Engine<S>,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let limit = self.options.pull_limit;
        let mut prefetched: Option<(u64, PullResponse)> = None;
        let mut stale_pages = 0;
        loop {
            self.check_running()?;
            let before = engine.confirmed_head();
            let response = match prefetched.take() {
                Some((after, response)) if after == before => response,
                _ => self.transport.pull(before, limit, 0).await?,
            };
            // The page after this one starts after its last event (if the server has more).
            let next_after = response
                .events
                .last()
                .map(|e| e.position)
                .filter(|p| response.more && *p > before);
            let (outcome, next) = match next_after {
                Some(after) => {
                    let (outcome, next) = join(
                        engine.apply_pull(&response),
                        self.transport.pull(after, limit, 0),
                    )
                    .await;
                    (outcome?, Some((after, next)))
                }
                None => (engine.apply_pull(&response).await?, None),
            };
            if outcome.reused > 0 {
                // Pending events the page refused (another event under their id).
                self.announce_rejections(engine).await?;
            }
            let applied = (engine.confirmed_head().saturating_sub(before)) as usize;
            self.refresh_counts(engine);
            report.pulled += applied;
            report.restarts += usize::from(outcome.restart);
            if outcome.stale {
                // Asked for from a cursor another tab moved meanwhile: ask again from ours.
                stale_pages += 1;
                if stale_pages > 3 {
                    return Err(SyncError::Store(Error::Storage(
                        "the server's pages do not continue this replica's log".into(),
                    )));
                }
                continue;
            }
            if !(response.more || outcome.restart) {
                return Ok(());
            }
            if !outcome.restart {
                if let Some((after, next)) = next {
                    prefetched = Some((after, next?));
                }
            }
        }
    }

    /// Pushes the whole outbox and pulls everything new, now.
    pub async fn sync<S: Storage>(&self, engine: &Engine<S>) -> Result<SyncReport, SyncError> {
        self.update_status(|s| s.syncing = true);
        let result = self.sync_inner(engine).await;
        if !matches!(result, Err(SyncError::Stopped)) {
            self.record(&result);
        }
        self.refresh_counts(engine);
        self.update_status(|s| s.syncing = false);
        result
    }

    async fn sync_inner<S: Storage>(&self, engine: &Engine<S>) -> Result<SyncReport, SyncError> {
        let mut report = SyncReport::default();
        if !self.announced_stored.get() {
            self.announce_rejections(engine).await?;
            self.announced_stored.set(true);
        }
        // Pull first: a changed epoch or events ordered before ours are best known early.
        self.pull_all(engine, &mut report).await?;
        while engine.pending_count() > 0 {
            let pushed = self.push_batch(engine).await?;
            report.pushed += pushed.count;
            let progress = pushed.count + pushed.rejected.len();
            report.rejected.extend(pushed.rejected);
            self.pull_all(engine, &mut report).await?;
            // The server holds every accepted event at its position; one at or before the
            // cursor that is still pending can never come back in a pull (the server had it
            // before this replica took it in), so it leaves the outbox instead of being
            // pushed forever. Only positions in the log this replica now holds count: if the
            // server's epoch changed since the push (its database was replaced), the event
            // was accepted by a store that is gone and must be pushed again.
            let same_log = engine.epoch().as_deref() == Some(pushed.epoch.as_str());
            let stale: HashSet<EventId> = pushed
                .accepted
                .iter()
                .filter(|(id, p)| {
                    same_log && *p <= engine.confirmed_head() && engine.is_pending(id)
                })
                .map(|(id, _)| *id)
                .collect();
            if !stale.is_empty() {
                engine.forget_pending(&stale).await?;
            }
            if progress == 0 {
                break;
            }
        }
        Ok(report)
    }

    /// Tells the client whether the platform is online (`navigator.onLine`); going online
    /// wakes a waiting live loop at once.
    pub fn set_online(&self, online: bool) {
        self.platform_online.set(online);
        self.update_status(|s| {
            if !online {
                // No request is sent while offline: say why nothing syncs.
                let offline = SyncError::Transport(TransportError::platform_offline());
                s.online = false;
                s.last_error = Some(offline.to_string());
                s.last_error_code = Some(offline.code().to_owned());
            }
        });
        if online {
            self.wake();
        }
    }

    /// Asks a live loop to sync now (after a local append, or when coming online).
    pub fn wake(&self) {
        if let Some(tx) = self.wake.borrow().as_ref() {
            let _ = tx.unbounded_send(());
        }
    }

    /// The transport's credentials (token, headers) were replaced: a loop waiting after a
    /// refused token tries again now.
    pub fn credentials_changed(&self) {
        self.credentials.set(self.credentials.get().wrapping_add(1));
        self.wake();
    }

    /// Ends a live loop, and any sync in progress, before their next request; for good: a
    /// stopped client never sends again (start a new one instead).
    pub fn stop(&self) {
        self.stopped.set(true);
        self.wake();
    }

    /// Keeps the replica in sync until [`SyncClient::stop`]: sync, then long-poll for new
    /// events; on failure wait with backoff and jitter; while offline wait to be woken.
    /// `random` returns uniform numbers in `[0, 1)` for the jitter.
    pub async fn run<S: Storage, Tm: Timer>(
        &self,
        engine: &Engine<S>,
        timer: &Tm,
        mut random: impl FnMut() -> f64,
    ) {
        let (tx, mut woken) = mpsc::unbounded();
        *self.wake.borrow_mut() = Some(tx);
        let mut backoff = Backoff::default();
        while !self.stopped.get() && !engine.is_closed() {
            if !self.platform_online.get() {
                woken.next().await;
                continue;
            }
            match self.sync(engine).await {
                Ok(_) => backoff.reset(),
                Err(SyncError::Stopped) => break,
                Err(SyncError::Transport(t)) if t.is_auth() => {
                    // The same token would be refused again: wait for other credentials
                    // (local appends wake the loop too, and wait on).
                    let refused = self.credentials.get();
                    while self.credentials.get() == refused && !self.stopped.get() {
                        if woken.next().await.is_none() {
                            break;
                        }
                    }
                    continue;
                }
                Err(e) if e.is_retryable() => {
                    let delay = backoff.next_delay(random());
                    let sleep = std::pin::pin!(timer.sleep(delay));
                    let _ = select(sleep, woken.next()).await;
                    continue;
                }
                Err(_) => {
                    // Not retryable as is (refused token, oversize request): wait to be
                    // woken (reconfigured, or new events) rather than hammer the server.
                    woken.next().await;
                    continue;
                }
            }
            if self.stopped.get() || engine.pending_count() > 0 {
                continue;
            }
            // Live: hold a pull open; a local append or an online event interrupts it.
            let pull = std::pin::pin!(self.pull_once(engine, self.options.long_poll_seconds));
            match select(pull, woken.next()).await {
                Either::Left((Ok(_), _)) => backoff.reset(),
                Either::Left((Err(SyncError::Stopped), _)) => break,
                Either::Left((Err(e), _)) => {
                    let auth = matches!(&e, SyncError::Transport(t) if t.is_auth());
                    let result: Result<(), SyncError> = Err(e);
                    self.record(&result);
                    if auth {
                        // The full sync at the top of the loop waits for new credentials.
                        continue;
                    }
                    let delay = backoff.next_delay(random());
                    let sleep = std::pin::pin!(timer.sleep(delay));
                    let _ = select(sleep, woken.next()).await;
                }
                Either::Right(_) => {}
            }
        }
        *self.wake.borrow_mut() = None;
    }
}

/// `error.versions` of an error body (empty when it has none).
fn read_versions(r: &mut Reader<'_>) -> JsonResult<Vec<u32>> {
    let mut versions = Vec::new();
    r.object(&mut |r, key| match key {
        "error" => r.object(&mut |r, key| match key {
            "versions" => {
                versions = r.list(Reader::uint::<u32>)?;
                Ok(())
            }
            _ => r.raw().map(|_| ()),
        }),
        _ => r.raw().map(|_| ()),
    })?;
    Ok(versions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_ceiling_and_jitters_below_it() {
        let mut backoff = Backoff::default();
        let ceilings: Vec<u64> = (0..8).map(|_| backoff.next_delay(0.999_999)).collect();
        assert_eq!(
            ceilings,
            [499, 999, 1_999, 3_999, 7_999, 15_999, 29_999, 29_999]
        );
        assert_eq!(backoff.next_delay(0.0), 0);
        assert_eq!(backoff.next_delay(0.5), 15_000);
        backoff.reset();
        assert_eq!(backoff.next_delay(0.5), 250);
    }

    #[test]
    fn answers_map_to_errors_by_status() {
        assert_eq!(TransportError::check_status(200, "{}"), Ok("{}"));
        let body = r#"{"error":{"code":"TOO_LARGE","message":"the body is over 4 MiB"}}"#;
        assert_eq!(
            TransportError::check_status(413, body),
            Err(TransportError::Refused {
                status: 413,
                code: "TOO_LARGE".into(),
                message: "the body is over 4 MiB".into()
            })
        );
        assert!(
            matches!(TransportError::check_status(401, "no"), Err(TransportError::Unauthorized(m)) if m == "no")
        );
        assert!(matches!(
            TransportError::check_status(403, b""),
            Err(TransportError::Forbidden(_))
        ));
        assert!(matches!(
            TransportError::check_status(429, b""),
            Err(TransportError::Server { status: 429, .. })
        ));
        assert!(matches!(
            TransportError::check_status(502, b""),
            Err(TransportError::Server { status: 502, .. })
        ));
    }

    #[test]
    fn only_transient_failures_are_retried() {
        assert!(TransportError::Unreachable("down".into()).is_retryable());
        assert!(TransportError::Server {
            status: 503,
            message: String::new()
        }
        .is_retryable());
        assert!(!TransportError::Unauthorized(String::new()).is_retryable());
        assert!(!TransportError::Refused {
            status: 413,
            code: "TOO_LARGE".into(),
            message: String::new()
        }
        .is_retryable());
    }
}
