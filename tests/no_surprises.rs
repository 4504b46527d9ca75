//! No silent surprises: a local store opened against another server store is refused
//! (unless the app asks to reset it), and rejections stored just before a crash are
//! announced after the reopen, once.

use std::cell::RefCell;
use std::rc::Rc;

use annals::protocol::{PushResponse, PushResult};
use annals::storage::Storage;
use annals::sync::client::{SyncClient, SyncError, SyncOptions};
use annals::testing::in_process::InProcessTransport;
use annals::testing::memory_server::MemoryServer;
use annals::{
    Bound, Engine, EngineOptions, Error, ErrorCode, ExpectedVersion, MemoryStorage, NewEvent,
    OnMismatch, SyncTarget,
};
use futures::executor::block_on;
use serde_json::json;

const SERVER: &str = "http://localhost:8080";

fn open(storage: &MemoryStorage) -> Engine<MemoryStorage> {
    let options = EngineOptions {
        synced: true,
        ..EngineOptions::default()
    };
    block_on(Engine::open(storage.another_handle(), options)).expect("open")
}

fn bind(
    engine: &Engine<MemoryStorage>,
    server: &str,
    store: &str,
    on_mismatch: OnMismatch,
) -> Result<Bound, Error> {
    block_on(engine.bind_sync_target(SyncTarget::new(server, store), on_mismatch))
}

fn client(server: &Rc<MemoryServer>, store: &str) -> SyncClient<InProcessTransport> {
    SyncClient::new(
        InProcessTransport::new(server.clone(), store),
        SyncOptions::default(),
    )
}

fn append(engine: &Engine<MemoryStorage>, stream: &str, n: usize) {
    for i in 0..n {
        let event = NewEvent::new(stream, "Noted", &json!(i)).expect("event");
        block_on(engine.append(vec![event])).expect("append");
    }
}

/// A replica of server store `store` with `n` confirmed events.
fn synced_copy(server: &Rc<MemoryServer>, store: &str, n: usize) -> MemoryStorage {
    let storage = MemoryStorage::new();
    let engine = open(&storage);
    assert_eq!(
        bind(&engine, SERVER, store, OnMismatch::Fail).ok(),
        Some(Bound::Recorded)
    );
    append(&engine, "s", n);
    block_on(client(server, store).sync(&engine)).expect("sync");
    assert_eq!(engine.confirmed_head(), n as u64);
    block_on(engine.close());
    storage
}

#[test]
fn opening_a_copy_of_one_server_store_for_another_is_refused_and_changes_nothing() {
    let server = Rc::new(MemoryServer::new());
    let storage = synced_copy(&server, "todos", 16);
    let engine = open(&storage);
    append(&engine, "s", 2); // not pushed yet
    let refused = bind(&engine, SERVER, "todos-v2", OnMismatch::Fail);
    let Err(Error::StoreMismatch(message)) = refused else {
        panic!("expected STORE_MISMATCH, got {refused:?}");
    };
    assert_eq!(
        Error::StoreMismatch(String::new()).error_code(),
        ErrorCode::StoreMismatch
    );
    for named in [
        "\"todos\"",
        "\"todos-v2\"",
        SERVER,
        "16 confirmed",
        "onMismatch: \"reset\"",
        "2 event(s) never pushed",
    ] {
        assert!(message.contains(named), "{named} in {message}");
    }
    assert_eq!((engine.confirmed_head(), engine.head()), (16, 18));
    block_on(engine.close());

    // Another server with the same store name is another store too.
    let engine = open(&storage);
    let other_server = bind(
        &engine,
        "https://elsewhere.example",
        "todos",
        OnMismatch::Fail,
    );
    assert!(matches!(other_server, Err(Error::StoreMismatch(_))));
    // The same one, spelled with a trailing slash and an upper-case host, is the same.
    assert_eq!(
        bind(&engine, "http://LOCALHOST:8080/", "todos", OnMismatch::Fail).ok(),
        Some(Bound::Same)
    );
    assert_eq!(engine.confirmed_head(), 16);
}

#[test]
fn a_reset_drops_the_copy_keeps_the_outbox_and_syncs_the_new_store() {
    let server = Rc::new(MemoryServer::new());
    let storage = synced_copy(&server, "todos", 16);
    let engine = open(&storage);
    append(&engine, "mine", 1); // never pushed
    assert_eq!(
        bind(&engine, SERVER, "todos-v2", OnMismatch::Reset).ok(),
        Some(Bound::Reset)
    );
    assert_eq!((engine.confirmed_head(), engine.head()), (0, 1));
    assert_eq!(engine.epoch(), None);
    let report = block_on(client(&server, "todos-v2").sync(&engine)).expect("sync");
    assert_eq!((report.pushed, report.restarts), (1, 0));
    assert_eq!(server.head("todos-v2"), 1);
    assert_eq!(server.head("todos"), 16, "the old store keeps its events");
    block_on(engine.close());

    // From now on the store is a copy of the new one.
    let reopened = open(&storage);
    assert_eq!(
        bind(&reopened, SERVER, "todos-v2", OnMismatch::Fail).ok(),
        Some(Bound::Same)
    );
    assert_eq!(reopened.confirmed_head(), 1);
}

#[test]
fn a_store_synced_before_targets_were_recorded_records_its_target_on_the_next_open() {
    let server = Rc::new(MemoryServer::new());
    let storage = MemoryStorage::new();
    let engine = open(&storage);
    append(&engine, "s", 3);
    block_on(client(&server, "todos").sync(&engine)).expect("sync");
    block_on(engine.close());

    let engine = open(&storage);
    assert_eq!(
        bind(&engine, SERVER, "todos", OnMismatch::Fail).ok(),
        Some(Bound::Recorded)
    );
    assert_eq!(engine.confirmed_head(), 3);
    assert_eq!(
        block_on(engine.stored_sync_target()).ok().flatten(),
        Some(SyncTarget::new(SERVER, "todos"))
    );
}

#[test]
fn a_store_that_never_received_anything_from_its_server_store_is_bound_to_another_quietly() {
    let storage = MemoryStorage::new();
    let engine = open(&storage);
    bind(&engine, "http://127.0.0.1:9", "todos", OnMismatch::Fail).expect("first bind");
    append(&engine, "s", 2); // never pushed: the server was unreachable
    assert_eq!(
        bind(&engine, SERVER, "todos", OnMismatch::Fail).ok(),
        Some(Bound::Recorded)
    );
    assert_eq!(engine.head(), 2, "the outbox is kept");
    assert_eq!(
        block_on(engine.stored_sync_target()).ok().flatten(),
        Some(SyncTarget::new(SERVER, "todos"))
    );
}

#[test]
fn a_tab_still_bound_to_the_old_store_stops_syncing_once_another_reset_it() {
    let server = Rc::new(MemoryServer::new());
    let storage = synced_copy(&server, "todos", 4);
    let old_tab = open(&storage);
    bind(&old_tab, SERVER, "todos", OnMismatch::Fail).expect("same store");
    let new_tab = open(&storage);
    bind(&new_tab, SERVER, "todos-v2", OnMismatch::Reset).expect("reset");
    append(&old_tab, "s", 1);

    let refused = block_on(client(&server, "todos").sync(&old_tab));
    assert!(
        matches!(refused, Err(SyncError::Store(Error::StoreMismatch(_)))),
        "{refused:?}"
    );
    assert_eq!(server.head("todos"), 4, "nothing pushed to the old store");
    block_on(client(&server, "todos-v2").sync(&new_tab)).expect("sync");
    assert_eq!(server.head("todos-v2"), 1, "the new tab pushes the outbox");
}

/// A rejection of `engine`'s first pending event, stored as a push's answer would store
/// it, with no client to announce it (the tab crashed right after).
fn store_rejection_without_announcing(engine: &Engine<MemoryStorage>) {
    let pending = engine.outgoing(1);
    let response = PushResponse {
        results: vec![PushResult::Rejected {
            id: pending[0].id,
            reason: "wrong expected version".into(),
            actual_version: Some(1),
        }],
        head: 0,
        epoch: "e".into(),
    };
    let stored = block_on(engine.settle_push(&response)).expect("settle");
    assert_eq!(stored.len(), 1);
}

#[test]
fn rejections_stored_before_a_crash_are_announced_after_the_reopen_once() {
    let server = Rc::new(MemoryServer::new());
    let storage = MemoryStorage::new();
    let engine = open(&storage);
    let event = NewEvent::new("todo-1", "TodoAdded", &json!("eggs")).expect("event");
    block_on(engine.append(vec![event.expecting(ExpectedVersion::NoStream)])).expect("append");
    store_rejection_without_announcing(&engine);
    block_on(engine.close()); // the crash

    let heard = Rc::new(RefCell::new(Vec::new()));
    let reopen_and_sync = || {
        let engine = open(&storage);
        let sync = client(&server, "todos");
        let sink = heard.clone();
        sync.on_rejected(move |r| sink.borrow_mut().push(r.event.data.get().to_owned()));
        block_on(sync.sync(&engine)).expect("sync");
        block_on(sync.sync(&engine)).expect("sync again");
        block_on(engine.close());
    };
    reopen_and_sync();
    assert_eq!(*heard.borrow(), ["\"eggs\""], "announced after the reopen");
    reopen_and_sync();
    assert_eq!(heard.borrow().len(), 1, "and only once");
    assert_eq!(
        block_on(open(&storage).rejected()).map(|r| r.len()).ok(),
        Some(1)
    );
}

#[test]
fn rejections_a_client_announced_are_not_announced_again_after_a_reopen() {
    let server = Rc::new(MemoryServer::new());
    let storage = MemoryStorage::new();
    let create = |engine: &Engine<MemoryStorage>, title: &str| {
        let event = NewEvent::new("todo-1", "TodoAdded", &json!(title)).expect("event");
        block_on(engine.append(vec![event.expecting(ExpectedVersion::NoStream)])).expect("append");
    };
    let other = open(&MemoryStorage::new());
    create(&other, "milk");
    block_on(client(&server, "todos").sync(&other)).expect("sync");

    let heard = Rc::new(RefCell::new(0));
    let sync_with_listener = |engine: &Engine<MemoryStorage>| {
        let sync = client(&server, "todos");
        let sink = heard.clone();
        sync.on_rejected(move |_| *sink.borrow_mut() += 1);
        block_on(sync.sync(engine)).expect("sync");
    };
    let engine = open(&storage);
    create(&engine, "eggs"); // conflicts with "milk"
    sync_with_listener(&engine);
    assert_eq!(*heard.borrow(), 1);
    block_on(engine.close());
    sync_with_listener(&open(&storage));
    assert_eq!(*heard.borrow(), 1, "not again");
}

#[test]
fn a_store_from_before_the_announced_mark_announces_nothing_old() {
    let storage = MemoryStorage::new();
    let engine = open(&storage);
    append(&engine, "s", 1);
    store_rejection_without_announcing(&engine);
    // What an older build left: the list, without the counters.
    block_on(engine.storage().put_meta("rejectedCount", "0")).expect("meta");
    let (unannounced, _) = block_on(engine.unannounced_rejections()).expect("read");
    assert!(unannounced.is_empty());
}
