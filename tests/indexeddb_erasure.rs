//! Erasure on the IndexedDB backend, in headless Chromium: the stored segments holding the
//! erased events are rewritten (whatever compaction made of them) and the snapshots that
//! folded them deleted in the transaction that stores the erasure, the outbox's pending
//! events too; a reopen and another tab read the events erased; no stored byte keeps the
//! data.
//!
//! Run: `CHROMEDRIVER=/usr/bin/chromedriver cargo test --target wasm32-unknown-unknown --test indexeddb_erasure`
#![cfg(target_arch = "wasm32")]

use annals::storage::indexeddb::IndexedDbStorage;
use annals::storage::{Known, SnapshotRecord, Storage};
use annals::{Engine, EngineOptions, Event, ExpectedVersion, NewEvent, ReadQuery};
use serde_json::json;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

const SECRET: &str = "ada@example.com";

fn unique_name(test: &str) -> String {
    let suffix = (js_sys::Math::random() * 1e15) as u64;
    format!("annals-test-{test}-{suffix:x}")
}

async fn open(name: &str, synced: bool) -> Engine<IndexedDbStorage> {
    let options = EngineOptions {
        synced,
        ..EngineOptions::default()
    };
    Engine::open(IndexedDbStorage::new(name), options)
        .await
        .expect("the store opens")
}

fn personal(stream: &str) -> NewEvent {
    NewEvent::new(stream, "Registered", &json!({ "email": SECRET }))
        .unwrap()
        .with_meta(&json!({ "ip": "10.0.0.1" }))
        .unwrap()
}

fn all(engine: &Engine<IndexedDbStorage>) -> Vec<Event> {
    engine.read(&ReadQuery::default()).unwrap()
}

fn erased(engine: &Engine<IndexedDbStorage>) -> Vec<bool> {
    all(engine).iter().map(|e| e.erased).collect()
}

/// How many stored records (segments and pending batches) hold the secret.
async fn stored_copies(name: &str) -> usize {
    let storage = IndexedDbStorage::new(name);
    storage.open().await.expect("opens");
    let fresh = storage.changes(Known::default()).await.expect("reads");
    storage.close();
    let secret = SECRET.as_bytes();
    fresh
        .segments
        .iter()
        .map(|s| &s.bytes)
        .chain(fresh.pending.iter().map(|p| &p.bytes))
        .filter(|bytes| bytes.windows(secret.len()).any(|w| w == secret))
        .count()
}

#[wasm_bindgen_test]
async fn an_erasure_rewrites_the_stored_segments_and_drops_the_snapshots_that_folded_them() {
    let name = unique_name("erasure");
    let engine = open(&name, false).await;
    // Several segments, some merged by compaction, user-2's beside user-1's.
    engine.append(vec![personal("user-1")]).await.unwrap();
    engine
        .append(vec![personal("user-2"), personal("user-1")])
        .await
        .unwrap();
    engine.compact().await.unwrap();
    engine.append(vec![personal("user-1")]).await.unwrap();
    let snapshot = |name: &str, position| SnapshotRecord {
        name: name.into(),
        version: 1,
        position,
        state: "{}".into(),
    };
    engine.put_snapshot(&snapshot("before", 0)).await.unwrap();
    engine.put_snapshot(&snapshot("after", 3)).await.unwrap();
    let other_tab = open(&name, false).await;

    engine
        .erase_stream("user-1", ExpectedVersion::Exact(3))
        .await
        .unwrap();
    assert_eq!(erased(&engine), [true, false, true, true, false]);
    assert!(engine.snapshot("before").await.unwrap().is_some());
    assert!(engine.snapshot("after").await.unwrap().is_none());
    let change = other_tab.catch_up().await.unwrap();
    assert_eq!(change.erased_from, 1);
    assert_eq!(erased(&other_tab), [true, false, true, true, false]);
    drop((engine, other_tab));

    let reopened = open(&name, false).await;
    let events = all(&reopened);
    assert_eq!(erased(&reopened), [true, false, true, true, false]);
    assert_eq!(events[0].data.get(), "null");
    assert!(events[0].meta.is_none());
    assert_eq!(events[3].version, 3);
    assert_eq!(
        stored_copies(&name).await,
        1,
        "only the segment with user-2's event holds the address"
    );
}

#[wasm_bindgen_test]
async fn a_synced_store_erases_its_pending_events_in_the_outbox() {
    let name = unique_name("erasure-outbox");
    let engine = open(&name, true).await;
    engine.append(vec![personal("user-1")]).await.unwrap();
    engine.append(vec![personal("user-1")]).await.unwrap();
    assert_eq!(stored_copies(&name).await, 2);
    engine
        .erase_stream("user-1", ExpectedVersion::Any)
        .await
        .unwrap();
    let outgoing = engine.outgoing(10);
    assert_eq!(
        outgoing.iter().map(|e| e.erased).collect::<Vec<_>>(),
        [true, true, false],
        "pushed erased"
    );
    drop(engine);
    let reopened = open(&name, true).await;
    assert_eq!(erased(&reopened), [true, true, false]);
    assert_eq!(stored_copies(&name).await, 0);
}
