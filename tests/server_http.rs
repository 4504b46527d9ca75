//! The HTTP surface around the API: static files for the demo, CORS, and the
//! `annals-server` binary itself.
#![cfg(feature = "server")]

#[macro_use]
mod server_common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use server_common::{event, Backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_with_an_index_fallback_beside_the_api() {
    let backend = Backend::sqlite();
    let www = std::env::temp_dir().join(format!("annals-www-{}", server_common::random_hex(6)));
    std::fs::create_dir_all(www.join("assets")).expect("www");
    std::fs::write(www.join("index.html"), "<!doctype html><title>demo</title>").expect("index");
    std::fs::write(www.join("assets/app.js"), "console.log(1)").expect("js");
    let dir = www.clone();
    let server = backend.start_with(move |c| c.www = Some(dir)).await;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{}{path}", server.url)).send();

    let index = get("/").await.expect("index");
    assert_eq!(index.status(), 200);
    assert!(index
        .text()
        .await
        .expect("text")
        .contains("<title>demo</title>"));
    let js = get("/assets/app.js").await.expect("js");
    assert_eq!(js.status(), 200);
    assert!(js
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("javascript")));
    // Client-side routes get index.html.
    let route = get("/todos/42").await.expect("route");
    assert_eq!(route.status(), 200);
    assert!(route.text().await.expect("text").contains("demo"));
    // The API and health stay JSON.
    let health = get("/health").await.expect("health");
    assert_eq!(health.status(), 200);
    let unknown = get("/v1/unknown").await.expect("unknown");
    assert_eq!(unknown.status(), 404);
    let body: serde_json::Value = unknown.json().await.expect("json");
    assert_eq!(body["error"]["code"], "NOT_FOUND");
    server
        .api("tok-a")
        .push_ok("store-a", vec![event("s", "E", json!(1))])
        .await;

    server.stop().await;
    let _ = std::fs::remove_dir_all(www);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_configured_origins_only() {
    let backend = Backend::sqlite();
    let server = backend
        .start_with(|c| c.cors_origins = vec!["http://app.example".into()])
        .await;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/stores/store-a/push", server.url),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, x-app-tenant",
        )
        .send()
    };
    let allowed = preflight("http://app.example").await.expect("preflight");
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(
        headers
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("http://app.example")
    );
    let allowed_headers = headers
        .get("access-control-allow-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    // An app's own header (`sync.headers`) is allowed too: the token decides access.
    assert!(
        allowed_headers.contains("x-app-tenant"),
        "{allowed_headers}"
    );

    let refused = preflight("http://evil.example").await.expect("preflight");
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    // A real request from the allowed origin carries the header too.
    let pulled = http
        .get(format!("{}/v1/stores/store-a/pull", server.url))
        .header("origin", "http://app.example")
        .bearer_auth("tok-a")
        .send()
        .await
        .expect("pull");
    assert_eq!(pulled.status(), 200);
    assert!(pulled
        .headers()
        .get("access-control-allow-origin")
        .is_some());
    server.stop().await;
}

/// Kills the child when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_with_a_dev_token_and_a_tokens_file() {
    let backend = Backend::sqlite();
    let Backend::Sqlite { dir } = &backend else {
        unreachable!()
    };
    let tokens = dir.join("tokens.json");
    std::fs::write(&tokens, r#"{"reader": {"read": ["todos"]}}"#).expect("tokens");
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_annals-server"))
            .args(["--listen", "127.0.0.1:0", "--database"])
            .arg(backend.database_url())
            .arg("--tokens")
            .arg(&tokens)
            .args(["--max-events-per-push", "3"])
            .env("ANNALS_DEV_TOKEN", "dev-secret")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn annals-server"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .expect("join")
    .expect("first line");
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();

    let dev = server_common::Api::new(&url, Some("dev-secret"));
    dev.get("/health").await.assert_ok();
    let pushed = dev
        .push_ok("todos", vec![event("t", "Added", json!(1))])
        .await;
    assert_eq!(pushed["head"], 1);
    // --max-events-per-push is honoured.
    dev.push(
        "todos",
        &server_common::push_body((0..4).map(|_| event("t", "A", json!(0))).collect()),
    )
    .await
    .assert_error(413, "TOO_LARGE");
    // The tokens file's reader may read, not write.
    let reader = dev.with_token("reader");
    assert_eq!(reader.pull_all("todos").await.len(), 1);
    reader
        .push("todos", &server_common::push_body(vec![]))
        .await
        .assert_error(403, "FORBIDDEN");

    // SIGTERM (or kill) ends it; the data stays.
    drop(child);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let server = backend.start().await;
    assert_eq!(server.api("tok-all").pull_all("todos").await.len(), 1);
    server.stop().await;
}
