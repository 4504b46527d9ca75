//! Erasure: `erase_stream` appends `$StreamErased`, and every earlier event of the stream
//! loses its data and meta (keeping position, id, stream, type and version) wherever the
//! erasure is stored: the local log and outbox, another tab's memory, the server (the
//! in-memory one here; SQLite and PostgreSQL in `server_sync.rs`) and every replica that
//! pulls it. An old copy of an erased event, appended or pushed again, stays erased.

use std::rc::Rc;

use annals::storage::{Known, SnapshotRecord, Storage, FORMAT_BASE, FORMAT_MARKED};
use annals::sync::client::{SyncClient, SyncOptions};
use annals::testing::in_process::InProcessTransport;
use annals::testing::memory_server::MemoryServer;
use annals::{
    AppendResult, Engine, EngineOptions, Event, EventId, ExpectedVersion, MemoryStorage, NewEvent,
    ReadQuery,
};
use futures::executor::block_on;
use serde_json::json;

const SECRET: &str = "ada@example.com";

fn open_on(storage: MemoryStorage, synced: bool) -> Engine<MemoryStorage> {
    let options = EngineOptions {
        synced,
        ..EngineOptions::default()
    };
    block_on(Engine::open(storage, options)).unwrap()
}

fn personal(stream: &str, id: u8) -> NewEvent {
    NewEvent::new(stream, "Registered", &json!({ "email": SECRET }))
        .unwrap()
        .with_meta(&json!({ "ip": "10.0.0.1" }))
        .unwrap()
        .with_id(EventId([id; 16]))
}

fn all(engine: &Engine<MemoryStorage>) -> Vec<Event> {
    engine.read(&ReadQuery::default()).unwrap()
}

/// Whether any stored byte (segments, outbox) still holds the secret.
fn stored_secret(storage: &MemoryStorage) -> bool {
    let fresh = block_on(storage.changes(Known::default())).unwrap();
    let secret = SECRET.as_bytes();
    fresh
        .segments
        .iter()
        .map(|s| &s.bytes)
        .chain(fresh.pending.iter().map(|p| &p.bytes))
        .any(|bytes| bytes.windows(secret.len()).any(|w| w == secret))
}

/// (position, stream, version, type, erased, data) of every event.
fn shape(engine: &Engine<MemoryStorage>) -> Vec<(u64, String, u64, String, bool, String)> {
    all(engine)
        .into_iter()
        .map(|e| {
            (
                e.position,
                e.stream,
                e.version,
                e.event_type,
                e.erased,
                e.data.get().to_owned(),
            )
        })
        .collect()
}

#[test]
fn an_erased_stream_keeps_its_places_and_loses_its_data_here_and_in_storage() {
    for synced in [false, true] {
        let storage = MemoryStorage::new();
        let engine = open_on(storage.another_handle(), synced);
        block_on(engine.append(vec![personal("user-1", 1), personal("user-2", 2)])).unwrap();
        block_on(engine.append(vec![personal("user-1", 3)])).unwrap();
        let before = all(&engine);

        let out = block_on(engine.erase_stream("user-1", ExpectedVersion::Exact(2))).unwrap();
        assert_eq!(out.stream_versions, [3], "the erasure is version 3");
        assert_eq!(out.change.erased_from, if synced { 0 } else { 1 });

        let after = all(&engine);
        assert_eq!(after.len(), 4);
        for (old, new) in before.iter().zip(&after) {
            assert_eq!(
                (old.id, old.position, &old.stream, old.version),
                (new.id, new.position, &new.stream, new.version),
                "positions, ids, streams and versions stay"
            );
            assert_eq!((&old.event_type, old.time), (&new.event_type, new.time));
        }
        let erased: Vec<(u64, bool)> = after.iter().map(|e| (e.position, e.erased)).collect();
        assert_eq!(erased, [(1, true), (2, false), (3, true), (4, false)]);
        assert_eq!(after[0].data.get(), "null");
        assert!(after[0].meta.is_none(), "meta goes with the data");
        assert_eq!(
            after[1].data_as::<serde_json::Value>().unwrap()["email"],
            SECRET
        );
        assert_eq!(after[3].event_type, "$StreamErased");
        // Reads by stream say so too, in JSON as apps see them.
        let json = engine
            .read_json(&ReadQuery {
                stream: Some("user-1".into()),
                ..ReadQuery::default()
            })
            .unwrap();
        let read: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(read[0]["erased"], true);
        assert_eq!(read[0]["data"], serde_json::Value::Null);
        assert!(read[2].get("erased").is_none(), "{json}");

        // The only copy of the secret left in storage is user-2's.
        drop(engine);
        let reopened = open_on(storage.another_handle(), synced);
        let kept: Vec<bool> = all(&reopened).iter().map(|e| e.erased).collect();
        assert_eq!(kept, [true, false, true, false], "synced: {synced}");
        block_on(reopened.erase_stream("user-2", ExpectedVersion::Any)).unwrap();
        assert!(!stored_secret(&storage), "synced: {synced}");
        // The stream takes events after its erasure as before.
        block_on(reopened.append(vec![personal("user-1", 9)])).unwrap();
        assert_eq!(reopened.stream_version("user-1"), 4);
        assert!(!all(&reopened).last().unwrap().erased);
    }
}

#[test]
fn an_event_appended_in_the_same_batch_as_its_erasure_is_stored_erased() {
    for synced in [false, true] {
        let storage = MemoryStorage::new();
        let engine = open_on(storage.another_handle(), synced);
        let erase = NewEvent::new("user-1", "$StreamErased", &json!({})).unwrap();
        block_on(engine.append(vec![personal("user-1", 1), erase])).unwrap();
        assert!(all(&engine)[0].erased);
        assert!(!stored_secret(&storage), "synced: {synced}");
    }
}

#[test]
fn an_old_copy_of_an_erased_event_is_a_duplicate_and_brings_nothing_back() {
    let engine = open_on(MemoryStorage::new(), false);
    block_on(engine.append(vec![personal("user-1", 1)])).unwrap();
    block_on(engine.erase_stream("user-1", ExpectedVersion::Any)).unwrap();
    // A replica that missed the erasure appends the event again, data and all.
    let again = block_on(engine.append(vec![personal("user-1", 1)])).unwrap();
    assert_eq!(again.results, [AppendResult::Duplicate(1)]);
    assert!(all(&engine)[0].erased);
    assert_eq!(engine.head(), 2, "nothing written");
    // The same id as another event (another type) is still a reused id.
    let other = NewEvent::new("user-1", "Renamed", &json!({}))
        .unwrap()
        .with_id(EventId([1; 16]));
    let refused = block_on(engine.append(vec![other])).unwrap_err();
    assert_eq!(refused.code(), "DUPLICATE_ID");
}

#[test]
fn a_closed_stream_can_still_be_erased_and_stays_closed() {
    let engine = open_on(MemoryStorage::new(), false);
    block_on(engine.append(vec![personal("user-1", 1)])).unwrap();
    block_on(engine.close_stream("user-1", ExpectedVersion::Exact(1))).unwrap();
    block_on(engine.erase_stream("user-1", ExpectedVersion::Any)).unwrap();
    assert!(all(&engine)[0].erased);
    let refused = block_on(engine.append(vec![personal("user-1", 5)])).unwrap_err();
    assert_eq!(refused.code(), "STREAM_DELETED");
}

#[test]
fn another_tab_holding_the_log_erases_its_copies_when_it_reads_the_erasure() {
    for synced in [false, true] {
        let storage = MemoryStorage::new();
        let a = open_on(storage.another_handle(), synced);
        let b = open_on(storage.another_handle(), synced);
        block_on(a.append(vec![personal("user-1", 1)])).unwrap();
        block_on(b.catch_up()).unwrap();
        assert!(!all(&b)[0].erased);
        block_on(a.erase_stream("user-1", ExpectedVersion::Any)).unwrap();
        let change = block_on(b.catch_up()).unwrap();
        assert!(all(&b)[0].erased, "synced: {synced}");
        assert_eq!(all(&b)[0].data.get(), "null");
        if !synced {
            assert_eq!(
                change.erased_from, 1,
                "folds over the log start again there"
            );
        }
    }
}

#[test]
fn snapshots_that_folded_erased_data_are_dropped_with_the_erasure() {
    let storage = MemoryStorage::new();
    let engine = open_on(storage.another_handle(), false);
    block_on(engine.append(vec![NewEvent::new("other", "Noted", &json!(1)).unwrap()])).unwrap();
    let snapshot = |name: &str, position| SnapshotRecord {
        name: name.into(),
        version: 1,
        position,
        state: "{}".into(),
    };
    block_on(engine.put_snapshot(&snapshot("before", 1))).unwrap();
    block_on(engine.append(vec![personal("user-1", 1)])).unwrap();
    block_on(engine.put_snapshot(&snapshot("after", 2))).unwrap();
    block_on(engine.erase_stream("user-1", ExpectedVersion::Any)).unwrap();
    assert!(block_on(engine.snapshot("before")).unwrap().is_some());
    assert!(
        block_on(engine.snapshot("after")).unwrap().is_none(),
        "it folded the erased event at position 2"
    );
}

struct Replica {
    storage: MemoryStorage,
    engine: Engine<MemoryStorage>,
    sync: SyncClient<InProcessTransport>,
}

impl Replica {
    fn new(server: &Rc<MemoryServer>) -> Self {
        let storage = MemoryStorage::new();
        Replica {
            engine: open_on(storage.another_handle(), true),
            storage,
            sync: SyncClient::new(
                InProcessTransport::new(server.clone(), "users"),
                SyncOptions::default(),
            ),
        }
    }

    fn sync(&self) -> annals::sync::client::SyncReport {
        block_on(self.sync.sync(&self.engine)).unwrap()
    }
}

#[test]
fn an_erasure_reaches_the_server_and_every_replica_and_old_copies_stay_erased() {
    let server = Rc::new(MemoryServer::new());
    let (a, b, old) = (
        Replica::new(&server),
        Replica::new(&server),
        Replica::new(&server),
    );
    block_on(
        a.engine
            .append(vec![personal("user-1", 1), personal("user-2", 2)]),
    )
    .unwrap();
    a.sync();
    b.sync();
    // `old` holds a copy of event 1 it has not pushed yet (a lost answer, say).
    block_on(old.engine.append(vec![personal("user-1", 1)])).unwrap();
    // b appends more of user-1 offline, then erases the stream before syncing.
    block_on(b.engine.append(vec![personal("user-1", 3)])).unwrap();
    block_on(b.engine.erase_stream("user-1", ExpectedVersion::Any)).unwrap();
    let b_now: Vec<(u64, bool)> = all(&b.engine)
        .iter()
        .map(|e| (e.position, e.erased))
        .collect();
    assert_eq!(
        b_now,
        [(1, true), (2, false), (3, true), (4, false)],
        "erased at once, the pending event too"
    );
    assert!(stored_secret(&b.storage), "user-2 is not erased");
    let report = b.sync();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    a.sync();
    assert_eq!(shape(&a.engine), shape(&b.engine));
    let erased: Vec<bool> = all(&a.engine).iter().map(|e| e.erased).collect();
    assert_eq!(erased, [true, false, true, false]);

    // The old copy is pushed: a duplicate, and the data stays erased everywhere.
    let report = old.sync();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    a.sync();
    for replica in [&a, &b, &old] {
        replica.sync();
        assert_eq!(replica.engine.head(), 4);
        assert!(all(&replica.engine)[0].erased);
        assert_eq!(shape(&replica.engine), shape(&a.engine));
    }
    let pulled = server.pull("users", 0, 10);
    assert!(pulled.events[0].erased && pulled.events[2].erased);
    assert!(!serde_json::to_string(&pulled.events[0])
        .unwrap()
        .contains(SECRET));
    // Only user-2's copy of the secret is left on any replica.
    block_on(a.engine.erase_stream("user-2", ExpectedVersion::Any)).unwrap();
    a.sync();
    for replica in [&a, &b, &old] {
        replica.sync();
        assert!(!stored_secret(&replica.storage));
    }
}

#[test]
fn an_erasure_after_a_retention_cut_erases_what_the_replica_still_holds() {
    let server = Rc::new(MemoryServer::new());
    let a = Replica::new(&server);
    let events: Vec<NewEvent> = (1..=4).map(|n| personal("user-1", n)).collect();
    block_on(a.engine.append(events)).unwrap();
    a.sync();
    // Retention drops the first two events of the stream on this replica.
    block_on(a.engine.drop_through(2)).unwrap();
    block_on(a.engine.erase_stream("user-1", ExpectedVersion::Exact(4))).unwrap();
    a.sync();
    let held = a
        .engine
        .read(&ReadQuery {
            after: 2,
            ..ReadQuery::default()
        })
        .unwrap();
    let erased: Vec<(u64, u64, bool)> = held
        .iter()
        .map(|e| (e.position, e.version, e.erased))
        .collect();
    assert_eq!(erased, [(3, 3, true), (4, 4, true), (5, 5, false)]);
    assert!(!stored_secret(&a.storage));
    let pulled = server.pull("users", 0, 10);
    assert!(pulled.events[..4].iter().all(|e| e.erased));
}

/// Collects the emails a projection folded (what an erasure must take out of its state).
struct Emails;

impl annals::projection::Projection for Emails {
    type State = Vec<String>;
    fn name(&self) -> &str {
        "emails"
    }
    fn initial(&self) -> Vec<String> {
        Vec::new()
    }
    fn apply(&self, state: &mut Vec<String>, event: &annals::codec::EventRef<'_>) {
        if let Ok(data) = event.data_as::<serde_json::Value>() {
            if let Some(email) = data["email"].as_str() {
                state.push(format!("{}:{email}", event.stream));
            }
        }
    }
}

#[test]
fn a_rust_projection_folds_again_without_the_erased_data_and_its_past_states_lose_it() {
    let engine = open_on(MemoryStorage::new(), false);
    block_on(engine.append(vec![personal("user-1", 1), personal("user-2", 2)])).unwrap();
    let mut runner = block_on(annals::projection::ProjectionRunner::open(&engine, Emails)).unwrap();
    runner.set_checkpoint_interval(1);
    runner.catch_up(&engine).unwrap();
    assert_eq!(runner.state().len(), 2);
    block_on(engine.erase_stream("user-1", ExpectedVersion::Any)).unwrap();
    runner.catch_up(&engine).unwrap();
    assert_eq!(runner.state(), &[format!("user-2:{SECRET}")]);
    assert_eq!(runner.position(), 3);
    for position in 1..=3 {
        let past = runner.state_at(&engine, position).unwrap();
        assert!(
            !past.iter().any(|e| e.starts_with("user-1")),
            "at {position}: {past:?}"
        );
    }
}

#[test]
fn the_refused_events_of_an_erased_stream_are_erased_in_the_rejected_list_too() {
    let server = Rc::new(MemoryServer::new());
    let (a, b) = (Replica::new(&server), Replica::new(&server));
    block_on(a.engine.append(vec![personal("user-1", 1)])).unwrap();
    a.sync();
    b.sync();
    // a writes version 2 of user-1 and starts user-9; b, not having pulled them, tries the
    // same: both of b's are refused.
    let expecting = |event: NewEvent, expected| event.expecting(expected);
    block_on(a.engine.append(vec![
        expecting(personal("user-1", 2), ExpectedVersion::Exact(1)),
        expecting(personal("user-9", 4), ExpectedVersion::NoStream),
    ]))
    .unwrap();
    a.sync();
    block_on(b.engine.append(vec![
        expecting(personal("user-1", 3), ExpectedVersion::Exact(1)),
        expecting(personal("user-9", 5), ExpectedVersion::NoStream),
    ]))
    .unwrap();
    let report = b.sync();
    assert_eq!(report.rejected.len(), 2, "{report:?}");
    let rejected_secret = |replica: &Replica| {
        let list = block_on(replica.storage.meta("rejected")).unwrap();
        list.unwrap_or_default().matches(SECRET).count()
    };
    assert_eq!(rejected_secret(&b), 2);

    // a erases user-1; b pulls the erasure: its refused user-1 event loses its data too.
    block_on(a.engine.erase_stream("user-1", ExpectedVersion::Any)).unwrap();
    a.sync();
    b.sync();
    let rejected = block_on(b.engine.rejected()).unwrap();
    let erased: Vec<(&str, bool)> = rejected
        .iter()
        .map(|r| (r.event.stream.as_str(), r.event.erased))
        .collect();
    assert_eq!(erased, [("user-1", true), ("user-9", false)]);
    assert_eq!(
        rejected_secret(&b),
        1,
        "user-9's refused event keeps its data"
    );
    // The replica's own erasure does the same; then no copy is left anywhere on it.
    block_on(b.engine.erase_stream("user-9", ExpectedVersion::Any)).unwrap();
    assert_eq!(rejected_secret(&b), 0);
    assert!(!stored_secret(&b.storage));
}

#[test]
fn an_erasure_waiting_in_the_outbox_raises_the_storage_format_so_that_older_builds_refuse_the_store(
) {
    // Older builds would push the outbox's erased events with their data gone and no mark.
    let offline = Replica::new(&Rc::new(MemoryServer::new()));
    block_on(offline.engine.append(vec![personal("user-1", 1)])).unwrap();
    assert_eq!(
        offline.storage.format_for_tests(),
        Some(FORMAT_BASE),
        "nothing erased yet: builds of format 2 still read it"
    );
    block_on(offline.engine.erase_stream("user-1", ExpectedVersion::Any)).unwrap();
    assert_eq!(
        offline.engine.confirmed_head(),
        0,
        "both events wait in the outbox"
    );
    assert_eq!(
        (offline.storage.format_for_tests(), FORMAT_MARKED),
        (Some(3), 3)
    );
}
