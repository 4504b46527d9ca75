//! Operating `annals-server`: settings from flags, `ANNALS_*` variables and a TOML file;
//! `--version`; `/metrics`; JSON logs; a graceful shutdown on SIGTERM.
//!
//! `cargo test --features server,http-client --test server_ops`

#![cfg(all(feature = "server", not(target_arch = "wasm32")))]
mod server_common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use annals::server::MetricsEndpoint;
use serde_json::{json, Value};
use server_common::{event, event_expecting, push_body, random_hex, Backend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BINARY: &str = env!("CARGO_BIN_EXE_annals-server");

/// A scratch directory, removed afterwards.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("annals-ops-test-{}", random_hex(8)));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    fn database(&self) -> String {
        format!("sqlite://{}/annals.db", self.0.display())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary with a clean environment: only the variables a test sets reach it.
fn annals_server() -> Command {
    let mut command = Command::new(BINARY);
    command.env_clear().env("RUST_LOG", "info");
    command
}

/// Runs the binary to completion.
fn run(command: &mut Command) -> (i32, String, String) {
    let out = command.output().expect("run annals-server");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `--check-config` of these settings, as TOML.
fn effective_settings(command: &mut Command) -> toml::Table {
    let (code, stdout, stderr) = run(command.arg("--check-config"));
    assert_eq!(code, 0, "--check-config failed: {stderr}");
    stdout
        .parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("--check-config printed no TOML ({e}): {stdout}"))
}

/// A running `annals-server` process, killed when dropped if still running.
struct Process {
    child: std::process::Child,
    url: String,
    /// Every line it wrote on stderr so far.
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Process {
    fn start(command: &mut Command) -> Process {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn annals-server");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&stderr);
        let pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().expect("stderr lines").push(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("first line");
        let url = line
            .trim()
            .strip_prefix("annals-server listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {line:?}; stderr: {:?}",
                    stderr.lock().map(|l| l.join("\n"))
                )
            })
            .to_owned();
        // Keep reading stdout so that the process never blocks on a full pipe.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        });
        Process { child, url, stderr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, at most `bound`.
    async fn exit_within(&mut self, bound: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                started.elapsed() < bound,
                "annals-server still running {bound:?} after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr lines").clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The samples of a Prometheus text exposition: `name{labels}` -> value.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample: {line:?}"));
            let value = value
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
            (series.to_owned(), value)
        })
        .collect()
}

async fn scrape(url: &str) -> HashMap<String, f64> {
    let answer = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(answer.status(), 200);
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse_metrics(&answer.text().await.expect("metrics text"))
}

fn sample(metrics: &HashMap<String, f64>, series: &str) -> f64 {
    *metrics
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {metrics:#?}"))
}

// --- the command line ---------------------------------------------------------------

#[test]
fn version_prints_the_name_and_the_crate_version() {
    let (code, stdout, _) = run(annals_server().arg("--version"));
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!("annals-server {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_shows_options_as_optional_with_their_variables() {
    let (code, stdout, _) = run(annals_server().arg("--help"));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("Usage: annals-server [OPTIONS]"),
        "{stdout}"
    );
    for variable in [
        "ANNALS_CONFIG",
        "ANNALS_LISTEN",
        "ANNALS_DATABASE",
        "ANNALS_TOKENS",
        "ANNALS_WWW",
        "ANNALS_DEV_TOKEN",
        "ANNALS_CORS_ORIGIN",
        "ANNALS_MAX_BODY_BYTES",
        "ANNALS_RATE_LIMIT_PER_SECOND",
        "ANNALS_METRICS",
        "ANNALS_SHUTDOWN_GRACE",
        "ANNALS_LOG_FORMAT",
    ] {
        assert!(stdout.contains(&format!("[env: {variable}")), "{variable}");
    }
}

#[test]
fn a_flag_beats_a_variable_which_beats_the_file_which_beats_the_default() {
    let scratch = Scratch::new();
    let file = scratch.write(
        "annals.toml",
        r#"
            listen = "127.0.0.1:7001"
            database = "postgres://annals:s3cret@db.internal/annals"
            dev-token = "file-token"
            cors-origin = ["https://a.example", "https://b.example"]
            max-body-bytes = 2000000
            max-events-per-push = 10
            max-event-bytes = 100000
            metrics = "127.0.0.1:9464"
            log-format = "json"
        "#,
    );
    let settings = effective_settings(
        annals_server()
            .arg("--config")
            .arg(&file)
            .env("ANNALS_MAX_EVENTS_PER_PUSH", "20")
            .env("ANNALS_MAX_EVENT_BYTES", "200000")
            .args(["--max-event-bytes", "300000"]),
    );
    // Only in the file.
    assert_eq!(settings["listen"].as_str(), Some("127.0.0.1:7001"));
    assert_eq!(settings["max-body-bytes"].as_integer(), Some(2_000_000));
    assert_eq!(settings["metrics"].as_str(), Some("127.0.0.1:9464"));
    assert_eq!(settings["log-format"].as_str(), Some("json"));
    let origins: Vec<_> = settings["cors-origin"]
        .as_array()
        .expect("cors-origin")
        .iter()
        .filter_map(|o| o.as_str())
        .collect();
    assert_eq!(origins, ["https://a.example", "https://b.example"]);
    // The variable beats the file.
    assert_eq!(settings["max-events-per-push"].as_integer(), Some(20));
    // The flag beats both.
    assert_eq!(settings["max-event-bytes"].as_integer(), Some(300_000));
    // Set nowhere: the default.
    assert_eq!(settings["max-json-depth"].as_integer(), Some(64));
    assert_eq!(settings["shutdown-grace"].as_integer(), Some(8));
    // Secrets are not printed.
    assert_eq!(settings["dev-token"].as_str(), Some("(hidden)"));
    assert_eq!(
        settings["database"].as_str(),
        Some("postgres://annals:(hidden)@db.internal/annals")
    );
}

#[test]
fn every_setting_has_a_variable() {
    let scratch = Scratch::new();
    let tokens = scratch.write("tokens.json", r#"{"reader": {"read": ["todos"]}}"#);
    let settings = effective_settings(
        annals_server()
            .env("ANNALS_LISTEN", "0.0.0.0:9000")
            .env("ANNALS_DATABASE", "sqlite:///var/lib/annals/annals.db")
            .env("ANNALS_TOKENS", &tokens)
            .env("ANNALS_WWW", "/srv/www")
            .env("ANNALS_DEV_TOKEN", "t")
            .env("ANNALS_CORS_ORIGIN", "https://a.example,https://b.example")
            .env("ANNALS_MAX_BODY_BYTES", "1000000")
            .env("ANNALS_MAX_EVENTS_PER_PUSH", "5")
            .env("ANNALS_MAX_EVENT_BYTES", "1000")
            .env("ANNALS_MAX_JSON_DEPTH", "8")
            .env("ANNALS_RATE_LIMIT_PER_SECOND", "0")
            .env("ANNALS_RATE_LIMIT_BURST", "7")
            .env("ANNALS_MAX_LONG_POLLS_PER_TOKEN", "3")
            .env("ANNALS_MAX_LONG_POLLS", "30")
            .env("ANNALS_MAX_BUFFERED_BYTES", "9000000")
            .env("ANNALS_METRICS", "off")
            .env("ANNALS_SHUTDOWN_GRACE", "20")
            .env("ANNALS_LOG_FORMAT", "json"),
    );
    let expected = toml::toml! {
        listen = "0.0.0.0:9000"
        database = "sqlite:///var/lib/annals/annals.db"
        www = "/srv/www"
        dev-token = "(hidden)"
        cors-origin = ["https://a.example", "https://b.example"]
        max-body-bytes = 1000000
        max-events-per-push = 5
        max-event-bytes = 1000
        max-json-depth = 8
        rate-limit-per-second = 0.0
        rate-limit-burst = 7
        max-long-polls-per-token = 3
        max-long-polls = 30
        max-buffered-bytes = 9000000
        metrics = "off"
        shutdown-grace = 20
        log-format = "json"
    };
    for (key, value) in &expected {
        assert_eq!(settings.get(key), Some(value), "{key}");
    }
    assert_eq!(
        settings["tokens"].as_str().map(Path::new),
        Some(tokens.as_path())
    );
}

#[test]
fn an_unknown_key_in_the_file_is_an_error_that_names_it() {
    let scratch = Scratch::new();
    let file = scratch.write("annals.toml", "listen = \"127.0.0.1:0\"\nmax-body = 10\n");
    let (code, stdout, stderr) = run(annals_server().arg("--config").arg(&file));
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("unknown field `max-body`"), "{stderr}");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    // The message lists the keys there are.
    assert!(stderr.contains("max-body-bytes"), "{stderr}");
}

#[test]
fn a_bad_value_in_the_file_names_the_key_and_a_missing_file_names_the_path() {
    let scratch = Scratch::new();
    let file = scratch.write("annals.toml", "max-events-per-push = \"many\"\n");
    let (code, _, stderr) = run(annals_server().arg("--config").arg(&file));
    assert_eq!(code, 2);
    assert!(stderr.contains("max-events-per-push"), "{stderr}");

    let file = scratch.write("annals.toml", "metrics = \"sometimes\"\n");
    let (code, _, stderr) = run(annals_server().arg("--config").arg(&file));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("metrics") && stderr.contains("sometimes"),
        "{stderr}"
    );

    let missing = scratch.0.join("nowhere.toml");
    let (code, _, stderr) = run(annals_server().env("ANNALS_CONFIG", &missing));
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read the config file"), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_configured_only_by_variables_serves_by_them() {
    let scratch = Scratch::new();
    let server = Process::start(
        annals_server()
            .env("ANNALS_LISTEN", "127.0.0.1:0")
            .env("ANNALS_DATABASE", scratch.database())
            .env("ANNALS_DEV_TOKEN", "dev")
            .env("ANNALS_MAX_EVENTS_PER_PUSH", "2")
            .env("ANNALS_CORS_ORIGIN", "http://a.example,http://b.example"),
    );
    let api = server_common::Api::new(&server.url, Some("dev"));
    api.push_ok("todos", vec![event("t", "Added", json!(1))])
        .await;
    api.push(
        "todos",
        &push_body((0..3).map(|_| event("t", "Added", json!(0))).collect()),
    )
    .await
    .assert_error(413, "TOO_LARGE");
    let pulled = api
        .http
        .get(format!("{}/v1/stores/todos/pull", server.url))
        .header("origin", "http://b.example")
        .bearer_auth("dev")
        .send()
        .await
        .expect("pull");
    assert_eq!(
        pulled
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("http://b.example")
    );
}

// --- metrics ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_pushes_pulls_events_conflicts_duplicates_and_statuses() {
    let backend = Backend::sqlite();
    let server = backend.start().await;
    let api = server.api("tok-a");

    let first = event("todo-1", "TodoAdded", json!({ "title": "milk" }));
    api.push_ok(
        "store-a",
        vec![first.clone(), event("todo-2", "TodoAdded", json!({}))],
    )
    .await;
    // The same event again: a duplicate.
    api.push_ok("store-a", vec![first]).await;
    // todo-1 exists already: a version conflict.
    let conflict = api
        .push_ok(
            "store-a",
            vec![event_expecting("todo-1", "TodoAdded", json!("no_stream"))],
        )
        .await;
    assert_eq!(conflict["results"][0]["status"], "rejected");
    assert_eq!(api.pull_all("store-a").await.len(), 2);
    server
        .anonymous()
        .pull("store-a", "after=0")
        .await
        .assert_error(401, "UNAUTHORIZED");

    let metrics = scrape(&server.url).await;
    assert_eq!(sample(&metrics, "annals_pushes_total"), 3.0);
    assert_eq!(
        sample(&metrics, r#"annals_pushed_events_total{result="ok"}"#),
        2.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"annals_pushed_events_total{result="duplicate"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&metrics, r#"annals_pushed_events_total{result="rejected"}"#),
        1.0
    );
    // pull_all: one answered pull, with both events.
    assert_eq!(sample(&metrics, "annals_pulls_total"), 1.0);
    assert_eq!(sample(&metrics, "annals_pulled_events_total"), 2.0);
    assert_eq!(
        sample(
            &metrics,
            r#"annals_http_requests_total{route="push",status="200"}"#
        ),
        3.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"annals_http_requests_total{route="pull",status="401"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"annals_http_request_duration_seconds_count{route="push"}"#
        ),
        3.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"annals_http_request_duration_seconds_bucket{route="push",le="+Inf"}"#
        ),
        3.0
    );
    assert_eq!(sample(&metrics, "annals_long_polls_held"), 0.0);
    // The scrape itself is the one request in flight.
    assert_eq!(sample(&metrics, "annals_http_requests_in_flight"), 1.0);
    assert_eq!(
        sample(
            &metrics,
            &format!(
                r#"annals_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    // No label names a store.
    assert!(
        !metrics.keys().any(|series| series.contains("store-a")),
        "{metrics:#?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_long_poll_shows_in_the_gauge_and_under_its_own_route() {
    let backend = Backend::sqlite();
    let server = backend.start().await;
    let api = server.api("tok-a");
    let waiting = {
        let api = api.clone();
        tokio::spawn(async move { api.pull("store-a", "after=0&wait=20").await })
    };
    let started = Instant::now();
    while sample(&scrape(&server.url).await, "annals_long_polls_held") < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no long poll held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.push_ok("store-a", vec![event("s", "Happened", json!(1))])
        .await;
    let answer = waiting.await.expect("long poll");
    assert_eq!(
        answer.assert_ok()["events"].as_array().map(Vec::len),
        Some(1)
    );

    let metrics = scrape(&server.url).await;
    assert_eq!(sample(&metrics, "annals_long_polls_held"), 0.0);
    assert_eq!(
        sample(
            &metrics,
            r#"annals_http_requests_total{route="long_poll",status="200"}"#
        ),
        1.0
    );
    assert!(!metrics.contains_key(r#"annals_http_requests_total{route="pull",status="200"}"#));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_move_to_their_own_address_or_be_turned_off() {
    let backend = Backend::sqlite();
    let server = backend
        .start_with(|c| c.metrics = MetricsEndpoint::Listen("127.0.0.1:0".parse().expect("addr")))
        .await;
    let running = server.server.as_ref().expect("server");
    let metrics_url = format!(
        "http://{}",
        running.metrics_addr().expect("metrics address")
    );
    server
        .api("tok-a")
        .push_ok("store-a", vec![event("s", "Happened", json!(1))])
        .await;
    assert_eq!(
        sample(&scrape(&metrics_url).await, "annals_pushes_total"),
        1.0
    );
    server
        .anonymous()
        .get("/metrics")
        .await
        .assert_error(404, "NOT_FOUND");
    server.stop().await;

    let backend = Backend::sqlite();
    let server = backend
        .start_with(|c| c.metrics = MetricsEndpoint::Off)
        .await;
    server
        .anonymous()
        .get("/metrics")
        .await
        .assert_error(404, "NOT_FOUND");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_errors_are_counted_by_operation() {
    // PostgreSQL: the schema is dropped under the running server.
    let backend = Backend::postgres();
    let server = backend.start().await;
    let api = server.api("tok-a");
    api.push_ok("store-a", vec![event("s", "Happened", json!(1))])
        .await;
    let Backend::Postgres { base, schema } = &backend else {
        unreachable!()
    };
    let (client, connection) = tokio_postgres::connect(base, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .expect("drop the schema");

    let failed = api.pull("store-a", "after=0").await;
    assert!(failed.status >= 500, "{failed:?}");
    let metrics = scrape(&server.url).await;
    assert_eq!(
        sample(
            &metrics,
            r#"annals_database_errors_total{operation="pull"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            &format!(
                r#"annals_http_requests_total{{route="pull",status="{}"}}"#,
                failed.status
            )
        ),
        1.0
    );
    server.stop().await;
}

// --- logs ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line() {
    let scratch = Scratch::new();
    let mut server = Process::start(
        annals_server()
            .args(["--listen", "127.0.0.1:0", "--dev-token", "dev"])
            .args(["--database", &scratch.database()])
            .args(["--log-format", "json"]),
    );
    let api = server_common::Api::new(&server.url, Some("dev"));
    api.push_ok("todos", vec![event("t", "Added", json!(1))])
        .await;
    server.terminate();
    assert!(server.exit_within(Duration::from_secs(10)).await.success());
    // The reader thread may still be draining the pipe.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let lines = server.stderr_lines();
    assert!(!lines.is_empty());
    let records: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    for record in &records {
        assert!(record["timestamp"].is_string(), "{record}");
        assert!(record["level"].is_string(), "{record}");
        assert!(record["message"].is_string(), "{record}");
    }
    let push = records
        .iter()
        .find(|r| r["message"] == "push")
        .expect("a push line");
    assert_eq!(push["store"], "todos");
    assert_eq!(push["events"], 1);
    let response = records
        .iter()
        .find(|r| r["message"] == "response" && r["span"]["path"] == "/v1/stores/todos/push")
        .expect("the push's response line, with its request span");
    assert_eq!(response["status"], 200);
    assert_eq!(response["span"]["method"], "POST");
}

// --- graceful shutdown -------------------------------------------------------------------

/// An HTTP/1.1 push whose body is sent in two halves, so that it is in flight in between.
struct SlowPush {
    stream: tokio::net::TcpStream,
    rest: Vec<u8>,
}

impl SlowPush {
    async fn start(url: &str, token: &str, store: &str, body: &Value) -> SlowPush {
        let addr = url.strip_prefix("http://").expect("http url");
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let body = serde_json::to_vec(body).expect("json");
        let head = format!(
            "POST /v1/stores/{store}/push HTTP/1.1\r\nHost: {addr}\r\n\
             Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let half = body.len() / 2;
        stream.write_all(head.as_bytes()).await.expect("write head");
        stream.write_all(&body[..half]).await.expect("write half");
        stream.flush().await.expect("flush");
        SlowPush {
            stream,
            rest: body[half..].to_vec(),
        }
    }

    /// Sends the rest of the body; the status and JSON body of the answer.
    async fn finish(mut self) -> (u16, Value) {
        self.stream
            .write_all(&self.rest)
            .await
            .expect("write the rest");
        let mut answer = Vec::new();
        self.stream
            .read_to_end(&mut answer)
            .await
            .expect("read the answer");
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
        (status, body)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_long_polls_finishes_a_push_in_flight_and_exits_0() {
    let scratch = Scratch::new();
    // Configured by a file, to show that a real run reads it.
    let file = scratch.write(
        "annals.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ndatabase = \"{}\"\ndev-token = \"dev\"\nshutdown-grace = 10\n",
            scratch.database()
        ),
    );
    let mut server = Process::start(annals_server().arg("--config").arg(&file));
    let api = server_common::Api::new(&server.url, Some("dev"));
    let long_poll = {
        let api = api.clone();
        tokio::spawn(async move { api.pull("todos", "after=0&wait=25").await })
    };
    let pushed = event("todo-1", "TodoAdded", json!({ "title": "milk" }));
    let push = SlowPush::start(
        &server.url,
        "dev",
        "todos",
        &push_body(vec![pushed.clone()]),
    )
    .await;
    // Both are being answered (the scrape is the third request in flight).
    let started = Instant::now();
    loop {
        let metrics = scrape(&server.url).await;
        if sample(&metrics, "annals_long_polls_held") == 1.0
            && sample(&metrics, "annals_http_requests_in_flight") == 3.0
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{metrics:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    server.terminate();
    let signalled = Instant::now();
    // The long poll is answered at once, with what there is (nothing yet).
    let answer = tokio::time::timeout(Duration::from_secs(3), long_poll)
        .await
        .expect("the long poll is answered promptly after SIGTERM")
        .expect("join");
    assert_eq!(answer.assert_ok()["events"], json!([]));
    // New connections are refused.
    let addr = server.url.trim_start_matches("http://").to_owned();
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        assert!(
            signalled.elapsed() < Duration::from_secs(3),
            "still accepting connections after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The push in flight is still answered, and committed.
    assert_eq!(server.child.try_wait().expect("try_wait"), None);
    let (status, body) = push.finish().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["status"], "ok", "{body}");
    assert_eq!(body["head"], 1);
    let status = server.exit_within(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        server
            .stderr_lines()
            .iter()
            .any(|line| line.contains("shutting down")),
        "{:?}",
        server.stderr_lines()
    );

    // The event is in the database.
    let mut again = Process::start(annals_server().arg("--config").arg(&file));
    let api = server_common::Api::new(&again.url, Some("dev"));
    let events = api.pull_all("todos").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["id"], pushed["id"]);
    again.terminate();
    assert!(again.exit_within(Duration::from_secs(10)).await.success());
}

// --- the documentation --------------------------------------------------------------------

fn repository_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[test]
fn the_example_config_files_are_valid() {
    for example in [
        "docs/deploy/annals.toml",
        "docs/deploy/annals-postgres.toml",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(example);
        let (code, _, stderr) = run(annals_server()
            .arg("--config")
            .arg(&path)
            .arg("--check-config"));
        assert_eq!(code, 0, "{example}: {stderr}");
    }
}

#[test]
fn the_operations_guide_and_the_deploy_files_name_only_real_settings() {
    let (_, help, _) = run(annals_server().arg("--help"));
    let flags: Vec<&str> = help
        .split_whitespace()
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .filter(|word| !matches!(*word, "--help" | "--version"))
        .collect();
    let guide = repository_file("docs/operations.md");
    for flag in &flags {
        assert!(
            guide.contains(&format!("`{flag}")),
            "docs/operations.md lacks {flag}"
        );
    }
    for file in [
        "docs/operations.md",
        "docs/deploy/Dockerfile",
        "docs/deploy/compose.yaml",
        "docs/deploy/annals-server.service",
        "README.md",
    ] {
        let text = repository_file(file);
        // Every ANNALS_NAME but the test suite's own and the wildcard `ANNALS_*`.
        let names = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("ANNALS_") && word.len() > "ANNALS_".len())
            .filter(|word| !word.starts_with("ANNALS_TEST") && *word != "ANNALS_SERVER_BIN");
        for name in names {
            assert!(
                help.contains(&format!("[env: {name}")),
                "{file} names {name}, which annals-server does not read"
            );
        }
    }
}
