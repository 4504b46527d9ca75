//! A synced store on IndexedDB: the outbox persists, and a pull writes its events, the
//! cursor and the removal of confirmed pending events in one transaction.
#![cfg(target_arch = "wasm32")]

use std::rc::Rc;

use annals::storage::indexeddb::{FailStep, IndexedDbStorage};
use annals::sync::client::{SyncClient, SyncOptions};
use annals::testing::handed_lock::HandedLock;
use annals::testing::in_process::InProcessTransport;
use annals::testing::memory_server::MemoryServer;
use annals::{Engine, EngineOptions, NewEvent, ReadQuery};
use serde_json::json;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

fn unique_name(test: &str) -> String {
    format!(
        "annals-sync-test-{test}-{:x}",
        (js_sys::Math::random() * 1e15) as u64
    )
}

async fn open(name: &str) -> Engine<IndexedDbStorage> {
    let options = EngineOptions {
        synced: true,
        ..EngineOptions::default()
    };
    Engine::open(IndexedDbStorage::new(name), options)
        .await
        .expect("the store opens")
}

fn client(server: &Rc<MemoryServer>) -> SyncClient<InProcessTransport> {
    SyncClient::new(
        InProcessTransport::new(server.clone(), "todos"),
        SyncOptions::default(),
    )
}

async fn append(engine: &Engine<IndexedDbStorage>, n: i64) {
    engine
        .append(vec![NewEvent::new("s", "Noted", &json!(n)).unwrap()])
        .await
        .unwrap();
}

#[wasm_bindgen_test]
async fn the_outbox_and_client_id_survive_a_reload_and_sync_once() {
    let name = unique_name("outbox");
    let server = Rc::new(MemoryServer::new());
    let engine = open(&name).await;
    append(&engine, 1).await;
    append(&engine, 2).await;
    let client_id = engine.client_id().map(str::to_owned);
    engine.close().await;

    let reloaded = open(&name).await;
    assert_eq!(reloaded.client_id().map(str::to_owned), client_id);
    assert_eq!(
        (reloaded.confirmed_head(), reloaded.pending_count()),
        (0, 2)
    );
    client(&server).sync(&reloaded).await.unwrap();
    assert_eq!(
        (reloaded.confirmed_head(), reloaded.pending_count()),
        (2, 0)
    );
    reloaded.close().await;

    let again = open(&name).await;
    assert_eq!((again.confirmed_head(), again.pending_count()), (2, 0));
    assert!(again
        .read(&ReadQuery::default())
        .unwrap()
        .iter()
        .all(|e| !e.pending));
    assert_eq!(server.head("todos"), 2);
    again.close().await;
}

#[wasm_bindgen_test]
async fn a_pull_that_fails_midway_leaves_no_cursor_ahead_of_its_events() {
    let name = unique_name("pull-atomic");
    let server = Rc::new(MemoryServer::new());
    let engine = open(&name).await;
    append(&engine, 1).await;
    let sync = client(&server);
    for step in [
        FailStep::AfterSegmentPut,
        FailStep::AfterPendingDelete,
        FailStep::AfterHeadPut,
    ] {
        // Push succeeds; the pull that confirms the event fails inside its transaction.
        engine.storage().inject_failure(step);
        let first = sync.sync(&engine).await;
        let after_failure = (engine.confirmed_head(), engine.pending_count());
        if first.is_ok() {
            // The failure hit the first (empty) pull's transaction-free path: retry below.
            continue;
        }
        assert_eq!(
            after_failure,
            (0, 1),
            "{step:?}: neither the event nor the cursor moved"
        );
        let reopened = open(&name).await;
        assert_eq!(
            (reopened.confirmed_head(), reopened.pending_count()),
            (0, 1),
            "{step:?}: stored state"
        );
        reopened.close().await;
    }
    sync.sync(&engine).await.unwrap();
    assert_eq!((engine.confirmed_head(), engine.pending_count()), (1, 0));
    assert_eq!(server.head("todos"), 1, "retries stored the event once");
    engine.close().await;
}

#[wasm_bindgen_test]
async fn a_second_tab_sees_events_the_syncing_tab_confirmed() {
    let name = unique_name("tabs");
    let server = Rc::new(MemoryServer::new());
    let syncing = open(&name).await;
    let other = open(&name).await;
    append(&other, 7).await;
    client(&server).sync(&syncing).await.unwrap();
    let change = other.catch_up().await.unwrap();
    assert!(change.rebased);
    assert_eq!((other.confirmed_head(), other.pending_count()), (1, 0));
    syncing.close().await;
    other.close().await;
}

#[wasm_bindgen_test]
async fn the_lock_holder_adds_to_the_outbox_with_one_put_and_every_event_is_pushed_once() {
    let name = unique_name("writer-outbox");
    let server = Rc::new(MemoryServer::new());
    let lock = HandedLock::new();
    let locked = |handle: usize| {
        let storage = IndexedDbStorage::new(&name);
        storage.set_writer_lock(lock.handle(handle));
        let options = EngineOptions {
            synced: true,
            ..EngineOptions::default()
        };
        Engine::open(storage, options)
    };
    // A synced store's first open writes (its client id): under the lock too.
    lock.hand_to(1);
    let first = locked(1).await.unwrap();
    append(&first, 1).await;
    first.storage().record_steps();
    append(&first, 2).await;
    assert_eq!(
        first.storage().recorded_steps(),
        vec![FailStep::AfterPendingPut, FailStep::AtCommit],
        "the holder's next append puts its outbox record and nothing else"
    );
    append(&first, 3).await;

    // Another handle sees the whole outbox, though the counters name its first record only.
    let second = locked(2).await.unwrap();
    assert_eq!(second.pending_count(), 3);
    lock.hand_to(2);
    append(&second, 4).await;
    client(&server).sync(&second).await.unwrap();
    assert_eq!((second.confirmed_head(), second.pending_count()), (4, 0));

    lock.hand_to(1);
    append(&first, 5).await;
    client(&server).sync(&first).await.unwrap();
    assert_eq!((first.confirmed_head(), first.pending_count()), (5, 0));
    let pushed: Vec<String> = first
        .read(&ReadQuery::default())
        .unwrap()
        .iter()
        .map(|e| e.data.to_string())
        .collect();
    assert_eq!(
        pushed,
        ["1", "2", "3", "4", "5"],
        "each event once, in order"
    );
    first.close().await;
    second.close().await;
}
