//! The sync API's semantics on a real server, on SQLite and on PostgreSQL:
//! push/pull round trip, gapless positions under concurrency, idempotent retries,
//! expected-version conflicts (final for the event they judged), long polls, and restarts.
#![cfg(feature = "server")]

#[macro_use]
mod server_common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use server_common::{event, event_expecting, Backend};

on_every_backend!(
    push_then_pull_round_trips_every_field,
    concurrent_pushes_get_unique_gapless_positions,
    a_retried_push_answers_duplicate_with_the_original_positions,
    a_reused_id_with_other_content_is_rejected_as_duplicate_id,
    a_version_conflict_rejects_that_event_only,
    deleted_streams_restart_with_no_stream_and_closed_ones_take_nothing,
    a_rejection_answers_every_retry_of_the_same_event,
    a_long_poll_answers_as_soon_as_an_event_lands,
    a_long_poll_times_out_empty,
    a_restart_keeps_every_acknowledged_event_and_the_epoch,
    stores_are_independent,
    a_pull_of_large_events_is_split_into_bounded_answers,
);

async fn push_then_pull_round_trips_every_field(backend: Backend) {
    let server = backend.start().await;
    let api = server.api("tok-a");

    let health = api.get("/health").await;
    assert_eq!(health.assert_ok()["status"], "ok");
    assert_eq!(health.body["backend"], backend.name());

    let mut first = event(
        "todo-1",
        "TodoAdded",
        json!({"title": "milk", "n": [1, 2.5, null]}),
    );
    first["meta"] = json!({"by": "me"});
    first["expectedVersion"] = json!("no_stream");
    first["time"] = json!(1_700_000_000_123u64);
    let second = event_expecting("todo-1", "TodoDone", json!(1));
    let third = event("todo-2", "TodoAdded", json!("plain string"));
    let pushed = api
        .push_ok(
            "store-a",
            vec![first.clone(), second.clone(), third.clone()],
        )
        .await;
    assert_eq!(
        pushed["results"],
        json!([
            {"id": first["id"], "status": "ok", "position": 1, "version": 1},
            {"id": second["id"], "status": "ok", "position": 2, "version": 2},
            {"id": third["id"], "status": "ok", "position": 3, "version": 1},
        ])
    );
    assert_eq!(pushed["head"], 3);
    let epoch = pushed["epoch"].as_str().expect("epoch");
    assert_eq!(epoch.len(), 32);

    let pulled = api.pull("store-a", "after=0").await;
    let body = pulled.assert_ok();
    assert_eq!(body["head"], 3);
    assert_eq!(body["epoch"], epoch);
    assert_eq!(body["more"], false);
    assert_eq!(
        body["events"][0],
        json!({
            "id": first["id"], "position": 1, "stream": "todo-1", "version": 1,
            "type": "TodoAdded", "data": {"title": "milk", "n": [1, 2.5, null]},
            "meta": {"by": "me"}, "time": 1_700_000_000_123u64, "origin": "test-client",
            "pending": false,
        })
    );
    assert_eq!(body["events"][1]["position"], 2);
    assert_eq!(body["events"][1]["type"], "TodoDone");
    assert!(body["events"][1].get("meta").is_none());
    assert_eq!(body["events"][2]["data"], "plain string");

    // Paging: `limit` and `more`.
    let page = api.pull("store-a", "after=1&limit=1").await;
    let page = page.assert_ok();
    assert_eq!(page["events"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["events"][0]["position"], 2);
    assert_eq!(page["more"], true);
    let tail = api.pull("store-a", "after=3").await;
    assert_eq!(tail.assert_ok()["events"], json!([]));
    assert_eq!(tail.body["more"], false);

    // Raw JSON payloads are returned byte for byte (no re-encoding of numbers or order).
    let raw = format!(
        r#"{{"clientId":"c","events":[{{"id":"{}","stream":"s","type":"T","data":{{"z":1,"a":1.50,"big":12345678901234567890}},"time":0}}]}}"#,
        server_common::new_id()
    );
    api.push_raw("store-a", raw).await.assert_ok();
    let res = api
        .http
        .get(format!("{}/v1/stores/store-a/pull?after=3", server.url))
        .bearer_auth("tok-a")
        .send()
        .await
        .expect("pull");
    let text = res.text().await.expect("text");
    assert!(
        text.contains(r#""data":{"z":1,"a":1.50,"big":12345678901234567890}"#),
        "{text}"
    );
    server.stop().await;
}

async fn concurrent_pushes_get_unique_gapless_positions(backend: Backend) {
    let server = backend.start().await;
    let api = server.api("tok-a");
    const TASKS: usize = 8;
    const PUSHES: usize = 10;
    const PER_PUSH: usize = 5;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for p in 0..PUSHES {
                let events: Vec<Value> = (0..PER_PUSH)
                    .map(|i| {
                        // Each task's own stream plus one stream everybody shares.
                        let stream = if i % 2 == 0 {
                            format!("own-{t}")
                        } else {
                            "shared".into()
                        };
                        event(&stream, "Tick", json!({"t": t, "p": p, "i": i}))
                    })
                    .collect();
                let ids: Vec<String> = events
                    .iter()
                    .map(|e| e["id"].as_str().unwrap_or_default().to_owned())
                    .collect();
                let answer = api.push_ok("store-a", events).await;
                for r in answer["results"].as_array().expect("results") {
                    assert_eq!(r["status"], "ok", "{r}");
                }
                sent.extend(ids);
            }
            sent
        }));
    }
    let mut sent = HashSet::new();
    for task in tasks {
        sent.extend(task.await.expect("task"));
    }
    let total = TASKS * PUSHES * PER_PUSH;
    assert_eq!(sent.len(), total);

    let events = api.pull_all("store-a").await;
    let positions: Vec<u64> = events
        .iter()
        .filter_map(|e| e["position"].as_u64())
        .collect();
    assert_eq!(positions, (1..=total as u64).collect::<Vec<_>>());
    let ids: HashSet<String> = events
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids, sent);
    // Every stream's versions are 1..n in position order.
    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in &events {
        versions
            .entry(e["stream"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push(e["version"].as_u64().unwrap_or(0));
    }
    for (stream, v) in versions {
        assert_eq!(v, (1..=v.len() as u64).collect::<Vec<_>>(), "{stream}");
    }
    server.stop().await;
}

async fn a_retried_push_answers_duplicate_with_the_original_positions(backend: Backend) {
    let server = backend.start().await;
    let api = server.api("tok-a");
    api.push_ok("store-a", vec![event("other", "X", json!(0))])
        .await;
    let a = event_expecting("s", "A", json!("no_stream"));
    let b = event_expecting("s", "B", json!(1));
    let first = api.push_ok("store-a", vec![a.clone(), b.clone()]).await;
    assert_eq!(first["head"], 3);

    // The response was "lost": the client retries the same batch plus a new event.
    let c = event("s", "C", json!(0));
    let retry = api
        .push_ok("store-a", vec![a.clone(), b.clone(), c.clone()])
        .await;
    assert_eq!(
        retry["results"],
        json!([
            {"id": a["id"], "status": "duplicate", "position": 2, "version": 1},
            {"id": b["id"], "status": "duplicate", "position": 3, "version": 2},
            {"id": c["id"], "status": "ok", "position": 4, "version": 3},
        ])
    );
    assert_eq!(retry["head"], 4);
    assert_eq!(retry["epoch"], first["epoch"]);

    // The same id twice in one push: the second is a duplicate of the first.
    let d = event("s", "D", json!(0));
    let twice = api.push_ok("store-a", vec![d.clone(), d.clone()]).await;
    assert_eq!(twice["results"][0]["status"], "ok");
    assert_eq!(
        twice["results"][1],
        json!({"id": d["id"], "status": "duplicate", "position": 5, "version": 4})
    );

    // A whole retried push that is all duplicates writes nothing.
    let again = api.push_ok("store-a", vec![a, b, c, d]).await;
    assert!(again["results"]
        .as_array()
        .expect("results")
        .iter()
        .all(|r| r["status"] == "duplicate"));
    assert_eq!(again["head"], 5);
    assert_eq!(api.pull_all("store-a").await.len(), 5);
    server.stop().await;
}

async fn a_reused_id_with_other_content_is_rejected_as_duplicate_id(backend: Backend) {
    let server = backend.start().await;
    let api = server.api("tok-a");
    let mut stored = event("s", "A", json!({"n": 1}));
    stored["meta"] = json!({"by": "me"});
    api.push_ok("store-a", vec![stored.clone()]).await;
    // The same event at another time and expectation: a retry.
    let mut retry = stored.clone();
    retry["time"] = json!(5);
    retry["expectedVersion"] = json!("no_stream");
    // The same id on another event: each differing field in turn.
    let mut others = Vec::new();
    for (field, value) in [
        ("stream", json!("t")),
        ("type", json!("B")),
        ("data", json!({"n": 2})),
        ("meta", json!({"by": "you"})),
        ("schemaVersion", json!(2)),
    ] {
        let mut other = stored.clone();
        other[field] = value;
        others.push(other);
    }
    let mut without_meta = stored.clone();
    without_meta
        .as_object_mut()
        .expect("an object")
        .remove("meta");
    others.push(without_meta);
    let fresh = event("s", "C", json!(0));
    // Within one push too: a new event, then its id on another event.
    let mut fresh_again = fresh.clone();
    fresh_again["data"] = json!("other");
    let mut batch = vec![retry];
    batch.extend(others);
    batch.push(fresh.clone());
    batch.push(fresh_again);
    let pushed = api.push_ok("store-a", batch).await;
    let results = pushed["results"].as_array().expect("results");
    assert_eq!(
        results[0],
        json!({"id": stored["id"], "status": "duplicate", "position": 1, "version": 1})
    );
    for r in &results[1..7] {
        assert_eq!(r["status"], "rejected", "{r}");
        assert!(
            r["reason"]
                .as_str()
                .is_some_and(|m| m.starts_with("DUPLICATE_ID: ") && m.contains("position 1")),
            "{r}"
        );
        assert!(r.get("actualVersion").is_none(), "{r}");
    }
    assert_eq!(results[7]["status"], "ok");
    assert_eq!(results[8]["status"], "rejected");
    assert_eq!(pushed["head"], 2);
    let log = api.pull_all("store-a").await;
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["data"], json!({"n": 1}));
    assert_eq!(log[1]["data"], json!(0));
    // Names an append refuses, the push refuses too (the whole push: 400, nothing written).
    for (stream, event_type) in [
        (" s", "A"),
        ("s", "A\n"),
        ("s\u{7}", "A"),
        ("$s", "A"),
        ("s", "$A"),
    ] {
        let answer = api
            .push(
                "store-a",
                &server_common::push_body(vec![event(stream, event_type, json!(0))]),
            )
            .await;
        answer.assert_error(400, "INVALID_EVENT");
    }
    assert_eq!(api.pull_all("store-a").await.len(), 2);
    server.stop().await;
}

async fn deleted_streams_restart_with_no_stream_and_closed_ones_take_nothing(backend: Backend) {
    let server = backend.start().await;
    let api = server.api("tok-a");
    let statuses = |answer: &Value| -> Vec<String> {
        answer["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| match r["reason"].as_str() {
                Some(reason) => reason.split(':').next().unwrap_or_default().to_owned(),
                None => r["status"].as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    };
    // Within one push: a stream created, deleted, restarted with no_stream, then closed.
    let first = api
        .push_ok(
            "store-a",
            vec![
                event_expecting("cart", "Opened", json!("no_stream")),
                event_expecting("cart", "$StreamDeleted", json!(1)),
                event_expecting("cart", "Opened", json!("no_stream")),
                event_expecting("cart", "Added", json!("no_stream")), // no longer just deleted
                event_expecting("order", "Placed", json!("no_stream")),
                event_expecting("order", "$StreamClosed", json!(1)),
                event_expecting("order", "Amended", json!("any")),
            ],
        )
        .await;
    assert_eq!(
        statuses(&first),
        [
            "ok",
            "ok",
            "ok",
            "wrong expected version on stream `cart`",
            "ok",
            "ok",
            "STREAM_DELETED"
        ]
    );
    assert_eq!(first["results"][6]["actualVersion"], 2);
    // In later pushes the stored state rules: the deleted-then-restarted stream counts on,
    // a new delete lets no_stream start it again, the closed one takes nothing.
    let later = api
        .push_ok(
            "store-a",
            vec![
                event_expecting("order", "Amended", json!(2)),
                event_expecting("order", "$StreamDeleted", json!("any")),
                event_expecting("cart", "$StreamDeleted", json!(3)),
            ],
        )
        .await;
    assert_eq!(statuses(&later), ["STREAM_DELETED", "STREAM_DELETED", "ok"]);
    let again = api
        .push_ok(
            "store-a",
            vec![event_expecting("cart", "Opened", json!("no_stream"))],
        )
        .await;
    assert_eq!(statuses(&again), ["ok"]);
    assert_eq!(again["results"][0]["version"], 5);
    let log = api.pull_all("store-a").await;
    assert_eq!(log.len(), 7, "nothing refused was written");
    server.stop().await;
}

async fn a_version_conflict_rejects_that_event_only(backend: Backend) {
    let server = backend.start().await;
    let api = server.api("tok-a");
    api.push_ok(
        "store-a",
        vec![
            event_expecting("acct", "Opened", json!("no_stream")),
            event_expecting("acct", "Deposited", json!(1)),
        ],
    )
    .await;

    let stale = event_expecting("acct", "Withdrawn", json!(1));
    let fine = event_expecting("acct", "Deposited", json!(2));
    let after_fine = event_expecting("acct", "Deposited", json!(3));
    let absent = event_expecting("nope", "Touched", json!("exists"));
    let again = event_expecting("acct", "Opened", json!("no_stream"));
    let answer = api
        .push_ok(
            "store-a",
            vec![
                stale.clone(),
                fine.clone(),
                after_fine.clone(),
                absent.clone(),
                again.clone(),
            ],
        )
        .await;
    let results = &answer["results"];
    assert_eq!(results[0]["status"], "rejected");
    assert_eq!(results[0]["id"], stale["id"]);
    assert_eq!(results[0]["actualVersion"], 2);
    assert!(results[0]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("expected 1, actual 2")));
    assert!(results[0].get("position").is_none());
    assert_eq!(
        results[1],
        json!({"id": fine["id"], "status": "ok", "position": 3, "version": 3})
    );
    // The check sees the earlier events of the same push.
    assert_eq!(
        results[2],
        json!({"id": after_fine["id"], "status": "ok", "position": 4, "version": 4})
    );
    assert_eq!(results[3]["status"], "rejected");
    assert_eq!(results[3]["actualVersion"], 0);
    assert_eq!(results[4]["status"], "rejected");
    assert_eq!(results[4]["actualVersion"], 4);
    assert_eq!(answer["head"], 4);

    let events = api.pull_all("store-a").await;
    assert_eq!(events.len(), 4);
    assert!(events
        .iter()
        .all(|e| e["id"] != stale["id"] && e["id"] != absent["id"]));

    // A rejected id was not stored: resent with the right expectation, it is accepted.
    let mut fixed = stale.clone();
    fixed["expectedVersion"] = json!(4);
    let answer = api.push_ok("store-a", vec![fixed]).await;
    assert_eq!(
        answer["results"][0],
        json!({"id": stale["id"], "status": "ok", "position": 5, "version": 5})
    );
    server.stop().await;
}

/// Regression (found by the deterministic simulation): a push whose rejection was lost, or
/// a late copy of it, used to be judged again; once the stream had reached the expected
/// version the rejected event was stored, after the client had been told (or would be
/// told) it was refused, and after events it had appended later. A verdict is now final
/// for the event it judged, across restarts; the id appended anew is judged afresh.
async fn a_rejection_answers_every_retry_of_the_same_event(backend: Backend) {
    let server = backend.start().await;
    let api = server.api("tok-a");
    let early = event_expecting("s", "Late", json!(2));
    let first = api.push_ok("store-a", vec![early.clone()]).await;
    assert_eq!(first["results"][0]["status"], "rejected");
    assert_eq!(first["results"][0]["actualVersion"], 0);
    // The stream reaches version 2 meanwhile.
    api.push_ok(
        "store-a",
        vec![event("s", "A", json!(1)), event("s", "B", json!(2))],
    )
    .await;
    let retry = api.push_ok("store-a", vec![early.clone()]).await;
    assert_eq!(retry["results"], first["results"], "the same answer");
    assert_eq!(retry["head"], 2, "nothing written");
    server.stop().await;

    let server = backend.start().await;
    let api = server.api("tok-a");
    let other = event("t", "C", json!(3));
    let late_copy = api
        .push_ok("store-a", vec![early.clone(), other.clone(), early.clone()])
        .await;
    assert_eq!(late_copy["results"][0], first["results"][0]);
    assert_eq!(late_copy["results"][1]["status"], "ok");
    assert_eq!(late_copy["results"][2], first["results"][0]);
    assert!(api
        .pull_all("store-a")
        .await
        .iter()
        .all(|e| e["id"] != early["id"]));

    // Appended again under the same id (a new time): a new event, judged now.
    let mut anew = early.clone();
    anew["time"] = json!(1_700_000_000_001u64);
    let answer = api.push_ok("store-a", vec![anew]).await;
    assert_eq!(
        answer["results"][0],
        json!({"id": early["id"], "status": "ok", "position": 4, "version": 3})
    );
    server.stop().await;
}

async fn a_long_poll_answers_as_soon_as_an_event_lands(backend: Backend) {
    let server = backend.start().await;
    let api = server.api("tok-a");
    api.push_ok("store-a", vec![event("s", "First", json!(1))])
        .await;

    // Something is already after `after`: no waiting.
    let started = Instant::now();
    let answer = api.pull("store-a", "after=0&wait=20").await;
    assert_eq!(
        answer.assert_ok()["events"].as_array().map(Vec::len),
        Some(1)
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    let poller = {
        let api = api.clone();
        tokio::spawn(async move {
            let answer = api.pull("store-a", "after=1&wait=20").await;
            (answer, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !poller.is_finished(),
        "the long poll answered before any event"
    );
    let landed = event("s", "Second", json!(2));
    api.push_ok("store-a", vec![landed.clone()]).await;
    let pushed_at = Instant::now();
    let (answer, answered_at) = poller.await.expect("poller");
    let body = answer.assert_ok();
    assert_eq!(body["events"][0]["id"], landed["id"]);
    assert_eq!(body["events"][0]["position"], 2);
    assert!(
        answered_at.saturating_duration_since(pushed_at) < Duration::from_secs(2),
        "woke {:?} after the push",
        answered_at.saturating_duration_since(pushed_at)
    );

    // A push to another store does not answer this store's poll.
    let other = server.api("tok-all");
    let poller = {
        let api = api.clone();
        tokio::spawn(async move { api.pull("store-a", "after=2&wait=1.5").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    other
        .push_ok("store-z", vec![event("s", "Elsewhere", json!(0))])
        .await;
    let answer = poller.await.expect("poller");
    assert_eq!(answer.assert_ok()["events"], json!([]));

    // Shutting down ends waiting polls at once (with an empty answer).
    let poller = {
        let api = api.clone();
        tokio::spawn(async move { api.pull("store-a", "after=2&wait=30").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    server.stop().await;
    let answer = poller.await.expect("poller");
    assert_eq!(answer.assert_ok()["events"], json!([]));
    assert!(stopping.elapsed() < Duration::from_secs(5));
}

async fn a_long_poll_times_out_empty(backend: Backend) {
    let server = backend.start().await;
    let api = server.api("tok-a");
    let started = Instant::now();
    let answer = api.pull("store-a", "after=0&wait=1").await;
    let elapsed = started.elapsed();
    let body = answer.assert_ok();
    assert_eq!(body["events"], json!([]));
    assert_eq!(body["head"], 0);
    assert_eq!(body["more"], false);
    assert!(
        elapsed >= Duration::from_millis(950) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    // A client ahead of the head (it knew another life of the store) is answered at once.
    let started = Instant::now();
    api.pull("store-a", "after=50&wait=10").await.assert_ok();
    assert!(started.elapsed() < Duration::from_secs(2));
    server.stop().await;
}

async fn a_restart_keeps_every_acknowledged_event_and_the_epoch(backend: Backend) {
    let server = backend.start().await;
    let api = server.api("tok-a");
    let mut acknowledged = Vec::new();
    let mut epoch = Value::Null;
    for batch in 0..5 {
        let events: Vec<Value> = (0..20)
            .map(|i| event(&format!("s{}", i % 3), "E", json!({"batch": batch, "i": i})))
            .collect();
        let answer = api.push_ok("store-a", events.clone()).await;
        epoch = answer["epoch"].clone();
        acknowledged.extend(events.into_iter().map(|e| e["id"].clone()));
    }
    let before = api.pull_all("store-a").await;
    server.stop().await;

    let server = backend.start().await;
    let api = server.api("tok-a");
    let after = api.pull_all("store-a").await;
    assert_eq!(after, before);
    assert_eq!(
        after.iter().map(|e| e["id"].clone()).collect::<Vec<_>>(),
        acknowledged
    );
    let answer = api.pull("store-a", "after=0&limit=1").await;
    assert_eq!(answer.assert_ok()["epoch"], epoch);
    // Positions and stream versions carry on.
    let next = api
        .push_ok("store-a", vec![event("s0", "E", json!("after"))])
        .await;
    assert_eq!(next["results"][0]["position"], 101);
    assert_eq!(next["results"][0]["version"], 36); // 7 of every 20 events went to s0
    assert_eq!(next["epoch"], epoch);
    server.stop().await;
}

async fn stores_are_independent(backend: Backend) {
    let server = backend.start().await;
    let all = server.api("tok-all");
    let shared = event("s", "E", json!(1));
    let a = all.push_ok("one", vec![shared.clone()]).await;
    let b = all
        .push_ok("two", vec![event("x", "E", json!(0)), shared.clone()])
        .await;
    // Ids are unique per store: the same id is new in another store.
    assert_eq!(a["results"][0]["status"], "ok");
    assert_eq!(b["results"][1]["status"], "ok");
    assert_eq!(b["results"][1]["position"], 2);
    assert_ne!(a["epoch"], b["epoch"]);
    assert_eq!(all.pull_all("one").await.len(), 1);
    assert_eq!(all.pull_all("two").await.len(), 2);
    // A store nobody wrote to has a head of 0 and a stable epoch.
    let first = all.pull("three", "").await;
    let second = all.pull("three", "").await;
    assert_eq!(first.assert_ok()["head"], 0);
    assert_eq!(first.body["epoch"], second.body["epoch"]);
    let pushed = all.push_ok("three", vec![event("s", "E", json!(0))]).await;
    assert_eq!(pushed["epoch"], first.body["epoch"]);
    server.stop().await;
}

async fn a_pull_of_large_events_is_split_into_bounded_answers(backend: Backend) {
    let server = backend.start().await;
    let api = server.api("tok-a");
    // 24 events of 1 MB each, in pushes that stay under the 4 MiB body limit.
    let payload = "x".repeat(1_000_000);
    for _ in 0..8 {
        let events = (0..3)
            .map(|_| event("big", "Blob", json!(payload)))
            .collect();
        api.push_ok("store-a", events).await;
    }
    let first = api.pull("store-a", "after=0&limit=1000").await;
    let body = first.assert_ok();
    let n = body["events"].as_array().map_or(0, Vec::len);
    assert!((1..24).contains(&n), "one answer held {n} events of 1 MB");
    assert_eq!(body["more"], true);
    let all = api.pull_all("store-a").await;
    assert_eq!(all.len(), 24);
    assert_eq!(all[23]["position"], 24);
    server.stop().await;
}
