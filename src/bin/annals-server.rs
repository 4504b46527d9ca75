//! `annals-server`: the annals sync server (and static file server for the demo).
//!
//! ```text
//! annals-server --listen 127.0.0.1:8080 --database sqlite://data/annals.db \
//!     --tokens tokens.json --www www/dist [--dev-token TOKEN] [--cors-origin ORIGIN ...]
//!     [--rate-limit-per-second 50 --rate-limit-burst 100] [--max-* ...]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use annals::server::{init_tracing, serve, Auth, Limits, RateLimit, ServerConfig};
use clap::{Parser, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "annals-server", version, about = "The annals sync server")]
struct Cli {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// `sqlite://PATH` (created on first start) or `postgres://USER@HOST:PORT/DB`
    /// (optionally `?schema=NAME&pool_size=N`).
    #[arg(long, default_value = "sqlite://data/annals.db")]
    database: String,

    /// JSON file `{ "<token>": { "read": ["store"], "write": ["store"] } }` ("*" = any store).
    #[arg(long)]
    tokens: Option<PathBuf>,

    /// Directory of static files to serve (the built demo); unknown paths get index.html.
    #[arg(long)]
    www: Option<PathBuf>,

    /// A token that grants every store (for the demo).
    #[arg(long, env = "ANNALS_DEV_TOKEN", hide_env_values = true)]
    dev_token: Option<String>,

    /// Browser origin allowed to call the API (repeatable; "*" = any).
    #[arg(long = "cors-origin", value_name = "ORIGIN", num_args = 1..)]
    cors_origins: Vec<String>,

    /// Largest request body, in bytes.
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,

    /// Most events in one push.
    #[arg(long, default_value_t = Limits::default().max_events_per_push)]
    max_events_per_push: usize,

    /// Largest event (stream + type + data + meta), in bytes.
    #[arg(long, default_value_t = Limits::default().max_event_bytes)]
    max_event_bytes: usize,

    /// Deepest nesting of arrays and objects in an event's data or meta.
    #[arg(long, default_value_t = Limits::default().max_json_depth)]
    max_json_depth: usize,

    /// Requests per second each token may make on average (0 = no limit); past it the
    /// server answers 429 with Retry-After. A long poll counts once.
    #[arg(long, default_value_t = RateLimit::default().per_second)]
    rate_limit_per_second: f64,

    /// Requests a token may make at once after being idle.
    #[arg(long, default_value_t = RateLimit::default().burst)]
    rate_limit_burst: u32,

    /// Long polls one token may hold at once (429 past it).
    #[arg(long, default_value_t = Limits::default().max_long_polls_per_token)]
    max_long_polls_per_token: usize,

    /// Long polls the server holds at once, over every token (503 past it).
    #[arg(long, default_value_t = Limits::default().max_long_polls)]
    max_long_polls: usize,

    /// Bytes of request bodies held in memory at once, over every request (503 past it).
    #[arg(long, default_value_t = Limits::default().max_buffered_bytes)]
    max_buffered_bytes: usize,

    /// Log format.
    #[arg(long, env = "ANNALS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn config(cli: Cli) -> Result<ServerConfig, String> {
    let mut auth = match &cli.tokens {
        Some(path) => Auth::from_file(path).map_err(|e| e.to_string())?,
        None => Auth::new(),
    };
    if let Some(token) = cli.dev_token.filter(|t| !t.is_empty()) {
        auth = auth
            .with_dev_token(token)
            .map_err(|e| format!("--dev-token: {e}"))?;
    }
    let limits = Limits {
        max_body_bytes: cli.max_body_bytes,
        max_events_per_push: cli.max_events_per_push,
        max_event_bytes: cli.max_event_bytes,
        max_json_depth: cli.max_json_depth,
        max_long_polls_per_token: cli.max_long_polls_per_token,
        max_long_polls: cli.max_long_polls,
        max_buffered_bytes: cli.max_buffered_bytes,
        ..Limits::default()
    };
    limits
        .check()
        .map_err(|e| format!("{} (see --max-*)", e.replace('_', "-")))?;
    let rate_limit = if cli.rate_limit_per_second == 0.0 {
        None
    } else {
        let rate = RateLimit {
            per_second: cli.rate_limit_per_second,
            burst: cli.rate_limit_burst,
        };
        rate.check()
            .map_err(|e| format!("--rate-limit-per-second/--rate-limit-burst: {e}"))?;
        Some(rate)
    };
    Ok(ServerConfig {
        listen: cli.listen,
        database: cli.database,
        auth,
        www: cli.www,
        cors_origins: cli.cors_origins,
        limits,
        rate_limit,
        // Authorities are Rust code: apps that want them embed the server as a library
        // (`annals::server::serve` with `ServerConfig::authorities`).
        ..ServerConfig::default()
    })
}

async fn stop_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format == LogFormat::Json);
    let config = match config(cli) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(www) = &config.www {
        if !www.join("index.html").is_file() {
            tracing::warn!(www = %www.display(), "no index.html there; build the demo first");
        }
    }
    let server = match serve(config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    println!("annals-server listening on {}", server.url());
    // axum's server only stops when told to.
    stop_signal().await;
    tracing::info!("shutting down");
    match server.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
