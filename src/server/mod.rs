//! `annals-server`: the sync server (feature `server`, native only). See DESIGN.md §5.
//!
//! ```text
//! POST /v1/stores/{store}/push                       PushRequest -> PushResponse
//! GET  /v1/stores/{store}/pull?after=&limit=&wait=   -> PullResponse (long poll with wait)
//! GET  /health
//! GET  /versions                                     { "protocol": [1], "server": "x.y.z" }
//! GET  /metrics                                      Prometheus text (see [`metrics`])
//! /v<other>/...: a JSON 404 UNSUPPORTED_VERSION naming the versions spoken
//! every answer: `Annals-Protocol: 1` (the versions spoken, see [`ServerConfig::protocol_versions`])
//! everything else: the static files of --www (index.html for unknown paths)
//! ```
//!
//! Every `/v1` request is authenticated first (401/403), then counted against its token's
//! rate limit (429 with `Retry-After`); long polls are capped per token (429) and overall
//! (503), and request bodies are read against a size limit (413) and a server-wide memory
//! budget (503) while they stream in. See [`throttle`].
//!
//! [`serve`] binds, starts the server in the background and returns its address and a
//! shutdown handle; the binary and the tests both use it.

pub mod auth;
pub mod config;
pub mod erase;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod postgres;
pub mod routes;
pub mod sqlite;
pub mod store;
pub mod throttle;
pub mod transfer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::push::authority::Authorities;

use axum::http::{HeaderValue, Method, Request, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::services::{ServeDir, ServeFile};
use tower_http::trace::TraceLayer;

pub use auth::{Access, Auth, Grant};
pub use limits::Limits;
pub use metrics::Metrics;
pub use routes::AppState;
pub use store::{ServerStore, StoreError};
pub use throttle::RateLimit;

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen (port 0 picks a free port; see [`RunningServer::local_addr`]).
    pub listen: SocketAddr,
    /// `sqlite://path/to/file.db` or `postgres://...`.
    pub database: String,
    pub auth: Auth,
    /// Static files to serve (the demo), with `index.html` for unknown paths.
    pub www: Option<PathBuf>,
    /// Origins allowed to call the API from a browser (`*` = any); none = same-origin only.
    pub cors_origins: Vec<String>,
    pub limits: Limits,
    /// Requests per known token (429 with `Retry-After` past it); `None` = unlimited.
    pub rate_limit: Option<RateLimit>,
    /// Deciders that re-check pushed events of the streams they claim (see
    /// [`crate::push::authority`]); for Rust apps that embed the server.
    pub authorities: Authorities,
    /// Where `GET /metrics` is served.
    pub metrics: MetricsEndpoint,
    /// The sync protocol versions this server answers (`/v{N}/...`; others get a 404
    /// `UNSUPPORTED_VERSION`, which clients report as `UPGRADE_REQUIRED`). This build
    /// implements v1 ([`crate::protocol::PROTOCOL_VERSION`]), the default; another number
    /// is served with v1's routes, which only makes sense for testing clients against a
    /// server of another version (`--protocol-versions`, a hidden flag).
    pub protocol_versions: Vec<u32>,
}

/// Where the server answers `GET /metrics` (Prometheus text format, no token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricsEndpoint {
    /// On the API's address, beside `/v1` and `/health`.
    #[default]
    Api,
    /// On an address of its own (say a private interface), and not on the API's.
    Listen(SocketAddr),
    /// Nowhere.
    Off,
}

impl std::str::FromStr for MetricsEndpoint {
    type Err = String;

    /// `on` (the API's address), `off`, or an address such as `127.0.0.1:9464`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "on" => Ok(MetricsEndpoint::Api),
            "off" => Ok(MetricsEndpoint::Off),
            addr => addr.parse().map(MetricsEndpoint::Listen).map_err(|_| {
                format!("{addr:?} is neither on, off nor an address such as 127.0.0.1:9464")
            }),
        }
    }
}

impl std::fmt::Display for MetricsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsEndpoint::Api => f.write_str("on"),
            MetricsEndpoint::Listen(addr) => write!(f, "{addr}"),
            MetricsEndpoint::Off => f.write_str("off"),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database: "sqlite://data/annals.db".into(),
            auth: Auth::new(),
            www: None,
            cors_origins: Vec::new(),
            limits: Limits::default(),
            rate_limit: Some(RateLimit::default()),
            authorities: Authorities::default(),
            metrics: MetricsEndpoint::default(),
            protocol_versions: vec![crate::protocol::PROTOCOL_VERSION],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
}

/// Opens the backend that `database` names.
pub async fn open_store(
    database: &str,
    authorities: Authorities,
) -> Result<Arc<dyn ServerStore>, StartError> {
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PgStore::open(database, authorities).await?,
        ))
    } else if database.starts_with("sqlite:") {
        let path = sqlite::path_from_url(database)?;
        Ok(Arc::new(
            sqlite::SqliteStore::open(&path, authorities).await?,
        ))
    } else {
        Err(StartError::Config(format!(
            "--database must be sqlite://PATH or postgres://..., got {database:?}"
        )))
    }
}

/// The whole application: API routes, health, metrics, static files, CORS, the request
/// metrics and the request log.
pub fn router(state: AppState, config: &ServerConfig) -> Result<Router, StartError> {
    let metrics = Arc::clone(&state.metrics);
    let versions = Arc::new(
        routes::ProtocolVersions::new(&config.protocol_versions).map_err(StartError::Config)?,
    );
    let api = Router::new()
        .route("/stores/{store}/push", post(routes::push))
        .route("/stores/{store}/pull", get(routes::pull))
        .fallback(routes::not_found_v1)
        .method_not_allowed_fallback(routes::method_not_allowed);
    let mut app = Router::new().route("/health", get(routes::health)).route(
        "/versions",
        get(routes::versions).with_state(Arc::clone(&versions)),
    );
    if config.metrics == MetricsEndpoint::Api {
        app = app.route("/metrics", get(routes::metrics));
    }
    for version in versions.versions() {
        app = app.nest(&format!("/v{version}"), api.clone());
    }
    let mut app = app.method_not_allowed_fallback(routes::method_not_allowed);
    app = match &config.www {
        Some(dir) => {
            let index = ServeFile::new(dir.join("index.html"));
            app.fallback_service(ServeDir::new(dir).fallback(index))
        }
        None => app.fallback(routes::not_found),
    };
    let mut app = app
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            versions,
            routes::other_versions,
        ));
    if !config.cors_origins.is_empty() {
        app = app.layer(cors(&config.cors_origins)?);
    }
    // Outside CORS, so that the preflights it answers are counted too.
    let app = app.layer(axum::middleware::from_fn_with_state(
        metrics,
        metrics::track,
    ));
    Ok(app.layer(
        TraceLayer::new_for_http()
            .make_span_with(|req: &Request<_>| {
                tracing::info_span!(
                    "request",
                    method = %req.method(),
                    path = %req.uri().path(),
                    store = %routes::store_of_path(req.uri().path()),
                )
            })
            .on_request(())
            .on_response(
                |res: &Response<_>, latency: Duration, _span: &tracing::Span| {
                    tracing::info!(
                        status = res.status().as_u16(),
                        // A number (for JSON logs), to a hundredth of a millisecond.
                        latency_ms = (latency.as_secs_f64() * 100_000.0).round() / 100.0,
                        "response"
                    );
                },
            )
            .on_failure(()),
    ))
}

fn cors(origins: &[String]) -> Result<CorsLayer, StartError> {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let mut list = Vec::with_capacity(origins.len());
        for origin in origins {
            let value = HeaderValue::from_str(origin.trim_end_matches('/'))
                .map_err(|_| StartError::Config(format!("bad --cors-origin {origin:?}")))?;
            list.push(value);
        }
        AllowOrigin::list(list)
    };
    Ok(CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST])
        // Apps add their own headers (`sync.headers`); the token still decides access.
        .allow_headers(AllowHeaders::mirror_request())
        // So that a page can read which protocol versions the server speaks.
        .expose_headers([axum::http::HeaderName::from_static(routes::PROTOCOL_HEADER)])
        .max_age(Duration::from_secs(600)))
}

/// `GET /metrics` alone, for [`MetricsEndpoint::Listen`].
fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::serve_metrics))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(metrics)
}

/// A server running in the background.
pub struct RunningServer {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    backend: &'static str,
    throttle: Arc<throttle::Throttle>,
    metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
    metrics_task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningServer {
    /// The bound address (the real port when listening on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address of the separate metrics listener ([`MetricsEndpoint::Listen`]).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// This server's metrics (what `GET /metrics` answers).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// "sqlite" or "postgres".
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Long polls waiting now, over every token.
    pub fn long_polls(&self) -> usize {
        self.throttle.long_polls.running()
    }

    /// Bytes of request bodies held now, over every request.
    pub fn buffered_bytes(&self) -> usize {
        self.throttle.bodies.used()
    }

    /// Stops accepting connections, answers the long polls at once (with what they have),
    /// lets in-flight requests finish (for up to `grace`; a push that reached the database
    /// always commits), then closes the database.
    pub async fn shutdown_within(self, grace: Duration) -> Result<(), StartError> {
        tracing::info!(
            in_flight = self.metrics.in_flight(),
            long_polls = self.long_polls(),
            "shutting down: no new connections; answering long polls, finishing requests"
        );
        let _ = self.shutdown.send(true);
        let mut tasks = vec![self.task];
        tasks.extend(self.metrics_task);
        let deadline = tokio::time::Instant::now() + grace;
        let mut outcome = Ok(());
        for mut task in tasks {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok(result)) => outcome = outcome.and(result.map_err(StartError::Serve)),
                Ok(Err(e)) => {
                    outcome =
                        outcome.and(Err(StartError::Serve(std::io::Error::other(e.to_string()))))
                }
                Err(_) => {
                    tracing::warn!(
                        in_flight = self.metrics.in_flight(),
                        "requests still running after {grace:?}; stopping anyway"
                    );
                    task.abort();
                    let _ = task.await;
                }
            }
        }
        outcome
    }

    /// [`Self::shutdown_within`] ten seconds.
    pub async fn shutdown(self) -> Result<(), StartError> {
        self.shutdown_within(Duration::from_secs(10)).await
    }

    /// Runs until the server stops by itself (it only does on an I/O failure).
    pub async fn wait(self) -> Result<(), StartError> {
        match self.task.await {
            Ok(result) => result.map_err(StartError::Serve),
            Err(e) => Err(StartError::Serve(std::io::Error::other(e.to_string()))),
        }
    }
}

/// Opens the database, binds `config.listen` and serves in the background.
pub async fn serve(config: ServerConfig) -> Result<RunningServer, StartError> {
    let store = open_store(&config.database, config.authorities.clone()).await?;
    serve_with_store(config, store).await
}

/// [`serve`] on an already opened backend.
pub async fn serve_with_store(
    config: ServerConfig,
    store: Arc<dyn ServerStore>,
) -> Result<RunningServer, StartError> {
    if config.auth.is_empty() {
        tracing::warn!("no tokens configured (--tokens, --dev-token): every request will be 401");
    }
    config.limits.check().map_err(StartError::Config)?;
    if let Some(rate) = &config.rate_limit {
        rate.check().map_err(StartError::Config)?;
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let backend = store.backend();
    let throttle = Arc::new(throttle::Throttle::new(config.rate_limit, &config.limits));
    let metrics = Arc::new(Metrics::new(Arc::clone(&throttle)));
    let state = AppState {
        store,
        auth: Arc::new(config.auth.clone()),
        limits: Arc::new(config.limits.clone()),
        throttle: Arc::clone(&throttle),
        shutdown: shutdown_rx.clone(),
        metrics: Arc::clone(&metrics),
    };
    let app = router(state, &config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let (metrics_addr, metrics_task) = match config.metrics {
        MetricsEndpoint::Listen(metrics_listen) => {
            let bind_error = |source| StartError::Bind {
                addr: metrics_listen,
                source,
            };
            let listener = tokio::net::TcpListener::bind(metrics_listen)
                .await
                .map_err(bind_error)?;
            let metrics_addr = listener.local_addr().map_err(bind_error)?;
            let app = metrics_router(Arc::clone(&metrics));
            let task = tokio::spawn(serve_until(listener, app, shutdown_rx.clone()));
            tracing::info!(addr = %metrics_addr, "metrics on their own address");
            (Some(metrics_addr), Some(task))
        }
        MetricsEndpoint::Api | MetricsEndpoint::Off => (None, None),
    };
    let task = tokio::spawn(serve_until(listener, app, shutdown_rx));
    tracing::info!(%addr, backend, "annals-server listening");
    Ok(RunningServer {
        addr,
        metrics_addr,
        backend,
        throttle,
        metrics,
        shutdown: shutdown_tx,
        task,
        metrics_task,
    })
}

/// Serves `app` until `stop` turns true, then stops accepting and waits for the requests
/// in flight (hyper closes idle keep-alive connections at once).
async fn serve_until(
    listener: tokio::net::TcpListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        })
        .await
}

/// Log output for the binary, on stderr: human-readable lines or JSON lines, filtered by
/// `RUST_LOG` (default `info`).
pub fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr; stdout carries only the "listening on" line.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    // JSON: one object a line, the event's fields (message included) at the top level and
    // the request span's fields (method, path, store) under "span".
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}
