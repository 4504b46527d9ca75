//! The settings of `annals-server`: command-line flags, `ANNALS_*` environment variables
//! and a TOML file (`--config`), in that order of precedence, over the defaults.
//!
//! Every flag has a variable (`--max-body-bytes` = `ANNALS_MAX_BODY_BYTES`) and a key of
//! the same name in the file (`max-body-bytes = 4194304`). A key the file does not know is
//! an error that names it, so that a misspelled setting never goes unnoticed.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::server::transfer::Command;
use crate::server::{Auth, Limits, MetricsEndpoint, RateLimit, ServerConfig};

/// The command line (and the environment variables clap reads for each flag).
#[derive(Debug, Parser)]
#[command(
    name = "annals-server",
    version,
    about = "The annals sync server",
    after_help = "Every option can also be set by the ANNALS_* variable shown beside it, or \
                  by the key of the same name in the --config file (max-body-bytes = 4194304). \
                  Precedence: flag, then variable, then file, then default."
)]
pub struct Cli {
    /// TOML file of settings, one key per flag (listen = "0.0.0.0:8080").
    #[arg(long, env = "ANNALS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Check the settings (and the tokens file), print them as TOML with secrets hidden,
    /// and exit without opening the database.
    #[arg(long)]
    pub check_config: bool,

    /// Address to listen on (port 0 picks a free port).
    #[arg(
        long,
        env = "ANNALS_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,

    /// `sqlite://PATH` (created on first start) or `postgres://USER@HOST:PORT/DB`
    /// (optionally `?schema=NAME&pool_size=N`).
    #[arg(
        long,
        env = "ANNALS_DATABASE",
        value_name = "URL",
        hide_env_values = true,
        default_value = "sqlite://data/annals.db"
    )]
    pub database: String,

    /// JSON file `{ "<token>": { "read": ["store"], "write": ["store"] } }` ("*" = any store).
    #[arg(long, env = "ANNALS_TOKENS", value_name = "FILE")]
    pub tokens: Option<PathBuf>,

    /// Directory of static files to serve (the built demo); unknown paths get index.html.
    #[arg(long, env = "ANNALS_WWW", value_name = "DIR")]
    pub www: Option<PathBuf>,

    /// A token that grants every store (for the demo).
    #[arg(
        long,
        env = "ANNALS_DEV_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub dev_token: Option<String>,

    /// Browser origin allowed to call the API (repeatable; "*" = any; the variable takes a
    /// comma-separated list).
    #[arg(
        long = "cors-origin",
        env = "ANNALS_CORS_ORIGIN",
        value_name = "ORIGIN",
        num_args = 1..,
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// Largest request body, in bytes.
    #[arg(long, env = "ANNALS_MAX_BODY_BYTES", value_name = "BYTES",
          default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,

    /// Most events in one push.
    #[arg(long, env = "ANNALS_MAX_EVENTS_PER_PUSH", value_name = "N",
          default_value_t = Limits::default().max_events_per_push)]
    pub max_events_per_push: usize,

    /// Largest event (stream + type + data + meta), in bytes.
    #[arg(long, env = "ANNALS_MAX_EVENT_BYTES", value_name = "BYTES",
          default_value_t = Limits::default().max_event_bytes)]
    pub max_event_bytes: usize,

    /// Deepest nesting of arrays and objects in an event's data or meta.
    #[arg(long, env = "ANNALS_MAX_JSON_DEPTH", value_name = "N",
          default_value_t = Limits::default().max_json_depth)]
    pub max_json_depth: usize,

    /// Requests per second each token may make on average (0 = no limit); past it the
    /// server answers 429 with Retry-After. A long poll counts once.
    #[arg(long, env = "ANNALS_RATE_LIMIT_PER_SECOND", value_name = "N",
          default_value_t = RateLimit::default().per_second)]
    pub rate_limit_per_second: f64,

    /// Requests a token may make at once after being idle.
    #[arg(long, env = "ANNALS_RATE_LIMIT_BURST", value_name = "N",
          default_value_t = RateLimit::default().burst)]
    pub rate_limit_burst: u32,

    /// Long polls one token may hold at once (429 past it).
    #[arg(long, env = "ANNALS_MAX_LONG_POLLS_PER_TOKEN", value_name = "N",
          default_value_t = Limits::default().max_long_polls_per_token)]
    pub max_long_polls_per_token: usize,

    /// Long polls the server holds at once, over every token (503 past it).
    #[arg(long, env = "ANNALS_MAX_LONG_POLLS", value_name = "N",
          default_value_t = Limits::default().max_long_polls)]
    pub max_long_polls: usize,

    /// Bytes of request bodies held in memory at once, over every request (503 past it).
    #[arg(long, env = "ANNALS_MAX_BUFFERED_BYTES", value_name = "BYTES",
          default_value_t = Limits::default().max_buffered_bytes)]
    pub max_buffered_bytes: usize,

    /// Where to serve GET /metrics (Prometheus text, no token): "on" (the API's address),
    /// "off", or an address of its own such as 127.0.0.1:9464 (then not on the API's).
    #[arg(
        long,
        env = "ANNALS_METRICS",
        value_name = "on|off|ADDR",
        default_value = "on"
    )]
    pub metrics: MetricsEndpoint,

    /// Seconds that a shutdown (SIGTERM, SIGINT) waits for requests in flight before it
    /// stops anyway; long polls are answered at once.
    #[arg(
        long,
        env = "ANNALS_SHUTDOWN_GRACE",
        value_name = "SECONDS",
        default_value_t = 8
    )]
    pub shutdown_grace: u64,

    /// Log lines on stderr: text for people, json (one object a line) for collectors.
    #[arg(long, env = "ANNALS_LOG_FORMAT", value_name = "FORMAT", value_enum,
          default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// The sync protocol versions to answer (comma-separated; default: this build's, 1).
    /// Hidden: a version other than 1 is served by v1's routes, which is only for testing
    /// clients against a server of another version.
    #[arg(long, value_name = "N,...", value_delimiter = ',', hide = true)]
    pub protocol_versions: Vec<u32>,

    /// `export` or `import`; without one, the server runs.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The `--config` file: every key optional, none unknown. Also what `--check-config`
/// prints (then with every key).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub www: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_token: Option<String>,
    /// One origin or a list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors_origin: Option<Origins>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_events_per_push: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_event_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_json_depth: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_burst: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_long_polls_per_token: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_long_polls: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_buffered_bytes: Option<usize>,
    /// "on", "off" or an address (checked when the settings are resolved).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// `cors-origin = "https://app.example"` or `cors-origin = ["https://a", "https://b"]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Origins {
    One(String),
    Many(Vec<String>),
}

impl Origins {
    fn into_vec(self) -> Vec<String> {
        match self {
            Origins::One(origin) => vec![origin],
            Origins::Many(origins) => origins,
        }
    }
}

impl FileSettings {
    /// Reads and checks a settings file.
    pub fn read(path: &Path) -> Result<FileSettings, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            format!(
                "the config file {} is not valid: {}",
                path.display(),
                e.to_string().trim_end()
            )
        })
    }
}

/// The settings once flags, variables, the file and the defaults are merged.
#[derive(Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database: String,
    pub tokens: Option<PathBuf>,
    pub www: Option<PathBuf>,
    pub dev_token: Option<String>,
    pub cors_origins: Vec<String>,
    pub limits: Limits,
    /// `None`: no rate limit (`rate-limit-per-second = 0`).
    pub rate_limit: Option<RateLimit>,
    pub rate_limit_per_second: f64,
    pub rate_limit_burst: u32,
    pub metrics: MetricsEndpoint,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    /// `--check-config`: print and exit.
    pub check_only: bool,
    /// `--protocol-versions` (empty: the default).
    pub protocol_versions: Vec<u32>,
    /// `annals-server export ...` or `import ...`.
    pub command: Option<Command>,
}

/// What went wrong while reading the settings.
#[derive(Debug)]
pub enum SettingsError {
    /// A bad command line or variable, `--help` or `--version`: clap prints it and exits.
    Cli(clap::Error),
    /// A bad file or an inconsistent value.
    Invalid(String),
}

impl std::fmt::Display for SettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SettingsError::Cli(e) => write!(f, "{e}"),
            SettingsError::Invalid(message) => f.write_str(message),
        }
    }
}

impl Settings {
    /// Reads the settings from these arguments (the first is the program's name), the
    /// process's `ANNALS_*` variables and the `--config` file.
    pub fn from_args<I, T>(args: I) -> Result<Settings, SettingsError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = Cli::command()
            .try_get_matches_from(args)
            .map_err(SettingsError::Cli)?;
        let cli = Cli::from_arg_matches(&matches).map_err(SettingsError::Cli)?;
        let file = match &cli.config {
            Some(path) => FileSettings::read(path).map_err(SettingsError::Invalid)?,
            None => FileSettings::default(),
        };
        Settings::merge(cli, &matches, file).map_err(SettingsError::Invalid)
    }

    fn merge(cli: Cli, matches: &ArgMatches, file: FileSettings) -> Result<Settings, String> {
        // A flag or a variable wins over the file; the file wins over clap's defaults.
        let given = |id: &str| {
            matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        fn pick<T>(given: bool, cli: T, file: Option<T>) -> T {
            match file {
                Some(value) if !given => value,
                _ => cli,
            }
        }
        let metrics = match file.metrics {
            Some(text) if !given("metrics") => text
                .parse()
                .map_err(|e| format!("metrics in the config file: {e}"))?,
            _ => cli.metrics,
        };
        let limits = Limits {
            max_body_bytes: pick(
                given("max_body_bytes"),
                cli.max_body_bytes,
                file.max_body_bytes,
            ),
            max_events_per_push: pick(
                given("max_events_per_push"),
                cli.max_events_per_push,
                file.max_events_per_push,
            ),
            max_event_bytes: pick(
                given("max_event_bytes"),
                cli.max_event_bytes,
                file.max_event_bytes,
            ),
            max_json_depth: pick(
                given("max_json_depth"),
                cli.max_json_depth,
                file.max_json_depth,
            ),
            max_long_polls_per_token: pick(
                given("max_long_polls_per_token"),
                cli.max_long_polls_per_token,
                file.max_long_polls_per_token,
            ),
            max_long_polls: pick(
                given("max_long_polls"),
                cli.max_long_polls,
                file.max_long_polls,
            ),
            max_buffered_bytes: pick(
                given("max_buffered_bytes"),
                cli.max_buffered_bytes,
                file.max_buffered_bytes,
            ),
            ..Limits::default()
        };
        limits
            .check()
            .map_err(|e| format!("{} (see --max-*)", e.replace('_', "-")))?;
        let rate_limit_per_second = pick(
            given("rate_limit_per_second"),
            cli.rate_limit_per_second,
            file.rate_limit_per_second,
        );
        let rate_limit_burst = pick(
            given("rate_limit_burst"),
            cli.rate_limit_burst,
            file.rate_limit_burst,
        );
        let rate_limit = if rate_limit_per_second == 0.0 {
            None
        } else {
            let rate = RateLimit {
                per_second: rate_limit_per_second,
                burst: rate_limit_burst,
            };
            rate.check()
                .map_err(|e| format!("--rate-limit-per-second/--rate-limit-burst: {e}"))?;
            Some(rate)
        };
        Ok(Settings {
            listen: pick(given("listen"), cli.listen, file.listen),
            database: pick(given("database"), cli.database, file.database),
            tokens: pick(given("tokens"), cli.tokens, file.tokens.map(Some)),
            www: pick(given("www"), cli.www, file.www.map(Some)),
            dev_token: pick(given("dev_token"), cli.dev_token, file.dev_token.map(Some))
                .filter(|t| !t.is_empty()),
            cors_origins: pick(
                given("cors_origins"),
                cli.cors_origins,
                file.cors_origin.map(Origins::into_vec),
            ),
            limits,
            rate_limit,
            rate_limit_per_second,
            rate_limit_burst,
            metrics,
            shutdown_grace: Duration::from_secs(pick(
                given("shutdown_grace"),
                cli.shutdown_grace,
                file.shutdown_grace,
            )),
            log_format: pick(given("log_format"), cli.log_format, file.log_format),
            check_only: cli.check_config,
            protocol_versions: cli.protocol_versions,
            command: cli.command,
        })
    }

    /// The server's configuration: reads the tokens file.
    pub fn server_config(&self) -> Result<ServerConfig, String> {
        let mut auth = match &self.tokens {
            Some(path) => Auth::from_file(path).map_err(|e| e.to_string())?,
            None => Auth::new(),
        };
        if let Some(token) = &self.dev_token {
            auth = auth
                .with_dev_token(token.clone())
                .map_err(|e| format!("--dev-token: {e}"))?;
        }
        let mut config = ServerConfig {
            listen: self.listen,
            database: self.database.clone(),
            auth,
            www: self.www.clone(),
            cors_origins: self.cors_origins.clone(),
            limits: self.limits.clone(),
            rate_limit: self.rate_limit,
            metrics: self.metrics,
            // Authorities are Rust code: apps that want them embed the server as a library
            // (`annals::server::serve` with `ServerConfig::authorities`).
            ..ServerConfig::default()
        };
        if !self.protocol_versions.is_empty() {
            config.protocol_versions = self.protocol_versions.clone();
        }
        Ok(config)
    }

    /// The effective settings as a config file, with the dev token and any database
    /// password replaced by "(hidden)".
    pub fn to_toml(&self) -> Result<String, String> {
        let file = FileSettings {
            listen: Some(self.listen),
            database: Some(hide_password(&self.database)),
            tokens: self.tokens.clone(),
            www: self.www.clone(),
            dev_token: self.dev_token.as_ref().map(|_| "(hidden)".to_owned()),
            cors_origin: Some(Origins::Many(self.cors_origins.clone())),
            max_body_bytes: Some(self.limits.max_body_bytes),
            max_events_per_push: Some(self.limits.max_events_per_push),
            max_event_bytes: Some(self.limits.max_event_bytes),
            max_json_depth: Some(self.limits.max_json_depth),
            rate_limit_per_second: Some(self.rate_limit_per_second),
            rate_limit_burst: Some(self.rate_limit_burst),
            max_long_polls_per_token: Some(self.limits.max_long_polls_per_token),
            max_long_polls: Some(self.limits.max_long_polls),
            max_buffered_bytes: Some(self.limits.max_buffered_bytes),
            metrics: Some(self.metrics.to_string()),
            shutdown_grace: Some(self.shutdown_grace.as_secs()),
            log_format: Some(self.log_format),
        };
        toml::to_string(&file).map_err(|e| format!("cannot print the settings: {e}"))
    }
}

/// `postgres://user:secret@host/db` -> `postgres://user:(hidden)@host/db`.
fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!(
                "{scheme}://{user}:(hidden)@{host}{}",
                &rest[authority_end..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_password_is_hidden_and_nothing_else_changes() {
        assert_eq!(
            hide_password("postgres://annals:s3cret@db:5432/annals?schema=a"),
            "postgres://annals:(hidden)@db:5432/annals?schema=a"
        );
        assert_eq!(
            hide_password("postgres://annals@db/annals"),
            "postgres://annals@db/annals"
        );
        assert_eq!(
            hide_password("sqlite://data/annals.db"),
            "sqlite://data/annals.db"
        );
    }

    #[test]
    fn the_file_accepts_one_origin_or_a_list() {
        let one: FileSettings = toml::from_str(r#"cors-origin = "https://a.example""#).unwrap();
        let many: FileSettings =
            toml::from_str(r#"cors-origin = ["https://a.example", "https://b.example"]"#).unwrap();
        assert_eq!(
            one.cors_origin.map(Origins::into_vec),
            Some(vec!["https://a.example".to_owned()])
        );
        assert_eq!(
            many.cors_origin.map(Origins::into_vec).map(|v| v.len()),
            Some(2)
        );
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let error = toml::from_str::<FileSettings>("listen = \"127.0.0.1:1\"\nmax-body = 5\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("max-body"), "{error}");
    }
}
