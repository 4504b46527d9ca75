//! Helpers shared by the `server_*` tests: a backend per test (a temporary SQLite file or
//! a fresh PostgreSQL schema, removed afterwards), a real server on 127.0.0.1 port 0, and
//! a small HTTP client.
//!
//! PostgreSQL: `ANNALS_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use annals::event::EventId;
use annals::server::{serve, Auth, RunningServer, ServerConfig};
use serde_json::{json, Value};

/// Test tokens: `tok-a` owns store-a, `tok-b` owns store-b, `tok-ro` reads store-a only,
/// `tok-all` grants every store.
pub const TOKENS: &str = r#"{
    "tok-a":   { "read": ["store-a"], "write": ["store-a"] },
    "tok-b":   { "read": ["store-b"], "write": ["store-b"] },
    "tok-ro":  { "read": ["store-a"] },
    "tok-all": { "read": ["*"], "write": ["*"] }
}"#;

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).expect("randomness");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random event id in the canonical UUID form.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("randomness");
    EventId(b).to_string()
}

/// Where a test's server keeps its data; cleaned up on drop.
pub enum Backend {
    Sqlite { dir: PathBuf },
    Postgres { base: String, schema: String },
}

impl Backend {
    pub fn sqlite() -> Backend {
        let dir = std::env::temp_dir().join(format!("annals-server-test-{}", random_hex(8)));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Backend::Sqlite { dir }
    }

    /// A fresh schema on the test database (created by the server on start). `make test`
    /// points `ANNALS_TEST_PG_URL` at a running server, starting one if none answers.
    pub fn postgres() -> Backend {
        let base = std::env::var("ANNALS_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        Backend::Postgres {
            base,
            schema: format!("annals_test_{}", random_hex(6)),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }

    pub fn database_url(&self) -> String {
        match self {
            // Nested directory: the server creates it on first start.
            Backend::Sqlite { dir } => format!("sqlite://{}/data/annals.db", dir.display()),
            Backend::Postgres { base, schema } => {
                let sep = if base.contains('?') { '&' } else { '?' };
                format!("{base}{sep}schema={schema}")
            }
        }
    }

    pub fn config(&self) -> ServerConfig {
        ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            database: self.database_url(),
            auth: Auth::from_json(TOKENS).expect("tokens"),
            // The functional tests send bursts that a default server would answer with
            // 429; `server_hostile` tests the rate limit with its own settings.
            rate_limit: None,
            ..ServerConfig::default()
        }
    }

    pub async fn start(&self) -> TestServer {
        self.start_with(|_| {}).await
    }

    pub async fn start_with(&self, change: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let mut config = self.config();
        change(&mut config);
        let server = serve(config).await.expect("server starts");
        TestServer {
            url: server.url(),
            server: Some(server),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        match self {
            Backend::Sqlite { dir } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Backend::Postgres { base, schema } => {
                // Drop runs inside the test's runtime: use a thread with its own.
                let (base, schema) = (base.clone(), schema.clone());
                let done = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(async move {
                        let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
                            .await
                            .map_err(|e| e.to_string())?;
                        tokio::spawn(conn);
                        client
                            .batch_execute(&format!(
                                "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                            ))
                            .await
                            .map_err(|e| e.to_string())
                    })
                });
                match done.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => eprintln!("could not drop the test schema: {e}"),
                    Err(_) => eprintln!("could not drop the test schema"),
                }
            }
        }
    }
}

/// A server started for a test.
pub struct TestServer {
    pub url: String,
    pub server: Option<RunningServer>,
}

impl TestServer {
    pub fn api(&self, token: &str) -> Api {
        Api::new(&self.url, Some(token))
    }

    pub fn anonymous(&self) -> Api {
        Api::new(&self.url, None)
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

/// A minimal client of the sync API.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
}

/// An answer: status and JSON body (panics on a non-JSON body: every answer is JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// Asserts an error answer of the documented shape.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{:#}", self.body);
        let error = &self.body["error"];
        assert_eq!(error["code"], code, "{:#}", self.body);
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{:#}",
            self.body
        );
    }

    pub fn assert_ok(&self) -> &Value {
        assert_eq!(self.status, 200, "{:#}", self.body);
        &self.body
    }
}

impl Api {
    pub fn new(base: &str, token: Option<&str>) -> Api {
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            base: base.to_owned(),
            token: token.map(str::to_owned),
        }
    }

    pub fn with_token(&self, token: &str) -> Api {
        Api {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let res = self.authorize(req).send().await.expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
        Answer {
            status,
            body,
            headers,
        }
    }

    pub async fn push(&self, store: &str, body: &Value) -> Answer {
        self.push_raw(store, serde_json::to_vec(body).expect("json"))
            .await
    }

    pub async fn push_raw(&self, store: &str, body: impl Into<reqwest::Body>) -> Answer {
        let req = self
            .http
            .post(format!("{}/v1/stores/{store}/push", self.base))
            .header("content-type", "application/json")
            .body(body);
        self.send(req).await
    }

    /// Pushes `events` and asserts a 200.
    pub async fn push_ok(&self, store: &str, events: Vec<Value>) -> Value {
        self.push(store, &push_body(events))
            .await
            .assert_ok()
            .clone()
    }

    pub async fn pull(&self, store: &str, query: &str) -> Answer {
        let req = self
            .http
            .get(format!("{}/v1/stores/{store}/pull?{query}", self.base));
        self.send(req).await
    }

    /// Every event of `store` (following `more`).
    pub async fn pull_all(&self, store: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let answer = self.pull(store, &format!("after={after}&limit=1000")).await;
            let body = answer.assert_ok();
            let batch = body["events"].as_array().expect("events").clone();
            if let Some(last) = batch.last() {
                after = last["position"].as_u64().expect("position");
            }
            events.extend(batch);
            if body["more"] != true {
                return events;
            }
        }
    }

    pub async fn head(&self, store: &str) -> u64 {
        let answer = self.pull(store, "after=0&limit=1").await;
        answer.assert_ok()["head"].as_u64().expect("head")
    }

    pub async fn get(&self, path: &str) -> Answer {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }
}

/// An event to push, with a fresh id.
pub fn event(stream: &str, event_type: &str, data: Value) -> Value {
    json!({
        "id": new_id(),
        "stream": stream,
        "type": event_type,
        "data": data,
        "time": 1_700_000_000_000u64,
    })
}

/// The same with an expected version.
pub fn event_expecting(stream: &str, event_type: &str, expected: Value) -> Value {
    let mut e = event(stream, event_type, json!({}));
    e["expectedVersion"] = expected;
    e
}

pub fn push_body(events: Vec<Value>) -> Value {
    json!({ "clientId": "test-client", "events": events })
}

/// Runs each named `async fn(Backend)` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::server_common::Backend::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::server_common::Backend::postgres()).await;
                }
            )*
        }
    };
}
