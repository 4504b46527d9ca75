//! Moving a server store's events in and out (`annals-server export` / `import`), on SQLite
//! and on PostgreSQL, and clients of another sync protocol version (`/versions`, the
//! `Annals-Protocol` header, `UPGRADE_REQUIRED` with nothing pushed).
//!
//! `cargo test --features server,http-client --test server_transfer`
//! (PostgreSQL: `ANNALS_TEST_PG_URL=$(scripts/ensure-postgres.sh $$)`)

#![cfg(all(
    feature = "server",
    feature = "http-client",
    not(target_arch = "wasm32")
))]

#[macro_use]
mod server_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use annals::sync::client::{SyncClient, SyncError, SyncOptions, TransportError};
use annals::sync::http::HttpTransport;
use annals::{Engine, EngineOptions, MemoryStorage, NewEvent};
use serde_json::{json, Value};
use server_common::{event, random_hex, Backend};

const BINARY: &str = env!("CARGO_BIN_EXE_annals-server");

/// A scratch directory, removed afterwards.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("annals-transfer-test-{}", random_hex(8)));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `annals-server <args>` to completion: exit code, stdout, stderr.
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BINARY)
        .env_clear()
        .args(args)
        .output()
        .expect("run annals-server");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn export(database: &str, store: &str, out: &Path) {
    let out = out.to_str().expect("utf-8 path");
    let (code, _, stderr) = run(&[
        "export",
        "--database",
        database,
        "--store",
        store,
        "--out",
        out,
    ]);
    assert_eq!(code, 0, "export failed: {stderr}");
}

/// Imports `file` and returns the printed report.
fn import(database: &str, store: &str, file: &Path, extra: &[&str]) -> (i32, Value, String) {
    let file = file.to_str().expect("utf-8 path");
    let mut args = vec!["import", "--database", database, "--store", store];
    args.extend_from_slice(extra);
    args.push(file);
    let (code, stdout, stderr) = run(&args);
    let report = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (code, report, stderr)
}

/// The lines of an export: its header and its events.
fn read_export(path: &Path) -> (Value, Vec<Value>) {
    let text = std::fs::read_to_string(path).expect("export file");
    let mut lines = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"));
    let header = lines.next().expect("a header line");
    (header, lines.collect())
}

/// Pushes `count` events over a few streams, from three clients (so three origins), some
/// with meta and some at schema version 2.
async fn fill(server: &server_common::TestServer, store: &str, count: usize) {
    let api = server.api("tok-all");
    let mut sent = 0;
    let mut client = 0;
    while sent < count {
        let n = (count - sent).min(400);
        let events: Vec<Value> = (0..n)
            .map(|i| {
                let k = sent + i;
                let mut e = event(&format!("acct-{}", k % 7), "Added", json!({ "n": k }));
                e["time"] = json!(1_700_000_000_000u64 + k as u64);
                if k % 5 == 0 {
                    e["meta"] = json!({ "by": "test" });
                }
                if k % 11 == 0 {
                    e["schemaVersion"] = json!(2);
                }
                e
            })
            .collect();
        let body = json!({ "clientId": format!("client-{}", client % 3), "events": events });
        api.push(store, &body).await.assert_ok();
        sent += n;
        client += 1;
    }
}

async fn export_then_import_reproduces_the_log_and_a_second_import_adds_nothing(backend: Backend) {
    let server = backend.start().await;
    fill(&server, "store-a", 2_500).await;
    let database = backend.database_url();
    let scratch = Scratch::new();
    let file = scratch.path("store-a.ndjson");

    export(&database, "store-a", &file);
    let (header, events) = read_export(&file);
    assert_eq!(header["format"], "annals-events");
    assert_eq!(header["formatVersion"], 1);
    assert_eq!(header["store"], "store-a");
    assert_eq!(header["count"], 2_500);
    assert!(header["exportedAt"].as_u64().is_some());
    // Exactly what a pull serves, in position order.
    let pulled = server.api("tok-all").pull_all("store-a").await;
    assert_eq!(events, pulled);
    assert_eq!(events[11]["schemaVersion"], 2, "kept when not 1");

    let (code, report, stderr) = import(&database, "store-b", &file, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        report,
        json!({ "lines": 2_500, "imported": 2_500, "duplicates": 0, "rejected": 0, "dryRun": false })
    );
    // The same ids, data, times and origins; positions and versions as in the source,
    // since the target was empty.
    let copied = server.api("tok-all").pull_all("store-b").await;
    assert_eq!(copied, pulled);

    let (code, report, stderr) = import(&database, "store-b", &file, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["imported"], 0);
    assert_eq!(report["duplicates"], 2_500);
    assert_eq!(server.api("tok-all").head("store-b").await, 2_500);

    // And the copy exports to the same event lines.
    let again = scratch.path("store-b.ndjson");
    export(&database, "store-b", &again);
    assert_eq!(read_export(&again).1, events);
    server.stop().await;
}

async fn a_bad_line_is_reported_by_number_and_nothing_of_its_batch_is_written(backend: Backend) {
    let server = backend.start().await;
    fill(&server, "store-a", 1_500).await;
    let database = backend.database_url();
    let scratch = Scratch::new();
    let file = scratch.path("export.ndjson");
    export(&database, "store-a", &file);
    // Line 1 is the header: event 1,201 is on line 1,202, in the second batch of 1,000.
    let text = std::fs::read_to_string(&file).expect("export");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[1_201] = lines[1_201].replace("\"stream\":\"acct-", "\"stream\":\"\",\"x\":\"");
    let broken = scratch.path("broken.ndjson");
    std::fs::write(&broken, lines.join("\n") + "\n").expect("write");

    // A dry run checks every line and writes nothing.
    let (code, _, stderr) = import(&database, "store-b", &broken, &["--dry-run"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("line 1202"), "{stderr}");
    let (code, report, stderr) = import(&database, "store-b", &file, &["--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        report,
        json!({ "lines": 1_500, "imported": 1_500, "duplicates": 0, "rejected": 0, "dryRun": true })
    );
    assert_eq!(server.api("tok-all").head("store-b").await, 0);
    // Into the store it came from: every line is already there.
    let (_, report, _) = import(&database, "store-a", &file, &["--dry-run"]);
    assert_eq!(
        (&report["imported"], &report["duplicates"]),
        (&json!(0), &json!(1_500))
    );

    let (code, _, stderr) = import(&database, "store-b", &broken, &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("line 1202"), "{stderr}");
    // The first batch stayed; nothing of the second.
    assert_eq!(server.api("tok-all").head("store-b").await, 1_000);
    // Fixed, the import completes, skipping what the first run wrote.
    let (code, report, stderr) = import(&database, "store-b", &file, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["imported"], 500);
    assert_eq!(report["duplicates"], 1_000);
    server.stop().await;
}

async fn a_cut_off_file_and_a_newer_format_are_refused(backend: Backend) {
    let server = backend.start().await;
    fill(&server, "store-a", 10).await;
    let database = backend.database_url();
    let scratch = Scratch::new();
    let file = scratch.path("export.ndjson");
    export(&database, "store-a", &file);
    let text = std::fs::read_to_string(&file).expect("export");
    let cut: Vec<&str> = text.lines().take(6).collect();
    let cut_file = scratch.path("cut.ndjson");
    std::fs::write(&cut_file, cut.join("\n")).expect("write");
    let (code, _, stderr) = import(&database, "store-b", &cut_file, &["--dry-run"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("announces 10 events but 5 follow"),
        "{stderr}"
    );

    let newer = text.replacen("\"formatVersion\":1", "\"formatVersion\":2", 1);
    let newer_file = scratch.path("newer.ndjson");
    std::fs::write(&newer_file, newer).expect("write");
    let (code, _, stderr) = import(&database, "store-b", &newer_file, &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("line 1") && stderr.contains("newer"),
        "{stderr}"
    );
    assert_eq!(server.api("tok-all").head("store-b").await, 0);
    server.stop().await;
}

async fn a_line_reusing_a_stored_id_for_another_event_is_rejected_by_line(backend: Backend) {
    let server = backend.start().await;
    fill(&server, "store-a", 20).await;
    let database = backend.database_url();
    let scratch = Scratch::new();
    let file = scratch.path("export.ndjson");
    export(&database, "store-a", &file);
    // Line 6 keeps event 5's id but changes its data; line 21 is a new event.
    let text = std::fs::read_to_string(&file).expect("export");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[5] = lines[5].replace("{\"n\":4}", "{\"n\":-4}");
    let mut extra = serde_json::from_str::<Value>(&lines[20]).expect("event");
    extra["id"] = json!(server_common::new_id());
    lines[0] = lines[0].replace("\"count\":20", "\"count\":21");
    lines.push(extra.to_string());
    let changed = scratch.path("changed.ndjson");
    std::fs::write(&changed, lines.join("\n") + "\n").expect("write");

    let (code, report, stderr) = import(&database, "store-a", &changed, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(report["rejected"], 1);
    assert_eq!(report["duplicates"], 19);
    assert_eq!(report["imported"], 1);
    assert!(
        stderr.contains("line 6: event") && stderr.contains("rejected"),
        "{stderr}"
    );
    // The stored event is unchanged.
    let events = server.api("tok-all").pull_all("store-a").await;
    assert_eq!(events[4]["data"], json!({ "n": 4 }));
    assert_eq!(events.len(), 21);
    server.stop().await;
}

on_every_backend!(
    a_line_reusing_a_stored_id_for_another_event_is_rejected_by_line,
    export_then_import_reproduces_the_log_and_a_second_import_adds_nothing,
    a_bad_line_is_reported_by_number_and_nothing_of_its_batch_is_written,
    a_cut_off_file_and_a_newer_format_are_refused,
);

#[test]
fn exporting_from_a_missing_sqlite_file_creates_nothing() {
    let scratch = Scratch::new();
    let database = format!("sqlite://{}", scratch.path("nothing.db").display());
    let (code, _, stderr) = run(&["export", "--database", &database, "--store", "s"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no database at"), "{stderr}");
    assert!(!scratch.path("nothing.db").exists());
}

// --- protocol versions ----------------------------------------------------------------------

/// A replica with one pending event, syncing `store-a` as `tok-a`.
async fn client_with_one_pending(url: &str) -> (Engine<MemoryStorage>, SyncClient<HttpTransport>) {
    let options = EngineOptions {
        synced: true,
        ..EngineOptions::default()
    };
    let engine = Engine::open(MemoryStorage::new(), options)
        .await
        .expect("opens");
    let event = NewEvent::new("todo-1", "TodoAdded", &json!({ "title": "milk" })).expect("event");
    engine.append(vec![event]).await.expect("append");
    let sync = SyncClient::new(
        HttpTransport::new(url, "store-a", "tok-a"),
        SyncOptions::default(),
    );
    (engine, sync)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_client_against_a_newer_server_is_told_to_upgrade_and_pushes_nothing() {
    let backend = Backend::sqlite();
    // A server of a future release that dropped v1.
    let server = backend.start_with(|c| c.protocol_versions = vec![2]).await;
    let (engine, sync) = client_with_one_pending(&server.url).await;

    let error = sync.sync(&engine).await.expect_err("refused");
    assert_eq!(error.code(), "UPGRADE_REQUIRED");
    match &error {
        SyncError::Transport(TransportError::UpgradeRequired { client, server, .. }) => {
            assert_eq!((*client, server.as_slice()), (1, &[2][..]));
        }
        other => panic!("not UpgradeRequired: {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("speaks protocol v2") && message.contains("this client speaks v1"),
        "{message}"
    );
    assert!(message.contains("upgrade the annals package"), "{message}");
    // Nothing reached the store; the event is still pending here, to push after upgrading.
    assert_eq!(engine.pending_count(), 1);
    let api = server.api("tok-a");
    let pulled = api.get("/v2/stores/store-a/pull?after=0").await;
    assert_eq!(pulled.assert_ok()["head"], 0);

    // What the server speaks, without a token, and on every answer.
    let versions = server.anonymous().get("/versions").await;
    assert_eq!(versions.assert_ok()["protocol"], json!([2]));
    assert_eq!(
        versions
            .headers
            .get("annals-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"2"[..])
    );
    let refused = api.get("/v1/stores/store-a/pull?after=0").await;
    refused.assert_error(404, "UNSUPPORTED_VERSION");
    assert_eq!(refused.body["error"]["versions"], json!([2]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_within_the_servers_versions_keeps_working() {
    let backend = Backend::sqlite();
    let server = backend
        .start_with(|c| c.protocol_versions = vec![1, 2])
        .await;
    let (engine, sync) = client_with_one_pending(&server.url).await;
    let report = sync.sync(&engine).await.expect("syncs over v1");
    assert_eq!(report.pushed, 1);
    assert_eq!(engine.pending_count(), 0);
    let versions = server.anonymous().get("/versions").await;
    assert_eq!(versions.assert_ok()["protocol"], json!([1, 2]));
    assert_eq!(
        versions
            .headers
            .get("annals-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"1, 2"[..])
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_server_speaks_v1_and_says_so() {
    let backend = Backend::sqlite();
    let server = backend.start().await;
    let health = server.anonymous().get("/health").await;
    assert_eq!(
        health.headers.get("annals-protocol").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let refused = server.api("tok-a").get("/v2/stores/store-a/pull").await;
    refused.assert_error(404, "UNSUPPORTED_VERSION");
    assert_eq!(refused.body["error"]["versions"], json!([1]));
    server.stop().await;
}
