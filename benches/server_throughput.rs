//! Server append throughput: 100k events of about 200 bytes pushed over HTTP in batches of
//! 1,000 to a real annals-server, on SQLite and on PostgreSQL, beside the limit: a raw
//! batched INSERT of the same rows into the same database, with the same durability, in
//! the same run (medians of five alternating rounds). Writes target/bench/server.json and
//! prints a Markdown table.
//!
//! `cargo bench --profile perf --features server,http-client --bench server_throughput`
//! (PostgreSQL from `ANNALS_TEST_PG_URL`, default postgres://postgres@127.0.0.1:5432/test;
//! `ANNALS_BENCH_BACKEND=sqlite` or `postgres` measures one backend only).

use std::time::{Duration, Instant};

use annals::event::EventId;
use annals::protocol::{PushEvent, PushRequest};
use annals::server::{serve, Auth, ServerConfig};
use serde_json::value::RawValue;

const EVENTS: usize = 100_000;
const BATCH: usize = 1_000;

fn payload(i: usize) -> String {
    format!(
        r#"{{"title":"item {i:08}","note":"lorem ipsum dolor sit amet, consectetur adipiscing elit","amount":{},"tags":["a","b","c"],"done":{}}}"#,
        i % 997,
        i % 2 == 0
    )
}

fn random_id() -> EventId {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("randomness");
    EventId(b)
}

fn batches() -> Vec<Vec<PushEvent>> {
    (0..EVENTS / BATCH)
        .map(|b| {
            (0..BATCH)
                .map(|i| {
                    let n = b * BATCH + i;
                    PushEvent {
                        id: random_id(),
                        stream: format!("stream-{}", n % 1_000),
                        event_type: "ItemAdded".into(),
                        schema_version: 1,
                        data: RawValue::from_string(payload(n)).expect("json"),
                        meta: None,
                        time: 1_700_000_000_000 + n as u64,
                        expected_version: Default::default(),
                        erased: false,
                    }
                })
                .collect()
        })
        .collect()
}

struct Row {
    backend: &'static str,
    annals: f64,
    raw: f64,
}

async fn push_all(database: &str) -> f64 {
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database: database.to_owned(),
        auth: Auth::new().with_dev_token("bench").expect("token"),
        rate_limit: None, // measures the server, not the per-token limiter
        ..ServerConfig::default()
    };
    let server = serve(config).await.expect("server");
    // The request bodies are encoded before the clock starts: what is measured is the
    // server (HTTP, decoding, checks, the database), not this client's JSON encoder.
    let bodies: Vec<Vec<u8>> = batches()
        .into_iter()
        .map(|events| {
            serde_json::to_vec(&PushRequest {
                client_id: "bench".into(),
                events,
            })
            .expect("encode")
        })
        .collect();
    let client = reqwest::Client::new();
    let url = format!("{}/v1/stores/bench/push", server.url());
    let start = Instant::now();
    for body in bodies {
        let response = client
            .post(&url)
            .bearer_auth("bench")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("push");
        assert!(response.status().is_success(), "{}", response.status());
        // One answer per event, each `ok` (counted, not decoded: the client's cost).
        let answer = response.bytes().await.expect("answer");
        let text = std::str::from_utf8(&answer).expect("utf-8");
        assert_eq!(
            text.matches(r#""status":"ok""#).count(),
            BATCH,
            "{text:.200}"
        );
    }
    let rate = EVENTS as f64 / start.elapsed().as_secs_f64();
    server.shutdown().await.expect("shutdown");
    rate
}

/// The same rows, 1,000 per transaction, straight into a table shaped like the server's,
/// with the server's durability settings (WAL, synchronous=FULL).
fn raw_sqlite(path: &std::path::Path) -> f64 {
    let conn = rusqlite::Connection::open(path).expect("sqlite");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("sync");
    conn.execute_batch(
        "CREATE TABLE raw_events (store_id INTEGER NOT NULL, position INTEGER NOT NULL, id BLOB NOT NULL,
           stream TEXT NOT NULL, version INTEGER NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL, meta TEXT,
           time INTEGER NOT NULL, origin TEXT, PRIMARY KEY (store_id, position));
         CREATE UNIQUE INDEX raw_by_id ON raw_events (store_id, id);",
    )
    .expect("schema");
    let batches = batches();
    let mut conn = conn;
    let start = Instant::now();
    let mut position = 0i64;
    for events in batches {
        let tx = conn.transaction().expect("tx");
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO raw_events (store_id, position, id, stream, version, type, data, meta, time, origin)
                     VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, NULL, ?7, 'bench')",
                )
                .expect("prepare");
            for e in &events {
                position += 1;
                insert
                    .execute(rusqlite::params![
                        position,
                        &e.id.0[..],
                        e.stream,
                        position / 1_000 + 1,
                        e.event_type,
                        e.data.get(),
                        e.time as i64
                    ])
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    EVENTS as f64 / start.elapsed().as_secs_f64()
}

/// The same rows, one multi-row INSERT (UNNEST) and one commit per 1,000.
async fn raw_postgres(url: &str, schema: &str) -> f64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("postgres");
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "SET synchronous_commit = on; CREATE SCHEMA IF NOT EXISTS \"{schema}\"; SET search_path = \"{schema}\";
             CREATE TABLE raw_events (store_id BIGINT NOT NULL, position BIGINT NOT NULL, id BYTEA NOT NULL,
               stream TEXT NOT NULL, version BIGINT NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL, meta TEXT,
               time BIGINT NOT NULL, origin TEXT, PRIMARY KEY (store_id, position), UNIQUE (store_id, id));"
        ))
        .await
        .expect("schema");
    let insert = client
        .prepare(
            "INSERT INTO raw_events (store_id, position, id, stream, version, type, data, meta, time, origin)
             SELECT 1, t.position, t.id, t.stream, t.version, t.type, t.data, NULL, t.time, 'bench'
             FROM UNNEST($1::bigint[], $2::bytea[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::bigint[])
               AS t(position, id, stream, version, type, data, time)",
        )
        .await
        .expect("prepare");
    let batches = batches();
    let start = Instant::now();
    let mut position = 0i64;
    for events in &batches {
        let positions: Vec<i64> = events
            .iter()
            .map(|_| {
                position += 1;
                position
            })
            .collect();
        let ids: Vec<&[u8]> = events.iter().map(|e| &e.id.0[..]).collect();
        let streams: Vec<&str> = events.iter().map(|e| e.stream.as_str()).collect();
        let versions: Vec<i64> = positions.iter().map(|p| p / 1_000 + 1).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let data: Vec<&str> = events.iter().map(|e| e.data.get()).collect();
        let times: Vec<i64> = events.iter().map(|e| e.time as i64).collect();
        client.batch_execute("BEGIN").await.expect("begin");
        client
            .execute(
                &insert,
                &[&positions, &ids, &streams, &versions, &types, &data, &times],
            )
            .await
            .expect("insert");
        client.batch_execute("COMMIT").await.expect("commit");
    }
    EVENTS as f64 / start.elapsed().as_secs_f64()
}

async fn drop_schema(url: &str, schema: &str) {
    if let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await;
    }
}

/// Rounds of (annals, raw) per backend, alternating, so that a burst of load from other
/// work on the machine hits both sides alike; the medians are compared.
const ROUNDS: usize = 5;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Each round's figures as it ends (on stderr), so that a run's spread can be quoted beside
/// its medians.
fn print_round(backend: &str, round: usize, annals: &[f64], raw: &[f64]) {
    if let (Some(a), Some(r)) = (annals.last(), raw.last()) {
        eprintln!(
            "{backend} round {}: annals {a:.0} events/s, raw {r:.0} events/s, ratio {:.2}",
            round + 1,
            a / r
        );
    }
}

#[tokio::main]
async fn main() {
    let dir = std::env::temp_dir().join(format!("annals-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut rows = Vec::new();
    let only = std::env::var("ANNALS_BENCH_BACKEND").unwrap_or_default();

    if only != "postgres" {
        let (mut annals, mut raw) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            annals.push(push_all(&format!("sqlite://{}/annals-{round}.db", dir.display())).await);
            raw.push(raw_sqlite(&dir.join(format!("raw-{round}.db"))));
            print_round("SQLite", round, &annals, &raw);
        }
        rows.push(Row {
            backend: "SQLite",
            annals: median(annals),
            raw: median(raw),
        });
    }

    let base = std::env::var("ANNALS_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let sep = if base.contains('?') { '&' } else { '?' };
    if only != "sqlite" {
        let (mut annals, mut raw) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let schema = format!("annals_bench_{}_{round}", std::process::id());
            annals.push(push_all(&format!("{base}{sep}schema={schema}")).await);
            drop_schema(&base, &schema).await;
            let schema = format!("annals_bench_raw_{}_{round}", std::process::id());
            raw.push(
                tokio::time::timeout(Duration::from_secs(600), raw_postgres(&base, &schema))
                    .await
                    .expect("in time"),
            );
            drop_schema(&base, &schema).await;
            print_round("PostgreSQL", round, &annals, &raw);
        }
        rows.push(Row {
            backend: "PostgreSQL",
            annals: median(annals),
            raw: median(raw),
        });
    }
    let _ = std::fs::remove_dir_all(&dir);

    let mut table = String::from(
        "| server append, batches of 1,000 | annals-server (HTTP push) | raw batched INSERT (limit) | ratio | goal |\n|---|---:|---:|---:|---:|\n",
    );
    let mut json = Vec::new();
    for row in &rows {
        let ratio = row.annals / row.raw;
        table.push_str(&format!(
            "| {} | {:.0} events/s | {:.0} events/s | {:.2}× | ≥ 0.8× {} |\n",
            row.backend,
            row.annals,
            row.raw,
            ratio,
            if ratio >= 0.8 { "✓" } else { "✗" }
        ));
        json.push(
            serde_json::json!({ "backend": row.backend, "annalsEventsPerSecond": row.annals,
            "rawInsertEventsPerSecond": row.raw, "ratio": ratio }),
        );
    }
    std::fs::create_dir_all("target/bench").expect("target/bench");
    std::fs::write("target/bench/server.md", &table).expect("write");
    std::fs::write(
        "target/bench/server.json",
        serde_json::to_string_pretty(&json).expect("json"),
    )
    .expect("write");
    println!("{table}");
}
