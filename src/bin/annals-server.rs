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
//!
//! Moving a store's events in and out (see [`annals::server::transfer`]):
//!
//! ```text
//! annals-server export --database <url> --store <name> [--out FILE]
//! annals-server import --database <url> --store <name> [--dry-run] <FILE|->
//! annals-server erase --database <url> --store <name> --stream <stream>
//! ```

use std::process::ExitCode;

use annals::server::config::{LogFormat, Settings, SettingsError};
use annals::server::transfer::{self, Command, ExportArgs, ImportArgs, ImportOptions};
use annals::server::{init_tracing, open_store, serve};

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
    if let Some(command) = &settings.command {
        init_tracing(settings.log_format == LogFormat::Json);
        return match command {
            Command::Export(args) => export(&settings, args).await,
            Command::Import(args) => import(&settings, args).await,
            Command::Erase(args) => erase(&settings, args).await,
        };
    }
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

/// Opens the database a subcommand names (its own `--database`, else the server's).
async fn open_database(
    settings: &Settings,
    database: Option<&String>,
    store: &str,
    must_exist: bool,
) -> Result<std::sync::Arc<dyn annals::server::ServerStore>, (ExitCode, String)> {
    let usage = |message: String| (ExitCode::from(2), message);
    if !annals::server::limits::is_valid_store_name(store) {
        return Err(usage(format!(
            "--store {store:?}: store names are 1 to {} of A-Z a-z 0-9 . _ -",
            annals::server::limits::MAX_STORE_NAME
        )));
    }
    let url = database.unwrap_or(&settings.database);
    // Exporting from a mistyped SQLite path must not create an empty database there.
    if must_exist && url.starts_with("sqlite:") {
        let path = annals::server::sqlite::path_from_url(url).map_err(|e| usage(e.to_string()))?;
        if !path.is_file() {
            return Err(usage(format!("no database at {}", path.display())));
        }
    }
    open_store(url, Default::default())
        .await
        .map_err(|e| (ExitCode::FAILURE, e.to_string()))
}

/// `annals-server export`: NDJSON on standard output or into `--out` (written beside it
/// first and renamed when complete, so that a failed export leaves no partial file).
async fn export(settings: &Settings, args: &ExportArgs) -> ExitCode {
    let backend = match open_database(settings, args.database.as_ref(), &args.store, true).await {
        Ok(b) => b,
        Err((code, message)) => {
            eprintln!("annals-server export: {message}");
            return code;
        }
    };
    let result = match &args.out {
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            transfer::export(backend.as_ref(), &args.store, &mut out).await
        }
        Some(path) => {
            let partial = path.with_extension("partial");
            let written = async {
                let file = std::fs::File::create(&partial)?;
                let mut out = std::io::BufWriter::new(file);
                let count = transfer::export(backend.as_ref(), &args.store, &mut out).await?;
                out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                std::fs::rename(&partial, path)?;
                Ok::<u64, transfer::TransferError>(count)
            }
            .await;
            if written.is_err() {
                let _ = std::fs::remove_file(&partial);
            }
            written
        }
    };
    match result {
        Ok(count) => {
            eprintln!(
                "annals-server export: {count} events of store {:?}",
                args.store
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("annals-server export: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `annals-server erase`: prints `{ "store", "stream", "position", "version" }` of the
/// `$StreamErased` appended (the stream's events below `version` are erased).
async fn erase(settings: &Settings, args: &annals::server::erase::EraseArgs) -> ExitCode {
    let backend = match open_database(settings, args.database.as_ref(), &args.store, true).await {
        Ok(b) => b,
        Err((code, message)) => {
            eprintln!("annals-server erase: {message}");
            return code;
        }
    };
    match annals::server::erase::erase_stream(backend.as_ref(), &args.store, &args.stream).await {
        Ok(erased) => {
            println!(
                "{}",
                serde_json::json!({
                    "store": args.store,
                    "stream": args.stream,
                    "position": erased.position,
                    "version": erased.version,
                })
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("annals-server erase: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `annals-server import`: prints `{ "lines", "imported", "duplicates", "rejected",
/// "dryRun" }` on standard output.
async fn import(settings: &Settings, args: &ImportArgs) -> ExitCode {
    let backend = match open_database(settings, args.database.as_ref(), &args.store, false).await {
        Ok(b) => b,
        Err((code, message)) => {
            eprintln!("annals-server import: {message}");
            return code;
        }
    };
    let mut input = match transfer::open_input(&args.input) {
        Ok(input) => input,
        Err(e) => {
            eprintln!("annals-server import: cannot read {}: {e}", args.input);
            return ExitCode::from(2);
        }
    };
    let options = ImportOptions {
        dry_run: args.dry_run,
        limits: settings.limits.clone(),
        ..ImportOptions::default()
    };
    match transfer::import(backend.as_ref(), &args.store, &mut input, &options).await {
        Ok(report) => {
            println!(
                "{}",
                serde_json::json!({
                    "lines": report.lines,
                    "imported": report.imported,
                    "duplicates": report.duplicates,
                    "rejected": report.rejected,
                    "dryRun": args.dry_run,
                })
            );
            if args.dry_run {
                eprintln!(
                    "annals-server import: {} event lines checked; {} would be imported, {} are \
                     already there; nothing written (dry run)",
                    report.lines, report.imported, report.duplicates
                );
            } else {
                eprintln!(
                    "annals-server import: {} events imported into {:?}, {} already there{}",
                    report.imported,
                    args.store,
                    report.duplicates,
                    if report.rejected > 0 {
                        format!(", {} rejected", report.rejected)
                    } else {
                        String::new()
                    }
                );
            }
            // Refused events (an id the store holds as another event) are named by line;
            // the rest of the file was imported.
            for rejected in &report.rejections {
                eprintln!(
                    "annals-server import: line {}: event {} rejected: {}",
                    rejected.line, rejected.id, rejected.reason
                );
            }
            if report.rejected > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("annals-server import: {e}");
            ExitCode::FAILURE
        }
    }
}
