//! Hostile clients against a real server, on SQLite and on PostgreSQL: tokens used on
//! other stores, spoofed client ids, replayed pushes, oversize and endless bodies, deeply
//! nested and non-interoperable JSON, floods from one token, long-poll hoarding, wrong
//! protocol versions. Each attack gets its documented status and JSON error, writes
//! nothing it should not, and leaves the server answering `/health`; no thread of the
//! test process (the server runs in it) panics.
#![cfg(all(feature = "server", feature = "http-client"))]

#[macro_use]
mod server_common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Duration;

use annals::server::RateLimit;
use annals::sync::client::{SyncClient, SyncOptions};
use annals::sync::http::HttpTransport;
use annals::{Engine, EngineOptions, MemoryStorage, NewEvent, ReadQuery};
use serde_json::{json, Value};
use server_common::{event, new_id, push_body, Answer, Backend, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

on_every_backend!(
    tokens_never_cross_stores,
    spoofed_client_ids_cannot_touch_another_clients_events,
    replayed_pushes_answer_duplicate_and_nothing_doubles,
    oversize_and_endless_bodies_are_cut_off_while_streaming,
    the_body_budget_bounds_memory_across_requests,
    deeply_nested_json_is_refused_without_overflow,
    json_that_not_every_reader_accepts_is_refused,
    a_flood_from_one_token_gets_429_with_retry_after,
    long_polls_are_capped_per_token_and_overall,
    other_protocol_versions_get_a_json_404_naming_v1,
);

// ---------------------------------------------------------------------------------------
// Shared checks

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts every panic outside the test threads (the servers under test run in this
/// process, on runtime worker and blocking threads), then reports it as usual.
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Test threads are named after their test (`sqlite::name`); a failed assertion
            // there is a test failure, not a server panic.
            let name = std::thread::current().name().unwrap_or_default().to_owned();
            if !name.contains("::") {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

/// The server still answers, and nothing in this process has panicked.
async fn assert_alive(server: &TestServer) {
    let health = server.anonymous().get("/health").await;
    assert_eq!(health.assert_ok()["status"], "ok");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a thread panicked");
}

async fn start(backend: &Backend) -> TestServer {
    count_panics();
    backend.start().await
}

fn running(server: &TestServer) -> &annals::server::RunningServer {
    server.server.as_ref().expect("running")
}

/// `(head, events)` of a store, read with the all-stores token.
async fn contents(server: &TestServer, store: &str) -> (u64, Vec<Value>) {
    let admin = server.api("tok-all");
    (admin.head(store).await, admin.pull_all(store).await)
}

fn ids_of(answer: &Value) -> Vec<String> {
    answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

/// A request written by hand on a fresh connection (`Connection: close`): status, the
/// header block and the body.
async fn raw_request(base: &str, request: &[u8]) -> (u16, String, String) {
    let addr = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_response(&mut stream).await
}

async fn read_response(stream: &mut TcpStream) -> (u16, String, String) {
    let mut response = Vec::new();
    // The server may close while data is still unread: keep what arrived.
    let _ = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut response))
        .await
        .expect("the server answers and closes");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) if end > start => body[start..=end].to_owned(),
        _ => body.to_owned(),
    };
    (status, head.to_owned(), json)
}

fn error_code(body: &str) -> String {
    let value: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    value["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn push_head(addr: &str, store: &str, token: &str, length: Option<u64>) -> String {
    let framing = match length {
        Some(n) => format!("Content-Length: {n}"),
        None => "Transfer-Encoding: chunked".into(),
    };
    format!(
        "POST /v1/stores/{store}/push HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\n{framing}\r\nConnection: close\r\n\r\n"
    )
}

fn chunk(bytes: &[u8]) -> Vec<u8> {
    [
        format!("{:x}\r\n", bytes.len()).into_bytes(),
        bytes.to_vec(),
        b"\r\n".to_vec(),
    ]
    .concat()
}

/// Polls `condition` (every 10 ms, for up to a minute): for states the test cannot
/// observe through the API, such as "the server has read these bytes".
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

// ---------------------------------------------------------------------------------------
// Cross-store access

async fn tokens_never_cross_stores(backend: Backend) {
    let server = start(&backend).await;
    let a = server.api("tok-a");
    let b = server.api("tok-b");
    let in_a = a
        .push_ok(
            "store-a",
            (0..5)
                .map(|i| event("secret", "A", json!({"secret": format!("a-{i}")})))
                .collect(),
        )
        .await;
    let in_b = b
        .push_ok("store-b", vec![event("s", "B", json!("b-only"))])
        .await;
    let before_a = contents(&server, "store-a").await;
    let before_b = contents(&server, "store-b").await;

    // tok-a on store-b: every write and every read is 403, with nothing of store-b in it.
    let attempts: Vec<Answer> = vec![
        a.push("store-b", &push_body(vec![event("s", "X", json!(1))]))
            .await,
        a.push("store-b", &push_body(vec![])).await,
        // A replay of store-b's own event.
        a.push(
            "store-b",
            &push_body(vec![json!({
                "id": ids_of(&in_b)[0], "stream": "s", "type": "B", "data": "forged",
                "time": 1
            })]),
        )
        .await,
        a.pull("store-b", "").await,
        a.pull("store-b", "after=0&limit=10000").await,
        a.pull("store-b", "after=0&wait=1").await,
        // Names that differ only in case or spelling are other stores, not aliases.
        b.pull("Store-A", "").await,
        b.pull("store-a.", "").await,
        b.push("STORE-A", &push_body(vec![])).await,
        // The read-only token cannot write even its own store.
        server
            .api("tok-ro")
            .push("store-a", &push_body(vec![event("secret", "X", json!(0))]))
            .await,
    ];
    for answer in &attempts {
        answer.assert_error(403, "FORBIDDEN");
        let text = answer.body.to_string();
        assert!(answer.body.get("events").is_none(), "{text}");
        assert!(answer.body.get("head").is_none(), "{text}");
        assert!(!text.contains("b-only") && !text.contains("a-0"), "{text}");
    }
    // Paths that try to climb out of the store are not store names at all.
    for path in [
        "/v1/stores/store-a%2F..%2Fstore-b/pull",
        "/v1/stores/..%2Fstore-b/pull",
        "/v1/stores/store-a/../store-b/pull",
    ] {
        let answer = a.get(path).await;
        assert!(
            [400, 403, 404].contains(&answer.status),
            "{path}: {}",
            answer.status
        );
        assert!(answer.body.get("events").is_none(), "{path}");
    }

    // Event ids are per store: store-a's ids pushed into store-b are new events there (not
    // "duplicate", which would tell tok-b that they exist elsewhere).
    let probe = b
        .push_ok(
            "store-b",
            ids_of(&in_a)
                .iter()
                .map(|id| json!({"id": id, "stream": "probe", "type": "P", "data": 0, "time": 1}))
                .collect(),
        )
        .await;
    for (i, r) in probe["results"]
        .as_array()
        .expect("results")
        .iter()
        .enumerate()
    {
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["position"], i as u64 + 2, "{r}");
    }

    assert_eq!(
        contents(&server, "store-a").await,
        before_a,
        "store-a untouched"
    );
    let (head_b, events_b) = contents(&server, "store-b").await;
    assert_eq!(head_b, before_b.0 + 5);
    assert_eq!(events_b[0], before_b.1[0]);
    assert_alive(&server).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Spoofed client ids

async fn spoofed_client_ids_cannot_touch_another_clients_events(backend: Backend) {
    let server = start(&backend).await;
    // Alice: a real synced client.
    let engine = Engine::open(
        MemoryStorage::new(),
        EngineOptions {
            synced: true,
            ..EngineOptions::default()
        },
    )
    .await
    .expect("opens");
    let alice_id = engine
        .client_id()
        .expect("a synced store has a client id")
        .to_owned();
    let sync = SyncClient::new(
        HttpTransport::new(&server.url, "store-a", "tok-a"),
        SyncOptions::default(),
    );
    for i in 0..3 {
        let e = NewEvent::new(
            "alice-notes",
            "Noted",
            &json!({"secret": format!("alice-{i}")}),
        )
        .expect("event");
        engine.append(vec![e]).await.expect("append");
    }
    let report = sync.sync(&engine).await.expect("sync");
    assert_eq!(report.pushed, 3);
    let (_, stored) = contents(&server, "store-a").await;
    assert!(stored.iter().all(|e| e["origin"] == alice_id.as_str()));

    // Mallory, with a token for the same store, pushes under Alice's client id: Alice's
    // own ids with other contents (rejected as DUPLICATE_ID naming only Alice's positions,
    // nothing rewritten), and one event of her own (stored; its `origin` is only what she
    // claims).
    let mallory = server.api("tok-a");
    let forged: Vec<Value> = stored
        .iter()
        .map(|e| {
            json!({
                "id": e["id"], "stream": "alice-notes", "type": "Deleted",
                "data": {"secret": "overwritten"}, "meta": {"by": "mallory"}, "time": 2,
                "expectedVersion": "any"
            })
        })
        .chain([event(
            "alice-notes",
            "Noted",
            json!({"secret": "from mallory"}),
        )])
        .collect();
    let answer = mallory
        .push("store-a", &json!({"clientId": alice_id, "events": forged}))
        .await;
    let body = answer.assert_ok();
    let results = body["results"].as_array().expect("results");
    for (r, original) in results.iter().zip(&stored) {
        assert_eq!(r["status"], "rejected", "{r}");
        let reason = r["reason"].as_str().expect("a reason");
        assert!(reason.starts_with("DUPLICATE_ID: "), "{r}");
        assert!(
            reason.contains(&format!(
                "(position {}, version {} of its stream)",
                original["position"], original["version"]
            )),
            "{r}"
        );
    }
    assert_eq!(results[3]["status"], "ok");
    // The answer tells Mallory nothing of Alice's events but where they are.
    assert!(!body.to_string().contains("alice-"), "{body}");
    // Pulls do not take a client id: asking for Alice's does not change what is read.
    let plain = mallory.pull("store-a", "after=0").await;
    let as_alice = mallory
        .pull(
            "store-a",
            &format!("after=0&clientId={alice_id}&origin={alice_id}"),
        )
        .await;
    assert_eq!(plain.body, as_alice.body);

    // Nothing of Alice's was removed or changed.
    let (head, after) = contents(&server, "store-a").await;
    assert_eq!(head, 4);
    assert_eq!(&after[..3], &stored[..], "Alice's events are untouched");

    // Alice goes on syncing as if nothing happened: her next events are accepted, nothing
    // of hers is rejected, and her replica holds her events as she wrote them.
    let e = NewEvent::new("alice-notes", "Noted", &json!({"secret": "alice-3"})).expect("event");
    engine.append(vec![e]).await.expect("append");
    let report = sync.sync(&engine).await.expect("sync");
    assert_eq!(report.pushed, 1);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(engine.pending_count(), 0);
    let log = engine.read(&ReadQuery::default()).expect("read");
    assert_eq!(log.len(), 5);
    for (i, position) in [(0, 1), (1, 2), (2, 3), (3, 5)] {
        let e = log.iter().find(|e| e.position == position).expect("event");
        assert_eq!(e.event_type, "Noted");
        assert_eq!(
            serde_json::from_str::<Value>(e.data.get()).expect("data"),
            json!({"secret": format!("alice-{i}")})
        );
    }

    // Spoofing across stores reaches nothing either: with tok-b, Alice's id and event ids
    // only make new events in store-b.
    let elsewhere = server
        .api("tok-b")
        .push(
            "store-b",
            &json!({"clientId": alice_id, "events": [{
                "id": stored[0]["id"], "stream": "alice-notes", "type": "Deleted",
                "data": null, "time": 3
            }]}),
        )
        .await;
    assert_eq!(elsewhere.assert_ok()["results"][0]["status"], "ok");
    assert_eq!(contents(&server, "store-a").await.0, 5);
    assert_alive(&server).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Replays

async fn replayed_pushes_answer_duplicate_and_nothing_doubles(backend: Backend) {
    let server = start(&backend).await;
    let api = server.api("tok-a");
    api.push_ok("store-a", vec![event("taken", "T", json!(0))])
        .await;
    let mut events: Vec<Value> = (0..8)
        .map(|i| event(&format!("s{}", i % 3), "T", json!(i)))
        .collect();
    // One event that is refused (its stream exists), and one repeated inside the batch.
    let mut refused = event("taken", "T", json!("late"));
    refused["expectedVersion"] = json!("no_stream");
    events.push(refused);
    events.push(events[0].clone());
    let body = push_body(events);
    let first = api.push("store-a", &body).await.assert_ok().clone();
    let statuses: Vec<&str> = first["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["status"].as_str().expect("status"))
        .collect();
    assert_eq!(&statuses[..8], &["ok"; 8]);
    assert_eq!(statuses[8], "rejected");
    assert_eq!(statuses[9], "duplicate");
    assert_eq!(
        first["results"][9]["position"],
        first["results"][0]["position"]
    );
    assert_eq!(first["head"], 9);
    let stored = contents(&server, "store-a").await;

    // The same body, 20 times one after the other and 20 times at once.
    let expected: Vec<Value> = first["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if r["status"] == "ok" {
                r["status"] = json!("duplicate");
            }
            r
        })
        .collect();
    let check = |answer: &Answer| {
        let body = answer.assert_ok();
        assert_eq!(body["results"], json!(expected), "{body}");
        assert_eq!(body["head"], 9);
        assert_eq!(body["epoch"], first["epoch"]);
    };
    for _ in 0..20 {
        check(&api.push("store-a", &body).await);
    }
    let concurrent = futures::future::join_all((0..20).map(|_| api.push("store-a", &body))).await;
    concurrent.iter().for_each(check);

    assert_eq!(
        contents(&server, "store-a").await,
        stored,
        "nothing doubled"
    );
    // Stream versions did not move either: the next event of s0 is its version 4.
    let next = api
        .push_ok("store-a", vec![event("s0", "T", json!("next"))])
        .await;
    assert_eq!(next["results"][0]["version"], 4);
    assert_alive(&server).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Bodies

async fn oversize_and_endless_bodies_are_cut_off_while_streaming(backend: Backend) {
    let server = start(&backend).await;
    let addr = server.url.trim_start_matches("http://").to_owned();
    let max = annals::server::Limits::default().max_body_bytes;

    // A Content-Length of 1 TiB, with no body behind it: refused at once, unread.
    let (status, head, body) = raw_request(
        &server.url,
        push_head(&addr, "store-a", "tok-a", Some(1 << 40)).as_bytes(),
    )
    .await;
    assert_eq!(status, 413, "{head}");
    assert_eq!(error_code(&body), "TOO_LARGE");

    // A chunked body that never ends: the server stops reading it past its cap and
    // closes the connection; it never holds more than the body limit meanwhile.
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream
        .write_all(push_head(&addr, "store-a", "tok-a", None).as_bytes())
        .await
        .expect("write");
    let piece = chunk(&vec![b' '; 256 * 1024]);
    let mut sent = 0usize;
    let mut peak = 0usize;
    let cut_off = loop {
        if stream.write_all(&piece).await.is_err() {
            break true;
        }
        sent += piece.len();
        peak = peak.max(running(&server).buffered_bytes());
        if sent > 1 << 30 {
            break false;
        }
    };
    assert!(cut_off, "the server read 1 GiB of an endless body");
    assert!(peak <= max, "held {peak} bytes of one body");
    eprintln!(
        "[{}] endless body: cut off after {} MiB sent, at most {peak} bytes held",
        backend.name(),
        sent >> 20
    );

    // A body longer than its Content-Length: the extra bytes are not part of the body,
    // and what is left is not a push.
    let good = serde_json::to_string(&push_body(vec![event("s", "T", json!(1))])).expect("json");
    let lying = format!(
        "{}{good}{good}",
        push_head(&addr, "store-a", "tok-a", Some(good.len() as u64 / 2))
    );
    let (status, _, body) = raw_request(&server.url, lying.as_bytes()).await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "INVALID_REQUEST");

    // Many events, each under every limit, in a body over the limit.
    let api = server.api("tok-a");
    let data = "x".repeat(5000);
    let many = push_body((0..1000).map(|_| event("s", "T", json!(data))).collect());
    api.push("store-a", &many)
        .await
        .assert_error(413, "TOO_LARGE");

    assert_eq!(contents(&server, "store-a").await.0, 0, "nothing written");
    eventually("every body released", || {
        running(&server).buffered_bytes() == 0
    })
    .await;
    assert_alive(&server).await;
    server.stop().await;
}

async fn the_body_budget_bounds_memory_across_requests(backend: Backend) {
    count_panics();
    const MIB: usize = 1024 * 1024;
    let server = backend
        .start_with(|c| {
            c.limits.max_body_bytes = MIB;
            c.limits.max_buffered_bytes = MIB;
        })
        .await;
    let addr = server.url.trim_start_matches("http://").to_owned();
    let api = server.api("tok-a");

    // A slow client holds 768 KiB of a push that it has not finished sending.
    let mut slow = TcpStream::connect(&addr).await.expect("connect");
    slow.write_all(push_head(&addr, "store-a", "tok-a", None).as_bytes())
        .await
        .expect("write");
    for _ in 0..3 {
        slow.write_all(&chunk(&vec![b' '; 256 * 1024]))
            .await
            .expect("write");
    }
    eventually("the slow body is read", || {
        running(&server).buffered_bytes() >= 768 * 1024
    })
    .await;

    // Meanwhile, another push of 512 KiB would take the server past its budget: 503, to
    // be retried, and nothing is written.
    let data = "y".repeat(500 * 1024);
    let big = push_body(vec![event("big", "T", json!(data))]);
    let answer = api.push("store-a", &big).await;
    answer.assert_error(503, "BUSY");
    assert_eq!(answer.headers["retry-after"], "1");
    // A small push still fits.
    api.push_ok("store-a", vec![event("small", "T", json!(1))])
        .await;

    // The slow client finishes; its push is answered and its bytes are given back.
    let end = br#"{"clientId":"slow","events":[]}"#;
    slow.write_all(&chunk(end)).await.expect("write");
    slow.write_all(b"0\r\n\r\n").await.expect("write");
    let (status, _, body) = read_response(&mut slow).await;
    assert_eq!(status, 200, "{body}");
    eventually("the budget is free again", || {
        running(&server).buffered_bytes() == 0
    })
    .await;
    // Now the retry goes through.
    let retried = api.push("store-a", &big).await;
    assert_eq!(retried.assert_ok()["head"], 2);
    assert_alive(&server).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// JSON

async fn deeply_nested_json_is_refused_without_overflow(backend: Backend) {
    let server = start(&backend).await;
    let api = server.api("tok-a");
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let objects = |n: usize| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
    let with = |field: &str, value: &str| {
        format!(
            r#"{{"clientId":"c","events":[{{"id":"{}","stream":"s","type":"T","data":0,"time":1,"{field}":{value}}}]}}"#,
            new_id()
        )
    };
    let with_data = |value: &str| {
        format!(
            r#"{{"clientId":"c","events":[{{"id":"{}","stream":"s","type":"T","data":{value},"time":1}}]}}"#,
            new_id()
        )
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "data: 100k nested arrays",
            with_data(&nested(100_000)),
            "INVALID_EVENT",
        ),
        (
            "data: 65 nested arrays",
            with_data(&nested(65)),
            "INVALID_EVENT",
        ),
        (
            "data: 100k nested objects",
            with_data(&objects(100_000)),
            "INVALID_EVENT",
        ),
        (
            "meta: 100k nested objects",
            with("meta", &objects(100_000)),
            "INVALID_EVENT",
        ),
        (
            "meta: an object over 100k nested arrays",
            with("meta", &format!(r#"{{"a":{}}}"#, nested(100_000))),
            "INVALID_EVENT",
        ),
        (
            "expectedVersion: 100k nested arrays",
            with("expectedVersion", &nested(100_000)),
            "INVALID_REQUEST",
        ),
        (
            "an unknown field holding 100k nested arrays",
            with("extra", &nested(100_000)),
            "INVALID_REQUEST",
        ),
        (
            "clientId: 100k nested arrays",
            format!(r#"{{"clientId":{},"events":[]}}"#, nested(100_000)),
            "INVALID_REQUEST",
        ),
        (
            "events: 100k nested arrays",
            format!(r#"{{"clientId":"c","events":{}}}"#, nested(100_000)),
            "INVALID_REQUEST",
        ),
        (
            "the body: 1M nested arrays",
            nested(1_000_000),
            "INVALID_REQUEST",
        ),
        (
            "the body: 500k nested objects",
            objects(500_000),
            "INVALID_REQUEST",
        ),
    ];
    for (what, body, code) in cases {
        let answer = api.push_raw("store-a", body).await;
        assert_eq!(answer.status, 400, "{what}: {:#}", answer.body);
        assert_eq!(
            answer.body["error"]["code"], code,
            "{what}: {:#}",
            answer.body
        );
        assert_alive(&server).await;
    }
    assert_eq!(contents(&server, "store-a").await.0, 0, "nothing written");
    // 64 levels (the default limit) are fine in data and in meta.
    let ok = format!(
        r#"{{"clientId":"c","events":[{{"id":"{}","stream":"s","type":"T","data":{},"meta":{{"a":{}}},"time":1}}]}}"#,
        new_id(),
        nested(64),
        nested(63)
    );
    api.push_raw("store-a", ok).await.assert_ok();
    let (_, events) = contents(&server, "store-a").await;
    assert_eq!(events[0]["data"].to_string(), nested(64));
    assert_alive(&server).await;
    server.stop().await;
}

async fn json_that_not_every_reader_accepts_is_refused(backend: Backend) {
    let server = start(&backend).await;
    let api = server.api("tok-a");
    let one = |data: &str| {
        format!(
            r#"{{"clientId":"c","events":[{{"id":"{}","stream":"s","type":"T","data":{data},"time":1}}]}}"#,
            new_id()
        )
    };
    let good = one("1");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // Valid JSON text that a strict parser (serde_json::Value, and so every Rust reader
        // of the log) refuses: stored, it would poison every later pull.
        ("a lone high surrogate", one(r#""\ud800""#).into(), "INVALID_EVENT"),
        ("a lone low surrogate", one(r#"["\udfff"]"#).into(), "INVALID_EVENT"),
        ("a reversed pair", one(r#""\udc00\ud800""#).into(), "INVALID_EVENT"),
        ("a number out of range", one("1e999").into(), "INVALID_EVENT"),
        ("a negative one", one(r#"{"n":-2E+400}"#).into(), "INVALID_EVENT"),
        // Malformed bodies.
        ("NaN", one("NaN").into(), "INVALID_REQUEST"),
        ("Infinity", one("Infinity").into(), "INVALID_REQUEST"),
        ("a trailing comma", one("[1,]").into(), "INVALID_REQUEST"),
        ("a comment", one("/* x */ 1").into(), "INVALID_REQUEST"),
        ("single quotes", one("'x'").into(), "INVALID_REQUEST"),
        ("a raw control character", one("\"a\u{1}b\"").into(), "INVALID_REQUEST"),
        ("a bad escape", one(r#""\x41""#).into(), "INVALID_REQUEST"),
        ("a short \\u escape", one(r#""\u12""#).into(), "INVALID_REQUEST"),
        (
            "bytes that are not UTF-8",
            [
                format!(
                    r#"{{"clientId":"c","events":[{{"id":"{}","stream":"s","type":"T","time":1,"data":""#,
                    new_id()
                )
                .as_bytes(),
                &[0xc3, 0x28],
                br#""}]}"#,
            ]
            .concat(),
            "INVALID_REQUEST",
        ),
        (
            "a byte order mark",
            [b"\xef\xbb\xbf".as_slice(), good.as_bytes()].concat(),
            "INVALID_REQUEST",
        ),
        (
            "trailing garbage",
            format!("{good} {{}}").into(),
            "INVALID_REQUEST",
        ),
        (
            "a repeated field",
            r#"{"clientId":"a","clientId":"b","events":[]}"#.into(),
            "INVALID_REQUEST",
        ),
        ("truncated", good[..good.len() - 3].into(), "INVALID_REQUEST"),
        ("NUL bytes", vec![0u8; 1000], "INVALID_REQUEST"),
        ("only whitespace", b"   \n\t ".to_vec(), "INVALID_REQUEST"),
    ];
    for (what, body, code) in cases {
        let answer = api.push_raw("store-a", body).await;
        assert_eq!(answer.status, 400, "{what}: {:#}", answer.body);
        assert_eq!(
            answer.body["error"]["code"], code,
            "{what}: {:#}",
            answer.body
        );
    }
    assert_eq!(contents(&server, "store-a").await.0, 0, "nothing written");
    // Paired surrogates, escaped NULs and big but finite numbers are fine, and read back
    // as they were sent.
    let fine = r#"{"emoji":"\ud83d\ude00","nul":"\u0000","big":1.5e308,"long":123456789012345678901234567890}"#;
    api.push_raw("store-a", one(fine)).await.assert_ok();
    let (_, events) = contents(&server, "store-a").await;
    assert_eq!(events[0]["data"]["emoji"], "😀");
    assert_alive(&server).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Floods

async fn a_flood_from_one_token_gets_429_with_retry_after(backend: Backend) {
    count_panics();
    // Ten requests per token, then one every 1,000 s: nothing refills during the test, so
    // every count below is exact.
    let server = backend
        .start_with(|c| {
            c.rate_limit = Some(RateLimit {
                per_second: 0.001,
                burst: 10,
            })
        })
        .await;
    let a = server.api("tok-a");

    // 50 requests at once from tok-a: exactly 10 get through.
    let flood = futures::future::join_all((0..50).map(|i| {
        let a = a.clone();
        async move {
            if i % 2 == 0 {
                a.push("store-a", &push_body(vec![event("flood", "F", json!(i))]))
                    .await
            } else {
                a.pull("store-a", "after=0").await
            }
        }
    }))
    .await;
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    for answer in &flood {
        *by_status.entry(answer.status).or_default() += 1;
        if answer.status == 429 {
            answer.assert_error(429, "RATE_LIMITED");
            let retry: u64 = answer.headers["retry-after"]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("whole seconds");
            assert!((1..=1000).contains(&retry), "Retry-After {retry}");
        }
    }
    assert_eq!(by_status, HashMap::from([(200, 10), (429, 40)]));
    let written = flood
        .iter()
        .filter(|a| a.status == 200 && a.body.get("results").is_some())
        .count() as u64;
    // Only the admitted pushes wrote anything.
    assert_eq!(contents(&server, "store-a").await.0, written);

    // Refused requests stay refused: a push, a pull, a long poll, even one to a store the
    // token does not grant (the rate is counted before the store is looked at).
    a.push("store-a", &push_body(vec![event("flood", "F", json!(0))]))
        .await
        .assert_error(429, "RATE_LIMITED");
    a.pull("store-a", "after=0&wait=5")
        .await
        .assert_error(429, "RATE_LIMITED");
    a.pull("store-b", "")
        .await
        .assert_error(429, "RATE_LIMITED");
    assert_eq!(contents(&server, "store-a").await.0, written);

    // Other tokens have their own buckets; unknown tokens are 401, not 429.
    let b = server.api("tok-b");
    b.push_ok("store-b", vec![event("b", "B", json!(1))]).await;
    server
        .api("tok-nope")
        .pull("store-a", "")
        .await
        .assert_error(401, "UNAUTHORIZED");

    // A long poll counts once, however long it waits: with tok-b's 9 requests left, a
    // long poll that times out, then 8 requests go through, and the next is refused.
    let polled = b.pull("store-b", "after=1&wait=1.5").await;
    assert_eq!(polled.assert_ok()["events"], json!([]));
    for _ in 0..8 {
        b.pull("store-b", "after=0").await.assert_ok();
    }
    b.pull("store-b", "after=0")
        .await
        .assert_error(429, "RATE_LIMITED");
    // Health is not rate limited.
    for _ in 0..20 {
        server.anonymous().get("/health").await.assert_ok();
    }
    assert_alive(&server).await;
    server.stop().await;
}

async fn long_polls_are_capped_per_token_and_overall(backend: Backend) {
    count_panics();
    let server = backend
        .start_with(|c| {
            c.limits.max_long_polls_per_token = 2;
            c.limits.max_long_polls = 3;
        })
        .await;
    let a = server.api("tok-a");
    let b = server.api("tok-b");
    let admin = server.api("tok-all");
    let polls = || running(&server).long_polls();

    // Two long polls of tok-a wait (store-a is empty).
    let a1 = tokio::spawn({
        let a = a.clone();
        async move { a.pull("store-a", "after=0&wait=30").await }
    });
    let a2 = tokio::spawn({
        let a = a.clone();
        async move { a.pull("store-a", "after=0&wait=30").await }
    });
    eventually("two long polls wait", || polls() == 2).await;
    // A third of tok-a's is refused, with a JSON error and Retry-After.
    let third = a.pull("store-a", "after=0&wait=30").await;
    third.assert_error(429, "RATE_LIMITED");
    assert_eq!(third.headers["retry-after"], "1");
    // Pulls that do not wait are not capped.
    a.pull("store-a", "after=0").await.assert_ok();

    // tok-b takes the last slot of the server; past it everybody gets 503.
    let b1 = tokio::spawn({
        let b = b.clone();
        async move { b.pull("store-b", "after=0&wait=30").await }
    });
    eventually("three long polls wait", || polls() == 3).await;
    let full = b.pull("store-b", "after=0&wait=30").await;
    full.assert_error(503, "BUSY");
    assert_eq!(full.headers["retry-after"], "1");
    admin
        .pull("store-c", "after=0&wait=30")
        .await
        .assert_error(503, "BUSY");

    // Events end the waits; every slot is free again.
    admin
        .push_ok("store-a", vec![event("s", "T", json!(1))])
        .await;
    admin
        .push_ok("store-b", vec![event("s", "T", json!(1))])
        .await;
    for poll in [a1, a2, b1] {
        let answer = poll.await.expect("task");
        assert_eq!(
            answer.assert_ok()["events"].as_array().map(Vec::len),
            Some(1)
        );
    }
    eventually("no long poll left", || polls() == 0).await;

    // A waiting client that hangs up gives its slot back too.
    let hung = tokio::spawn({
        let a = a.clone();
        async move { a.pull("store-a", "after=1&wait=30").await }
    });
    eventually("one long poll waits", || polls() == 1).await;
    hung.abort();
    let _ = hung.await;
    eventually("the hung-up long poll is gone", || polls() == 0).await;
    for _ in 0..2 {
        a.pull("store-a", "after=0&wait=1").await.assert_ok();
    }
    assert_alive(&server).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Protocol versions

async fn other_protocol_versions_get_a_json_404_naming_v1(backend: Backend) {
    count_panics();
    // With static files served, so that nothing falls through to index.html.
    let www = std::env::temp_dir().join(format!("annals-www-{}", server_common::random_hex(6)));
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("index.html"), "<!doctype html><p>demo</p>").expect("index");
    let server = backend.start_with(|c| c.www = Some(www.clone())).await;
    let api = server.api("tok-a");
    let body = push_body(vec![event("s", "T", json!(1))]);

    for path in [
        "/v2/stores/store-a/push",
        "/v0/stores/store-a/push",
        "/v10/stores/store-a/push",
        "/v01/stores/store-a/push",
        "/v2",
    ] {
        let answer = api
            .send(
                api.http
                    .post(format!("{}{path}", server.url))
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&body).expect("json")),
            )
            .await;
        answer.assert_error(404, "UNSUPPORTED_VERSION");
        let message = answer.body["error"]["message"].as_str().expect("message");
        assert!(message.contains("v1"), "{message}");
        let pulled = api.get(&path.replace("push", "pull")).await;
        pulled.assert_error(404, "UNSUPPORTED_VERSION");
    }
    // Unknown routes of v1 say which routes v1 has.
    for path in ["/v1/stores/store-a/append", "/v1/events", "/v1/", "/v1"] {
        let answer = api.get(path).await;
        answer.assert_error(404, "NOT_FOUND");
        let message = answer.body["error"]["message"].as_str().expect("message");
        assert!(
            message.contains("/v1/stores/{store}/push"),
            "{path}: {message}"
        );
    }
    // Nothing was written; the app and its routes are still served.
    assert_eq!(contents(&server, "store-a").await.0, 0);
    let page = reqwest::get(format!("{}/some/page", server.url))
        .await
        .expect("page");
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.expect("text").contains("demo"));
    let page = reqwest::get(format!("{}/v1beta/page", server.url))
        .await
        .expect("page");
    assert_eq!(page.status().as_u16(), 200, "not a version, a page");
    api.push_ok("store-a", vec![event("s", "T", json!(1))])
        .await;
    assert_alive(&server).await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&www);
}
