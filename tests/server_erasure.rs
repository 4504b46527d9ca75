//! Erasure on a real server, on SQLite and on PostgreSQL: an accepted `$StreamErased`
//! erases the stream's earlier events (data `null`, no meta, `erased: true`) in the push's
//! transaction, keeping positions, ids, types and versions; an old copy of an erased event
//! pushed again is a duplicate that brings nothing back; `annals-server erase` (the admin
//! command) does the same without a client; exports carry erased events as erased.
#![cfg(feature = "server")]

#[macro_use]
mod server_common;

use serde_json::{json, Value};
use server_common::{event, event_expecting, Backend};

const SECRET: &str = "ada@example.com";

on_every_backend!(
    an_erasure_erases_the_earlier_events_of_its_stream_in_the_same_transaction,
    an_old_copy_of_an_erased_event_is_a_duplicate_and_stays_erased,
    the_admin_command_erases_a_stream_and_exports_carry_no_erased_data,
);

fn personal(stream: &str) -> Value {
    let mut e = event(stream, "Registered", json!({ "email": SECRET }));
    e["meta"] = json!({ "ip": "10.0.0.1" });
    e
}

fn shape(events: &[Value]) -> Vec<(u64, String, u64, String, bool)> {
    events
        .iter()
        .map(|e| {
            (
                e["position"].as_u64().unwrap_or_default(),
                e["stream"].as_str().unwrap_or_default().to_owned(),
                e["version"].as_u64().unwrap_or_default(),
                e["type"].as_str().unwrap_or_default().to_owned(),
                e["erased"] == true,
            )
        })
        .collect()
}

async fn an_erasure_erases_the_earlier_events_of_its_stream_in_the_same_transaction(
    backend: Backend,
) {
    let server = backend.start().await;
    let api = server.api("tok-a");
    let first = api
        .push_ok("store-a", vec![personal("user-1"), personal("user-2")])
        .await;
    assert_eq!(first["head"], 2);
    // One push: another event of user-1, its erasure, and an event after the erasure.
    let erase = api
        .push_ok(
            "store-a",
            vec![
                personal("user-1"),
                event_expecting("user-1", "$StreamErased", json!(2)),
                personal("user-1"),
            ],
        )
        .await;
    let statuses: Vec<&str> = erase["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(statuses, ["ok", "ok", "ok"]);
    let log = api.pull_all("store-a").await;
    assert_eq!(
        shape(&log),
        [
            (1, "user-1".into(), 1, "Registered".into(), true),
            (2, "user-2".into(), 1, "Registered".into(), false),
            (3, "user-1".into(), 2, "Registered".into(), true),
            (4, "user-1".into(), 3, "$StreamErased".into(), false),
            (5, "user-1".into(), 4, "Registered".into(), false),
        ]
    );
    for erased in [&log[0], &log[2]] {
        assert_eq!(erased["data"], Value::Null);
        assert!(erased.get("meta").is_none(), "{erased}");
        assert_eq!(erased["origin"], "test-client", "the origin and time stay");
    }
    assert_eq!(log[1]["data"]["email"], SECRET);
    assert_eq!(log[4]["meta"]["ip"], "10.0.0.1");

    // A closed stream takes its erasure (and nothing else).
    let close = api
        .push_ok(
            "store-a",
            vec![event_expecting("user-2", "$StreamClosed", json!(1))],
        )
        .await;
    assert_eq!(close["results"][0]["status"], "ok");
    let erase_closed = api
        .push_ok(
            "store-a",
            vec![
                event_expecting("user-2", "$StreamErased", json!("any")),
                personal("user-2"),
            ],
        )
        .await;
    assert_eq!(erase_closed["results"][0]["status"], "ok");
    assert_eq!(erase_closed["results"][1]["status"], "rejected");
    let log = api.pull_all("store-a").await;
    assert_eq!(log[1]["erased"], true);
    let holding: Vec<u64> = log
        .iter()
        .filter(|e| e.to_string().contains(SECRET))
        .filter_map(|e| e["position"].as_u64())
        .collect();
    assert_eq!(
        holding,
        [5],
        "only the event after user-1's erasure holds data"
    );
    server.stop().await;
}

async fn an_old_copy_of_an_erased_event_is_a_duplicate_and_stays_erased(backend: Backend) {
    let server = backend.start().await;
    let api = server.api("tok-a");
    let original = personal("user-1");
    api.push_ok("store-a", vec![original.clone()]).await;
    api.push_ok(
        "store-a",
        vec![event_expecting("user-1", "$StreamErased", json!(1))],
    )
    .await;
    // An offline client that never saw the answer pushes the event again, data and all.
    let again = api.push_ok("store-a", vec![original.clone()]).await;
    assert_eq!(
        again["results"][0],
        json!({"id": original["id"], "status": "duplicate", "position": 1, "version": 1})
    );
    let log = api.pull_all("store-a").await;
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["erased"], true);
    assert_eq!(log[0]["data"], Value::Null);
    // The same id as another event is still a reused id.
    let mut other = event("user-1", "Renamed", json!({}));
    other["id"] = original["id"].clone();
    let reused = api.push_ok("store-a", vec![other]).await;
    assert_eq!(reused["results"][0]["status"], "rejected");
    let reason = reused["results"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("DUPLICATE_ID"), "{reason}");

    // An event erased in a client's outbox before it was pushed is stored erased, and is
    // a duplicate of the stored event under its id when that was pushed before.
    let mut erased_copy = personal("user-3");
    erased_copy["data"] = Value::Null;
    erased_copy.as_object_mut().unwrap().remove("meta");
    erased_copy["erased"] = json!(true);
    let stored = api.push_ok("store-a", vec![erased_copy]).await;
    assert_eq!(stored["results"][0]["status"], "ok");
    let log = api.pull_all("store-a").await;
    assert_eq!(log[2]["erased"], true);
    server.stop().await;
}

async fn the_admin_command_erases_a_stream_and_exports_carry_no_erased_data(backend: Backend) {
    let server = backend.start().await;
    let api = server.api("tok-a");
    api.push_ok(
        "store-a",
        vec![personal("user-1"), personal("user-2"), personal("user-1")],
    )
    .await;
    let store = annals::server::open_store(&backend.database_url(), Default::default())
        .await
        .expect("the database opens beside the server");
    let erased = annals::server::erase::erase_stream(store.as_ref(), "store-a", "user-1")
        .await
        .expect("erased");
    assert_eq!(
        (erased.position, erased.version),
        (4, 3),
        "the erasure is appended as any event"
    );
    let missing = annals::server::erase::erase_stream(store.as_ref(), "store-a", "nobody").await;
    assert!(
        matches!(
            missing,
            Err(annals::server::erase::EraseError::NoStream { .. })
        ),
        "{missing:?}"
    );
    let log = api.pull_all("store-a").await;
    assert_eq!(log.len(), 4, "a refused erasure writes nothing");
    assert_eq!(log[3]["origin"], annals::server::erase::ERASE_ORIGIN);
    let erased: Vec<bool> = log.iter().map(|e| e["erased"] == true).collect();
    assert_eq!(erased, [true, false, true, false]);

    let mut out = Vec::new();
    let count = annals::server::transfer::export(store.as_ref(), "store-a", &mut out)
        .await
        .expect("exported");
    assert_eq!(count, 4);
    let text = String::from_utf8(out).expect("UTF-8");
    assert_eq!(text.matches(SECRET).count(), 1, "only user-2's: {text}");
    assert_eq!(text.matches("\"erased\":true").count(), 2, "{text}");
    server.stop().await;
}
