//! Schema versions on a real server, on SQLite and on PostgreSQL: pushes store them, pulls
//! return them (left out at 1, so older clients see the shape they know), a server-side
//! decider judges events upcast to their current version while storing them as pushed,
//! and databases written before schema versions existed open with every event at 1.
#![cfg(feature = "server")]

#[macro_use]
mod server_common;

use std::sync::Arc;

use annals::codec::EventRef;
use annals::command::{Decider, Decision};
use annals::push::authority::{Authorities, DeciderAuthority};
use annals::upcast::Upcasters;
use serde_json::{json, Value};
use server_common::{event, new_id, Backend};

on_every_backend!(
    pushed_schema_versions_are_stored_and_pulled,
    a_server_decider_judges_upcast_events,
);

async fn pushed_schema_versions_are_stored_and_pulled(backend: Backend) {
    let server = backend.start().await;
    let api = server.api("tok-a");
    let first = event("todo-1", "TodoAdded", json!({ "title": "milk" }));
    let mut second = event("todo-1", "TodoCreated", json!({ "text": "eggs" }));
    second["schemaVersion"] = json!(3);
    let mut third = event("todo-2", "TodoCreated", json!({ "text": "jam" }));
    third["schemaVersion"] = json!(u32::MAX);
    let mut explicit_one = event("todo-3", "TodoAdded", json!({ "title": "tea" }));
    explicit_one["schemaVersion"] = json!(1);
    let events = vec![first, second.clone(), third, explicit_one];
    api.push_ok("store-a", events.clone()).await;

    let pulled = api.pull_all("store-a").await;
    let versions: Vec<Option<u64>> = pulled.iter().map(|e| e["schemaVersion"].as_u64()).collect();
    assert_eq!(versions, [None, Some(3), Some(u64::from(u32::MAX)), None]);
    assert!(pulled[0].get("schemaVersion").is_none(), "left out at 1");

    // A retry of the same push (same versions) answers duplicate with the first positions.
    let again = api.push_ok("store-a", events).await;
    let statuses: Vec<&str> = again["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["duplicate"; 4]);
    assert_eq!(api.head("store-a").await, 4);

    // Versions outside 1 ..= 2^32 - 1 are refused, and nothing of the push is stored.
    for bad in [
        json!(0),
        json!(-1),
        json!(1.5),
        json!(4_294_967_296u64),
        json!("2"),
    ] {
        let mut e = event("todo-9", "TodoAdded", json!({}));
        e["schemaVersion"] = bad.clone();
        let answer = api
            .push("store-a", &server_common::push_body(vec![e]))
            .await;
        assert_eq!(answer.status, 400, "{bad}: {:?}", answer.body);
    }
    assert_eq!(api.head("store-a").await, 4);
    server.stop().await;
}

/// One todo per stream, written against the current versions only (`TodoCreated` v3 with
/// a `text`, `TodoCompleted` v2 with a `status`).
struct Todo;

impl Decider for Todo {
    type State = Option<String>;
    type Command = ();
    fn initial(&self) -> Option<String> {
        None
    }
    fn evolve(&self, state: &mut Option<String>, event: &EventRef<'_>) {
        if event.event_type == "TodoCreated" {
            let data: Value = event.data_as().unwrap_or(Value::Null);
            *state = data["text"].as_str().map(str::to_owned);
        }
    }
    fn decide(&self, _: &(), _: &Option<String>) -> Result<Vec<Decision>, String> {
        Ok(Vec::new())
    }
    fn check(&self, state: &Option<String>, event: &EventRef<'_>) -> Result<(), String> {
        let data: Value = event.data_as().map_err(|e| e.to_string())?;
        match event.event_type {
            "TodoCreated" if !data["text"].is_string() => Err("a todo needs a text".into()),
            "TodoCompleted" if state.is_none() => Err("no such todo".into()),
            "TodoCompleted" if data["status"] != "done" && data["status"] != "open" => {
                Err(format!("unknown status {}", data["status"]))
            }
            _ => Ok(()),
        }
    }
}

fn upcasters() -> Arc<Upcasters> {
    Upcasters::new()
        .add("TodoAdded", 1, |mut data| {
            data["priority"] = json!(0);
            Ok(data)
        })
        .rename("TodoAdded", 2, "TodoCreated", |mut data| {
            if let Some(map) = data.as_object_mut() {
                if let Some(title) = map.remove("title") {
                    map.insert("text".into(), title);
                }
            }
            Ok(data)
        })
        .add("TodoCompleted", 1, |data| {
            let done = data["done"] == json!(true);
            Ok(json!({ "status": if done { "done" } else { "open" } }))
        })
        .build()
        .expect("a valid chain")
}

async fn a_server_decider_judges_upcast_events(backend: Backend) {
    let authority = DeciderAuthority::new(Todo, |s: &str| s.starts_with("todo-"))
        .with_upcasters(upcasters())
        .expect("a valid chain");
    let server = backend
        .start_with(|config| config.authorities = Authorities::new(vec![Arc::new(authority)]))
        .await;
    let api = server.api("tok-a");
    let created = event("todo-1", "TodoAdded", json!({ "title": "milk" }));
    let done = event("todo-1", "TodoCompleted", json!({ "done": true }));
    let untitled = event("todo-2", "TodoAdded", json!({ "note": "?" }));
    let orphan = event("todo-3", "TodoCompleted", json!({ "done": true }));
    let pushed = api
        .push_ok("store-a", vec![created, done, untitled, orphan])
        .await;
    let verdicts: Vec<(String, String)> = pushed["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["status"].as_str().unwrap().to_owned(),
                r["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("ok".to_owned(), String::new()),
            ("ok".to_owned(), String::new()),
            ("rejected".to_owned(), "a todo needs a text".to_owned()),
            ("rejected".to_owned(), "no such todo".to_owned()),
        ]
    );
    // A later push is judged against the stored history (version 1 events), upcast again.
    let mut reopened = event("todo-1", "TodoCompleted", json!({ "status": "open" }));
    reopened["schemaVersion"] = json!(2);
    let pushed = api.push_ok("store-a", vec![reopened]).await;
    assert_eq!(pushed["results"][0]["status"], "ok", "{pushed}");

    // Stored as pushed: the old type, version and data.
    let pulled = api.pull_all("store-a").await;
    assert_eq!(pulled.len(), 3);
    assert_eq!(pulled[0]["type"], "TodoAdded");
    assert_eq!(pulled[0]["data"], json!({ "title": "milk" }));
    assert!(pulled[0].get("schemaVersion").is_none());
    assert_eq!(pulled[1]["data"], json!({ "done": true }));
    assert_eq!(pulled[2]["schemaVersion"], 2);
    server.stop().await;
}

/// The SQLite tables as servers before schema versions created them (`user_version` 1).
const SQLITE_FORMAT_1: &str = "
CREATE TABLE stores (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, epoch TEXT NOT NULL,
    head INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL);
CREATE TABLE streams (store_id INTEGER NOT NULL, stream TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (store_id, stream)) WITHOUT ROWID;
CREATE TABLE events (store_id INTEGER NOT NULL, position INTEGER NOT NULL, id BLOB NOT NULL,
    stream TEXT NOT NULL, version INTEGER NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL,
    meta TEXT, time INTEGER NOT NULL, origin TEXT, PRIMARY KEY (store_id, position));
CREATE UNIQUE INDEX events_by_id ON events (store_id, id);
CREATE TABLE rejections (store_id INTEGER NOT NULL, id BLOB NOT NULL, fingerprint INTEGER NOT NULL,
    reason TEXT NOT NULL, actual_version INTEGER, PRIMARY KEY (store_id, id, fingerprint)) WITHOUT ROWID;
INSERT INTO stores (id, name, epoch, head, created_ms)
    VALUES (1, 'store-a', '00000000000000000000000000000001', 1, 0);
INSERT INTO streams VALUES (1, 'todo-1', 1);
INSERT INTO events VALUES (1, 1, x'0190a4c17d2e7c3a9f102b3c4d5e6f70', 'todo-1', 1, 'TodoAdded',
    '{\"title\":\"milk\"}', NULL, 1700000000000, 'old-client');
PRAGMA user_version = 1;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_file_from_before_schema_versions_opens_with_every_event_at_1() {
    let backend = Backend::sqlite();
    let Backend::Sqlite { dir } = &backend else {
        unreachable!("an SQLite backend")
    };
    let path = dir.join("data/annals.db");
    std::fs::create_dir_all(dir.join("data")).expect("data dir");
    {
        let conn = rusqlite::Connection::open(&path).expect("old file");
        conn.execute_batch(SQLITE_FORMAT_1).expect("old schema");
    }
    let server = backend.start().await;
    let api = server.api("tok-a");
    let pulled = api.pull_all("store-a").await;
    assert_eq!(pulled.len(), 1);
    assert_eq!(pulled[0]["data"], json!({ "title": "milk" }));
    assert!(pulled[0].get("schemaVersion").is_none(), "version 1");
    let mut later = event("todo-1", "TodoCreated", json!({ "text": "eggs" }));
    later["schemaVersion"] = json!(3);
    api.push_ok("store-a", vec![later]).await;
    let pulled = api.pull_all("store-a").await;
    assert_eq!(pulled[1]["schemaVersion"], 3);
    assert_eq!(pulled[1]["position"], 2);
    server.stop().await;

    let conn = rusqlite::Connection::open(&path).expect("migrated file");
    let format: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("user_version");
    assert_eq!(
        format, 4,
        "brought to the current format (3: erased marks too; 4: derived stream versions)"
    );
    let versions: Vec<(i64, bool)> = conn
        .prepare("SELECT schema_version, erased FROM events ORDER BY position")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .expect("schema versions");
    assert_eq!(versions, [(1, false), (3, false)], "nothing old is erased");
    // Opening it again (already migrated) changes nothing.
    drop(conn);
    let server = backend.start().await;
    assert_eq!(server.api("tok-a").pull_all("store-a").await.len(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_database_from_before_schema_versions_gains_the_column() {
    let backend = Backend::postgres();
    let Backend::Postgres { base, schema } = &backend else {
        unreachable!("a PostgreSQL backend")
    };
    let (client, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL (ANNALS_TEST_PG_URL)");
    tokio::spawn(conn);
    let id = new_id().replace('-', "");
    client
        .batch_execute(&format!(
            "CREATE SCHEMA \"{schema}\"; SET search_path TO \"{schema}\";
             CREATE TABLE stores (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                 epoch TEXT NOT NULL, head BIGINT NOT NULL DEFAULT 0,
                 created_at TIMESTAMPTZ NOT NULL DEFAULT now());
             CREATE TABLE streams (store_id BIGINT NOT NULL, stream TEXT NOT NULL,
                 version BIGINT NOT NULL, PRIMARY KEY (store_id, stream));
             CREATE TABLE events (store_id BIGINT NOT NULL, position BIGINT NOT NULL,
                 id BYTEA NOT NULL, stream TEXT NOT NULL, version BIGINT NOT NULL,
                 type TEXT NOT NULL, data TEXT NOT NULL, meta TEXT, time BIGINT NOT NULL,
                 origin TEXT, PRIMARY KEY (store_id, position), UNIQUE (store_id, id));
             INSERT INTO stores (name, epoch, head) VALUES ('store-a', '00000000000000000000000000000001', 1);
             INSERT INTO streams SELECT id, 'todo-1', 1 FROM stores;
             INSERT INTO events SELECT id, 1, decode('{id}', 'hex'), 'todo-1', 1, 'TodoAdded',
                 '{{\"title\":\"milk\"}}', NULL, 1700000000000, 'old-client' FROM stores;"
        ))
        .await
        .expect("old schema");
    let server = backend.start().await;
    let api = server.api("tok-a");
    let pulled = api.pull_all("store-a").await;
    assert_eq!(pulled.len(), 1);
    assert!(pulled[0].get("schemaVersion").is_none(), "version 1");
    let mut later = event("todo-1", "TodoCreated", json!({ "text": "eggs" }));
    later["schemaVersion"] = json!(3);
    api.push_ok("store-a", vec![later]).await;
    assert_eq!(api.pull_all("store-a").await[1]["schemaVersion"], 3);
    server.stop().await;
    let versions: Vec<i64> = client
        .query(
            &format!("SELECT schema_version FROM \"{schema}\".events ORDER BY position"),
            &[],
        )
        .await
        .expect("schema versions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 3]);
}
