//! `annals-server`: the annals sync server (and static file server for the demo).
//!
//! ```text
//! annals-server [--config annals.toml] [--listen 127.0.0.1:8080]
//!     [--database sqlite://data/annals.db] [--tokens tokens.json] [--www www/dist]
//!     [--dev-token TOKEN] [--cors-origin ORIGIN ...] [--metrics on|off|ADDR]
//!     [--log-format text|json] [--shutdown-grace 8] [--max-* ...] [--rate-limit-* ...]
//! ```
//!
//! Every flag also comes from an `ANNALS_*` variable or a key of the `--config` file; see
//! [`annals::server::config`] and `annals-server --help`.

use std::process::ExitCode;

use annals::server::config::{LogFormat, Settings, SettingsError};
use annals::server::{init_tracing, serve};

/// Resolves when the process is asked to stop (SIGINT, or SIGTERM on Unix).
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
    let settings = match Settings::from_args(std::env::args_os()) {
        Ok(s) => s,
        // --help, --version and bad flags: clap prints and picks the exit code.
        Err(SettingsError::Cli(e)) => e.exit(),
        Err(SettingsError::Invalid(message)) => {
            eprintln!("annals-server: {message}");
            return ExitCode::from(2);
        }
    };
    let config = match settings.server_config() {
        Ok(c) => c,
        Err(message) => {
            eprintln!("annals-server: {message}");
            return ExitCode::from(2);
        }
    };
    if settings.check_only {
        return match settings.to_toml() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("annals-server: {message}");
                ExitCode::FAILURE
            }
        };
    }
    init_tracing(settings.log_format == LogFormat::Json);
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
    if let Some(addr) = server.metrics_addr() {
        println!("annals-server metrics on http://{addr}/metrics");
    }
    // axum's server only stops when told to.
    stop_signal().await;
    // A second signal during the grace period stops at once.
    tokio::select! {
        result = server.shutdown_within(settings.shutdown_grace) => match result {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        },
        _ = stop_signal() => {
            tracing::warn!("second stop signal: exiting without waiting for requests in flight");
            ExitCode::FAILURE
        }
    }
}
