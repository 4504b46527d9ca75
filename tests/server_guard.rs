//! What the server refuses, on SQLite and on PostgreSQL: missing and foreign tokens
//! (401/403, nothing crosses stores), every limit (413) and malformed input (400), each
//! with a JSON error body and nothing written.
#![cfg(feature = "server")]

#[macro_use]
mod server_common;

use serde_json::{json, Value};
use server_common::{event, new_id, push_body, Api, Backend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

on_every_backend!(
    tokens_are_required_and_grant_only_their_stores,
    every_limit_answers_413_and_writes_nothing,
    configured_limits_apply,
    malformed_pushes_answer_400_and_write_nothing,
    bad_paths_and_query_parameters_answer_json_errors,
);

async fn tokens_are_required_and_grant_only_their_stores(backend: Backend) {
    let server = backend.start().await;
    let a = server.api("tok-a");
    let b = server.api("tok-b");
    a.push_ok("store-a", vec![event("secret", "A", json!("for a only"))])
        .await;
    b.push_ok("store-b", vec![event("s", "B", json!("for b only"))])
        .await;

    let body = push_body(vec![event("s", "X", json!(0))]);
    // 401: no token, unknown token, another scheme.
    let anonymous = server.anonymous();
    anonymous
        .push("store-a", &body)
        .await
        .assert_error(401, "UNAUTHORIZED");
    anonymous
        .pull("store-a", "")
        .await
        .assert_error(401, "UNAUTHORIZED");
    let unknown = server.api("tok-nope");
    let answer = unknown.pull("store-a", "");
    let answer = answer.await;
    answer.assert_error(401, "UNAUTHORIZED");
    assert!(answer.headers.contains_key("www-authenticate"));
    unknown
        .push("store-a", &body)
        .await
        .assert_error(401, "UNAUTHORIZED");
    let basic = anonymous
        .send(
            anonymous
                .http
                .get(format!("{}/v1/stores/store-a/pull", server.url))
                .header("authorization", "Basic dG9rLWE6"),
        )
        .await;
    basic.assert_error(401, "UNAUTHORIZED");

    // 403: a known token, a store it does not grant.
    a.push("store-b", &body)
        .await
        .assert_error(403, "FORBIDDEN");
    a.pull("store-b", "").await.assert_error(403, "FORBIDDEN");
    b.pull("store-a", "after=0&wait=1")
        .await
        .assert_error(403, "FORBIDDEN");
    let read_only = server.api("tok-ro");
    read_only
        .push("store-a", &body)
        .await
        .assert_error(403, "FORBIDDEN");
    assert_eq!(read_only.pull_all("store-a").await.len(), 1);

    // Nothing crossed: each store holds its own event only.
    let in_a = a.pull_all("store-a").await;
    let in_b = b.pull_all("store-b").await;
    assert_eq!(in_a.len(), 1);
    assert_eq!(in_a[0]["data"], "for a only");
    assert_eq!(in_b.len(), 1);
    assert_eq!(in_b[0]["data"], "for b only");
    // Nothing leaks through a 403 either.
    let refused = a.pull("store-b", "").await;
    assert!(refused.body.get("events").is_none());
    assert!(!refused.body.to_string().contains("for b only"));
    server.stop().await;
}

/// A push of `n` events, each with `data_bytes` bytes of data.
fn big_push(n: usize, data_bytes: usize) -> Value {
    let data = "x".repeat(data_bytes.saturating_sub(2)); // the quotes count too
    push_body((0..n).map(|_| event("s", "T", json!(data))).collect())
}

async fn assert_nothing_written(api: &Api, store: &str) {
    let answer = api.pull(store, "after=0").await;
    let body = answer.assert_ok();
    assert_eq!(body["head"], 0, "{body}");
    assert_eq!(body["events"], json!([]));
}

async fn every_limit_answers_413_and_writes_nothing(backend: Backend) {
    // The defaults: 4 MiB body, 1,000 events per push, 1 MiB per event.
    let server = backend.start().await;
    let api = server.api("tok-a");

    // One event of 1 MiB + 1 byte (stream "s" + type "T" + data + no meta).
    let over = 1024 * 1024 + 1 - 2;
    api.push("store-a", &big_push(1, over))
        .await
        .assert_error(413, "TOO_LARGE");
    // ... exactly at the limit is fine (in another store, to keep store-a empty).
    let at = server.api("tok-all");
    at.push("store-c", &big_push(1, 1024 * 1024 - 2))
        .await
        .assert_ok();

    // 1,001 events.
    api.push("store-a", &big_push(1001, 10))
        .await
        .assert_error(413, "TOO_LARGE");
    at.push("store-c", &big_push(1000, 10)).await.assert_ok();

    // A body over 4 MiB (each event under its own limit).
    let body = big_push(5, 900 * 1024);
    assert!(serde_json::to_vec(&body).expect("json").len() > 4 * 1024 * 1024);
    api.push("store-a", &body)
        .await
        .assert_error(413, "TOO_LARGE");

    // The same without Content-Length (chunked), so it is caught while streaming.
    let (status, text) = chunked_push(&server.url, "store-a", "tok-a", 5 * 1024 * 1024).await;
    assert_eq!(status, 413, "{text}");
    let error: Value = serde_json::from_str(&text).expect("JSON error body");
    assert_eq!(error["error"]["code"], "TOO_LARGE");

    assert_nothing_written(&api, "store-a").await;
    server.stop().await;
}

async fn configured_limits_apply(backend: Backend) {
    let server = backend
        .start_with(|c| {
            c.limits.max_body_bytes = 64 * 1024;
            c.limits.max_events_per_push = 10;
            c.limits.max_event_bytes = 1000;
        })
        .await;
    let api = server.api("tok-a");
    api.push("store-a", &big_push(11, 10))
        .await
        .assert_error(413, "TOO_LARGE");
    api.push("store-a", &big_push(1, 1000))
        .await
        .assert_error(413, "TOO_LARGE");
    api.push("store-a", &big_push(2, 40 * 1024))
        .await
        .assert_error(413, "TOO_LARGE");
    assert_nothing_written(&api, "store-a").await;
    // Within every limit.
    let ok = api.push("store-a", &big_push(10, 900)).await;
    assert_eq!(ok.assert_ok()["head"], 10);
    server.stop().await;
}

/// Sends a chunked push of `bytes` bytes by hand (no Content-Length), returning status
/// and body.
async fn chunked_push(base: &str, store: &str, token: &str, bytes: usize) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /v1/stores/{store}/push HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < bytes {
        let framed = [
            format!("{:x}\r\n", chunk.len()).into_bytes(),
            chunk.clone(),
            b"\r\n".to_vec(),
        ]
        .concat();
        // The server may answer and close before it has read everything.
        if stream.write_all(&framed).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    // The body itself may be chunked: keep the JSON object.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) if end > start => body[start..=end].to_owned(),
        _ => body.to_owned(),
    };
    (status, json)
}

async fn malformed_pushes_answer_400_and_write_nothing(backend: Backend) {
    let server = backend.start().await;
    let api = server.api("tok-a");
    let id = new_id();
    let good = |extra: &str| {
        format!(
            r#"{{"clientId":"c","events":[{{"id":"{id}","stream":"s","type":"T","data":{{}},"time":1{extra}}}]}}"#
        )
    };
    let one = |event: &str| format!(r#"{{"clientId":"c","events":[{event}]}}"#);
    let cases: Vec<(String, &str)> = vec![
        ("".into(), "INVALID_REQUEST"),
        ("not json".into(), "INVALID_REQUEST"),
        ("[]".into(), "INVALID_REQUEST"),
        (r#"{"clientId":"c"}"#.into(), "INVALID_REQUEST"),
        (r#"{"events":[]}"#.into(), "INVALID_REQUEST"),
        (r#"{"clientId":"","events":[]}"#.into(), "INVALID_REQUEST"),
        (r#"{"clientId":7,"events":[]}"#.into(), "INVALID_REQUEST"),
        (r#"{"clientId":"c","events":{}}"#.into(), "INVALID_REQUEST"),
        (
            r#"{"clientId":"c","events":[],"extra":1}"#.into(),
            "INVALID_REQUEST",
        ),
        (good("").replace("}]}", "}]"), "INVALID_REQUEST"), // truncated
        (
            one(r#"{"stream":"s","type":"T","data":1,"time":1}"#),
            "INVALID_REQUEST",
        ), // no id
        (
            one(r#"{"id":"not-a-uuid","stream":"s","type":"T","data":1,"time":1}"#),
            "INVALID_REQUEST",
        ),
        (
            one(&format!(
                r#"{{"id":"{id}","stream":5,"type":"T","data":1,"time":1}}"#
            )),
            "INVALID_REQUEST",
        ),
        (
            one(&format!(
                r#"{{"id":"{id}","stream":"s","type":"T","time":1}}"#
            )),
            "INVALID_REQUEST",
        ), // no data
        (
            one(&format!(
                r#"{{"id":"{id}","stream":"s","type":"T","data":1}}"#
            )),
            "INVALID_REQUEST",
        ), // no time
        (
            one(&format!(
                r#"{{"id":"{id}","stream":"s","type":"T","data":1,"time":-5}}"#
            )),
            "INVALID_REQUEST",
        ),
        (
            one(&format!(
                r#"{{"id":"{id}","stream":"s","type":"T","data":1,"time":1.5}}"#
            )),
            "INVALID_REQUEST",
        ),
        (
            one(&format!(
                r#"{{"id":"{id}","stream":"s","type":"T","data":1,"time":1,"expectedVersion":"later"}}"#
            )),
            "INVALID_REQUEST",
        ),
        (
            one(&format!(
                r#"{{"id":"{id}","stream":"s","type":"T","data":1,"time":1,"expectedVersion":-1}}"#
            )),
            "INVALID_REQUEST",
        ),
        (
            one(&format!(
                r#"{{"id":"{id}","stream":"s","type":"T","data":1,"time":1,"pending":true}}"#
            )),
            "INVALID_REQUEST",
        ),
        (
            one(&format!(
                r#"{{"id":"{id}","stream":"","type":"T","data":1,"time":1}}"#
            )),
            "INVALID_EVENT",
        ),
        (
            one(&format!(
                r#"{{"id":"{id}","stream":"s","type":"  ","data":1,"time":1}}"#
            )),
            "INVALID_EVENT",
        ),
        (
            one(&format!(
                r#"{{"id":"{id}","stream":"s\u0000","type":"T","data":1,"time":1}}"#
            )),
            "INVALID_EVENT",
        ),
        (good(r#","meta":[1]"#), "INVALID_EVENT"),
        (good(r#","meta":"text""#), "INVALID_EVENT"),
        (
            one(&format!(
                r#"{{"id":"{id}","stream":"s","type":"T","data":1,"time":9007199254740992}}"#
            )),
            "INVALID_EVENT",
        ),
        (
            format!(
                r#"{{"clientId":"c","events":[{},{}]}}"#,
                r#"{"id":"0190a4c1-7d2e-7c3a-9f10-2b3c4d5e6f70","stream":"s","type":"T","data":1,"time":1}"#,
                format_args!(r#"{{"id":"{id}","stream":"s","type":"","data":1,"time":1}}"#)
            ),
            "INVALID_EVENT",
        ), // a good event before a bad one: nothing is written
        (
            format!(r#"{{"clientId":"{}","events":[]}}"#, "c".repeat(2000)),
            "INVALID_REQUEST",
        ),
        (
            one(&format!(
                r#"{{"id":"{id}","stream":"{}","type":"T","data":1,"time":1}}"#,
                "s".repeat(2000)
            )),
            "INVALID_EVENT",
        ),
    ];
    for (body, code) in cases {
        let answer = api.push_raw("store-a", body.clone()).await;
        assert_eq!(answer.status, 400, "{body}: {:#}", answer.body);
        assert_eq!(
            answer.body["error"]["code"], code,
            "{body}: {:#}",
            answer.body
        );
    }
    // Not UTF-8.
    api.push_raw("store-a", vec![0xff, 0xfe, b'{'])
        .await
        .assert_error(400, "INVALID_REQUEST");
    assert_nothing_written(&api, "store-a").await;
    // The good body really is good.
    api.push_raw("store-a", good("")).await.assert_ok();
    server.stop().await;
}

async fn bad_paths_and_query_parameters_answer_json_errors(backend: Backend) {
    let server = backend.start().await;
    let api = server.api("tok-all");
    for query in [
        "after=-1",
        "after=abc",
        "after=1.5",
        "limit=0",
        "limit=-1",
        "limit=ten",
        "wait=-1",
        "wait=abc",
        "wait=NaN",
    ] {
        let answer = api.pull("store-a", query).await;
        assert_eq!(answer.status, 400, "{query}");
        answer.assert_error(400, "INVALID_REQUEST");
    }
    // Bad store names.
    let long = "x".repeat(129);
    for store in ["bad%20name", "a%2Fb", "%C3%A9", long.as_str(), ".."] {
        let answer = api.pull(store, "").await;
        assert!(
            answer.status == 400 || answer.status == 404,
            "{store}: {}",
            answer.status
        );
        if answer.status == 400 {
            answer.assert_error(400, "INVALID_REQUEST");
        }
        let answer = api.push(store, &push_body(vec![])).await;
        assert!(answer.status == 400 || answer.status == 404, "{store}");
    }
    api.pull("bad%20name", "")
        .await
        .assert_error(400, "INVALID_REQUEST");
    api.pull(&long, "")
        .await
        .assert_error(400, "INVALID_REQUEST");
    // Unknown routes and methods under /v1 answer JSON, not the static fallback.
    api.get("/v1/nope").await.assert_error(404, "NOT_FOUND");
    api.get("/v1/stores/store-a/push")
        .await
        .assert_error(405, "METHOD_NOT_ALLOWED");
    api.get("/nothing-here")
        .await
        .assert_error(404, "NOT_FOUND");
    // An empty push is fine and creates nothing but the store.
    let empty = api.push("store-a", &push_body(vec![])).await;
    assert_eq!(empty.assert_ok()["results"], json!([]));
    assert_eq!(empty.body["head"], 0);
    server.stop().await;
}
