//! `annals-server`: the sync server (feature `server`, native only). See DESIGN.md §5.
//!
//! ```text
//! POST /v1/stores/{store}/push                       PushRequest -> PushResponse
//! GET  /v1/stores/{store}/pull?after=&limit=&wait=   -> PullResponse (long poll with wait)
//! GET  /health
//! /v<other>/...: a JSON 404 naming the supported version (v1)
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
pub mod error;
pub mod limits;
pub mod postgres;
pub mod routes;
pub mod sqlite;
pub mod store;
pub mod throttle;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::push::authority::Authorities;

use axum::http::{header, HeaderValue, Method, Request, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::{ServeDir, ServeFile};
use tower_http::trace::TraceLayer;

pub use auth::{Access, Auth, Grant};
pub use limits::Limits;
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

/// The whole application: API routes, health, static files, CORS and the request log.
pub fn router(state: AppState, config: &ServerConfig) -> Result<Router, StartError> {
    let api = Router::new()
        .route("/stores/{store}/push", post(routes::push))
        .route("/stores/{store}/pull", get(routes::pull))
        .fallback(routes::not_found_v1)
        .method_not_allowed_fallback(routes::method_not_allowed);
    let mut app = Router::new()
        .route("/health", get(routes::health))
        .nest("/v1", api)
        .method_not_allowed_fallback(routes::method_not_allowed);
    app = match &config.www {
        Some(dir) => {
            let index = ServeFile::new(dir.join("index.html"));
            app.fallback_service(ServeDir::new(dir).fallback(index))
        }
        None => app.fallback(routes::not_found),
    };
    let mut app = app
        .with_state(state)
        .layer(axum::middleware::from_fn(routes::other_versions));
    if !config.cors_origins.is_empty() {
        app = app.layer(cors(&config.cors_origins)?);
    }
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
                        latency_ms = %format_args!("{:.2}", latency.as_secs_f64() * 1000.0),
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
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600)))
}

/// A server running in the background.
pub struct RunningServer {
    addr: SocketAddr,
    backend: &'static str,
    throttle: Arc<throttle::Throttle>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
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

    /// Stops accepting, ends long polls, lets in-flight requests finish (for up to
    /// `grace`), then closes the database.
    pub async fn shutdown_within(self, grace: Duration) -> Result<(), StartError> {
        let _ = self.shutdown.send(true);
        let mut task = self.task;
        match tokio::time::timeout(grace, &mut task).await {
            Ok(Ok(result)) => result.map_err(StartError::Serve),
            Ok(Err(e)) => Err(StartError::Serve(std::io::Error::other(e.to_string()))),
            Err(_) => {
                tracing::warn!("requests still running after {grace:?}; stopping anyway");
                task.abort();
                let _ = task.await;
                Ok(())
            }
        }
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
    let state = AppState {
        store,
        auth: Arc::new(config.auth.clone()),
        limits: Arc::new(config.limits.clone()),
        throttle: Arc::clone(&throttle),
        shutdown: shutdown_rx.clone(),
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
    let mut stop = shutdown_rx;
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            })
            .await
    });
    tracing::info!(%addr, backend, "annals-server listening");
    Ok(RunningServer {
        addr,
        backend,
        throttle,
        shutdown: shutdown_tx,
        task,
    })
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
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}
