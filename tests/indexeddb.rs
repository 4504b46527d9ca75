//! The IndexedDB backend, in headless Chromium, through the engine: what is appended
//! survives a reopen, conflicts and duplicates write nothing, a batch is all or nothing,
//! several tabs share one log, compaction keeps every event, newer formats are refused,
//! and a closed or upgraded store fails cleanly instead of hanging.
//!
//! Run: `CHROMEDRIVER=/usr/bin/chromedriver cargo test --target wasm32-unknown-unknown --test indexeddb`
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;

use annals::storage::indexeddb::{FailStep, IndexedDbStorage};
use annals::storage::{Known, SnapshotRecord, Storage, FORMAT_VERSION};
use annals::testing::handed_lock::HandedLock;
use annals::{
    AppendResult, Engine, EngineOptions, Error, Event, EventId, ExpectedVersion, NewEvent,
    ReadQuery,
};
use futures::future::{self, Either};
use js_sys::{Array, Function, Promise, Reflect};
use serde_json::json;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};
use web_sys::{IdbDatabase, IdbFactory, IdbRequest, IdbTransaction, IdbTransactionMode};

wasm_bindgen_test_configure!(run_in_browser);

// ---------------------------------------------------------------------------------------
// Helpers

/// A database name no other test (or earlier run) uses.
fn unique_name(test: &str) -> String {
    let suffix = (js_sys::Math::random() * 1e15) as u64;
    format!("annals-test-{test}-{suffix:x}")
}

async fn open(name: &str) -> Engine<IndexedDbStorage> {
    Engine::open(IndexedDbStorage::new(name), EngineOptions::default())
        .await
        .expect("the store opens")
}

fn ev(stream: &str, kind: &str, data: serde_json::Value) -> NewEvent {
    NewEvent::new(stream, kind, &data).unwrap()
}

fn all(engine: &Engine<IndexedDbStorage>) -> Vec<Event> {
    engine.read(&ReadQuery::default()).unwrap()
}

fn positions(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

fn factory() -> IdbFactory {
    Reflect::get(&js_sys::global(), &JsValue::from_str("indexedDB"))
        .unwrap()
        .unchecked_into()
}

/// Settles when `request` succeeds (with its result) or fails.
async fn done(request: &IdbRequest) -> Result<JsValue, JsValue> {
    let promise = Promise::new(&mut |resolve: Function, reject: Function| {
        request.set_onsuccess(Some(&resolve));
        request.set_onerror(Some(&reject));
    });
    JsFuture::from(promise).await?;
    request.result()
}

async fn committed(tx: &IdbTransaction) {
    let promise = Promise::new(&mut |resolve: Function, reject: Function| {
        tx.set_oncomplete(Some(&resolve));
        tx.set_onabort(Some(&reject));
    });
    JsFuture::from(promise).await.expect("transaction commits");
}

/// Resolves after `ms` milliseconds.
async fn sleep(ms: i32) {
    let promise = Promise::new(&mut |resolve: Function, _| {
        let set_timeout: Function = Reflect::get(&js_sys::global(), &"setTimeout".into())
            .unwrap()
            .unchecked_into();
        set_timeout
            .call2(&JsValue::NULL, &resolve, &JsValue::from(ms))
            .unwrap();
    });
    JsFuture::from(promise).await.unwrap();
}

/// Opens the database as it is, without any upgrade (as a test's own raw connection).
async fn raw_open(name: &str) -> IdbDatabase {
    let request = factory().open(name).unwrap();
    done(&request).await.unwrap().unchecked_into()
}

async fn raw_get(db: &IdbDatabase, store: &str, key: &JsValue) -> JsValue {
    let tx = db.transaction_with_str(store).unwrap();
    let request = tx.object_store(store).unwrap().get(key).unwrap();
    done(&request).await.unwrap()
}

async fn raw_put(db: &IdbDatabase, store: &str, key: &JsValue, value: &JsValue) {
    let tx = db
        .transaction_with_str_and_mode(store, IdbTransactionMode::Readwrite)
        .unwrap();
    tx.object_store(store)
        .unwrap()
        .put_with_key(value, key)
        .unwrap();
    committed(&tx).await;
}

async fn raw_delete(db: &IdbDatabase, store: &str, key: &JsValue) {
    let tx = db
        .transaction_with_str_and_mode(store, IdbTransactionMode::Readwrite)
        .unwrap();
    tx.object_store(store).unwrap().delete(key).unwrap();
    committed(&tx).await;
}

async fn raw_count(db: &IdbDatabase, store: &str) -> u32 {
    let tx = db.transaction_with_str(store).unwrap();
    let request = tx.object_store(store).unwrap().count().unwrap();
    done(&request).await.unwrap().as_f64().unwrap() as u32
}

async fn delete_database(name: &str) {
    let request = factory().delete_database(name).unwrap();
    done(&request).await.expect("the test database is deleted");
}

/// One batch of two events on stream `s` (positions 1 and 2 in a new store).
async fn append_two(engine: &Engine<IndexedDbStorage>) {
    engine
        .append(vec![
            ev("s", "Happened", json!(1)),
            ev("s", "Happened", json!(2)),
        ])
        .await
        .unwrap();
}

/// Ten appends of two events each, one to a stream both tabs share. Returns the positions
/// taken and how many of the appends first took in events the other tab had written.
async fn append_ten(engine: &Engine<IndexedDbStorage>, kind: &'static str) -> (Vec<u64>, usize) {
    let mut mine = Vec::new();
    let mut saw_others = 0;
    for i in 0..10 {
        let batch = vec![ev("shared", kind, json!(i)), ev(kind, kind, json!(i))];
        let out = engine.append(batch).await.unwrap();
        mine.extend(out.results.iter().map(AppendResult::position));
        if out.change.head() - out.change.previous_head() > 2 {
            saw_others += 1;
        }
    }
    (mine, saw_others)
}

// ---------------------------------------------------------------------------------------
// Specifications

#[wasm_bindgen_test]
async fn appended_events_survive_closing_and_reopening() {
    let name = unique_name("persist");
    let engine = open(&name).await;
    engine
        .append(vec![
            ev("todo-1", "TodoAdded", json!({"title": "milk"})),
            ev("todo-2", "TodoAdded", json!({"title": "bread"})),
        ])
        .await
        .unwrap();
    let out = engine
        .append(vec![ev("todo-1", "TodoDone", json!(null))])
        .await
        .unwrap();
    assert_eq!(out.results, [AppendResult::Appended(3)]);
    let before = all(&engine);
    engine.close().await;

    let reopened = open(&name).await;
    assert_eq!(reopened.head(), 3);
    assert_eq!(all(&reopened), before, "every field reads back as written");
    assert_eq!(reopened.stream_version("todo-1"), 2);
    assert_eq!(reopened.storage().segment_count().await.unwrap(), 2);
    reopened.close().await;
    delete_database(&name).await;
}

/// Opening a store runs the append and load paths once on a throwaway log (so that the
/// browser compiles them then, not on the app's first append or replay): they must go
/// through.
#[wasm_bindgen_test]
async fn the_open_warm_up_runs_the_whole_append_path() {
    annals::wasm::warm_up()
        .await
        .expect("the warm-up appends, builds the change message and reply, reopens and reads");
}

#[wasm_bindgen_test]
async fn an_expected_version_conflict_writes_nothing_and_reports_the_actual_version() {
    let name = unique_name("conflict");
    let engine = open(&name).await;
    engine
        .append(vec![
            ev("s", "Happened", json!(1)).expecting(ExpectedVersion::NoStream)
        ])
        .await
        .unwrap();

    let batch = vec![
        ev("other", "Happened", json!(2)),
        ev("s", "Happened", json!(3)).expecting(ExpectedVersion::Exact(0)),
    ];
    let err = engine.append(batch).await.unwrap_err();
    assert_eq!(
        err,
        Error::WrongExpectedVersion {
            stream: "s".into(),
            expected: ExpectedVersion::Exact(0),
            actual: 1,
        }
    );
    assert_eq!(err.code(), "WRONG_EXPECTED_VERSION");
    assert_eq!(engine.head(), 1);
    assert_eq!(engine.stream_version("other"), 0);
    assert_eq!(engine.storage().segment_count().await.unwrap(), 1);
    engine.close().await;

    let reopened = open(&name).await;
    assert_eq!(
        reopened.head(),
        1,
        "nothing of the batch reached the database"
    );
    reopened.close().await;
    delete_database(&name).await;
}

#[wasm_bindgen_test]
async fn re_appending_an_id_returns_the_original_position_and_writes_nothing() {
    let name = unique_name("idempotent");
    let engine = open(&name).await;
    let id = EventId::parse("0190a4c1-7d2e-7c3a-9f10-2b3c4d5e6f70").unwrap();
    let first = engine
        .append(vec![ev("s", "Paid", json!({"cents": 100})).with_id(id)])
        .await
        .unwrap();
    assert_eq!(first.results, [AppendResult::Appended(1)]);
    engine
        .append(vec![ev("s", "Shipped", json!(null))])
        .await
        .unwrap();

    let again = engine
        .append(vec![ev("s", "Paid", json!({"cents": 100})).with_id(id)])
        .await
        .unwrap();
    assert_eq!(again.results, [AppendResult::Duplicate(1)]);
    assert_eq!(again.change.head(), 2);
    assert_eq!(engine.storage().segment_count().await.unwrap(), 2);

    // A batch is wholly a retry or wholly new: a known event with a new one is refused.
    let mixed = engine
        .append(vec![
            ev("s", "Paid", json!({"cents": 100})).with_id(id),
            ev("s", "Delivered", json!(null)),
        ])
        .await
        .unwrap_err();
    assert_eq!(mixed.code(), "DUPLICATE_ID");
    engine.close().await;

    let reopened = open(&name).await;
    assert_eq!(reopened.head(), 2);
    let ids: Vec<EventId> = all(&reopened).iter().map(|e| e.id).collect();
    assert_eq!(ids.iter().filter(|i| **i == id).count(), 1);
    // The id index is rebuilt from storage: still a duplicate after a reopen.
    let after_reopen = reopened
        .append(vec![ev("s", "Paid", json!({"cents": 100})).with_id(id)])
        .await
        .unwrap();
    assert_eq!(after_reopen.results, [AppendResult::Duplicate(1)]);
    reopened.close().await;
    delete_database(&name).await;
}

#[wasm_bindgen_test]
async fn a_transaction_failing_in_the_middle_of_append_many_stores_no_partial_batch() {
    let name = unique_name("atomic");
    let engine = open(&name).await;
    engine
        .append(vec![ev("s", "Happened", json!(0))])
        .await
        .unwrap();

    // The steps a local append reaches (tests/indexeddb_crash.rs covers every operation).
    for step in [
        FailStep::AfterSegmentPut,
        FailStep::AfterHeadPut,
        FailStep::AtCommit,
    ] {
        engine.storage().inject_failure(step);
        let batch = (1..=3).map(|i| ev("s", "Happened", json!(i))).collect();
        let err = engine.append(batch).await.unwrap_err();
        assert!(
            matches!(&err, Error::Storage(m) if m.contains("injected failure")),
            "{step:?}: {err:?}"
        );
        assert_eq!(engine.head(), 1, "{step:?}: the engine kept nothing");
        assert_eq!(engine.stream_version("s"), 1);

        let other = open(&name).await;
        assert_eq!(other.head(), 1, "{step:?}: the database kept nothing");
        assert_eq!(positions(&all(&other)), [1]);
        assert_eq!(other.storage().segment_count().await.unwrap(), 1);
        other.close().await;
    }

    // Still usable, and the next append takes the next position.
    let out = engine
        .append(vec![
            ev("s", "Happened", json!(4)).expecting(ExpectedVersion::Exact(1))
        ])
        .await
        .unwrap();
    assert_eq!(out.results, [AppendResult::Appended(2)]);
    engine.close().await;
    let reopened = open(&name).await;
    assert_eq!(positions(&all(&reopened)), [1, 2]);
    reopened.close().await;
    delete_database(&name).await;
}

#[wasm_bindgen_test]
async fn an_append_checks_expected_versions_against_what_another_tab_wrote_meanwhile() {
    // A transaction first assumes nothing changed since this tab last looked (it saves a
    // round trip); these answers show the assumption is checked before it is believed.
    let name = unique_name("assumed");
    let a = open(&name).await;
    let b = open(&name).await;
    a.append(vec![ev("acct", "Opened", json!(1))])
        .await
        .unwrap();

    // b has not seen "acct": assumed, "no_stream" would pass. It must not.
    let err = b
        .append(vec![
            ev("acct", "Opened", json!(2)).expecting(ExpectedVersion::NoStream)
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WrongExpectedVersion { .. }), "{err:?}");
    // b last saw version 1; a writes version 2; b, expecting 2, must not be refused.
    a.append(vec![ev("acct", "Deposited", json!(3))])
        .await
        .unwrap();
    let out = b
        .append(vec![
            ev("acct", "Deposited", json!(4)).expecting(ExpectedVersion::Exact(2))
        ])
        .await
        .unwrap();
    assert_eq!(out.results, [AppendResult::Appended(3)]);

    let reopened = open(&name).await;
    assert_eq!(positions(&all(&reopened)), vec![1, 2, 3]);
    assert_eq!(reopened.stream_version("acct"), 3);
    for engine in [a, b, reopened] {
        engine.close().await;
    }
    delete_database(&name).await;
}

#[wasm_bindgen_test]
async fn two_tabs_appending_get_unique_gapless_positions_and_see_each_other() {
    let name = unique_name("tabs");
    let a = open(&name).await;
    let b = open(&name).await;

    // Alternately: each append first takes in what the other tab wrote.
    a.append(vec![ev("shared", "ByA", json!(1))]).await.unwrap();
    let out = b.append(vec![ev("shared", "ByB", json!(2))]).await.unwrap();
    assert_eq!(out.results, [AppendResult::Appended(2)]);
    assert_eq!(
        out.change.previous_head(),
        0,
        "b had not seen a's event before"
    );
    assert_eq!(b.stream_version("shared"), 2);
    let out = a
        .append(vec![
            ev("shared", "ByA", json!(3)).expecting(ExpectedVersion::Exact(2))
        ])
        .await
        .unwrap();
    assert_eq!(out.results, [AppendResult::Appended(3)]);

    // Concurrently: the transactions interleave; positions still come out unique.
    let ((from_a, a_saw), (from_b, b_saw)) =
        future::join(append_ten(&a, "ByA"), append_ten(&b, "ByB")).await;
    assert!(
        a_saw > 0 && b_saw > 0,
        "the appends interleaved ({a_saw}, {b_saw})"
    );
    let mut written: Vec<u64> = from_a.iter().chain(&from_b).copied().collect();
    written.sort_unstable();
    assert_eq!(written, (4..=43).collect::<Vec<_>>());

    a.catch_up().await.unwrap();
    b.catch_up().await.unwrap();
    assert_eq!((a.head(), b.head()), (43, 43));
    let (seen_by_a, seen_by_b) = (all(&a), all(&b));
    assert_eq!(positions(&seen_by_a), (1..=43).collect::<Vec<_>>());
    assert_eq!(seen_by_a, seen_by_b, "both tabs hold the same log");
    let versions: Vec<u64> = seen_by_a
        .iter()
        .filter(|e| e.stream == "shared")
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, (1..=23).collect::<Vec<_>>());
    let mut ids: Vec<EventId> = seen_by_a.iter().map(|e| e.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 43);

    a.close().await;
    b.close().await;
    let reopened = open(&name).await;
    assert_eq!(all(&reopened), seen_by_a);
    reopened.close().await;
    delete_database(&name).await;
}

#[wasm_bindgen_test]
async fn compaction_merges_segments_and_every_event_reads_back_in_order() {
    let name = unique_name("compact");
    let a = open(&name).await;
    for i in 1..=10 {
        a.append(vec![ev("s", "Counted", json!(i))]).await.unwrap();
    }
    // A second tab that has seen up to 10 only.
    let b = open(&name).await;
    for i in 11..=30 {
        a.append(vec![ev("s", "Counted", json!(i))]).await.unwrap();
    }
    assert_eq!(a.storage().segment_count().await.unwrap(), 30);

    let report = a.compact().await.unwrap();
    assert_eq!(
        (report.segments_before, report.segments_after, report.events),
        (30, 1, 30)
    );
    assert_eq!(a.storage().segment_count().await.unwrap(), 1);
    let known = Known {
        head: 15,
        ..Known::default()
    };
    let segments = a.storage().changes(known).await.unwrap().segments;
    assert_eq!(segments.len(), 1);
    assert_eq!(
        segments[0].first, 1,
        "position 16 lives in the merged segment"
    );

    // b's next append must take in 11..=30 from the middle of the merged segment.
    let out = b
        .append(vec![
            ev("s", "Counted", json!(31)).expecting(ExpectedVersion::Exact(30))
        ])
        .await
        .unwrap();
    assert_eq!(out.results, [AppendResult::Appended(31)]);
    assert_eq!(positions(&all(&b)), (1..=31).collect::<Vec<_>>());
    a.catch_up().await.unwrap();
    assert_eq!(all(&a), all(&b));

    a.close().await;
    b.close().await;
    let reopened = open(&name).await;
    let events = all(&reopened);
    assert_eq!(positions(&events), (1..=31).collect::<Vec<_>>());
    let data: Vec<u64> = events.iter().map(|e| e.data_as().unwrap()).collect();
    assert_eq!(data, (1..=31).collect::<Vec<_>>());
    assert_eq!(reopened.storage().segment_count().await.unwrap(), 2);
    reopened.close().await;
    delete_database(&name).await;
}

/// Segments of events all at schema version 1 keep the format older builds wrote; those
/// holding later versions use the newer one. Both read back, also after compaction merged
/// them, and also in a second tab.
#[wasm_bindgen_test]
async fn schema_versions_survive_a_reopen_and_compaction_of_mixed_segments() {
    let name = unique_name("schema-versions");
    let a = open(&name).await;
    let b = open(&name).await;
    for i in 1..=6u32 {
        // Version 1 in odd batches (format-1 segments), 1 + i in even ones.
        let version = if i % 2 == 1 { 1 } else { 1 + i };
        a.append(vec![
            ev("s", "Counted", json!(i)).with_schema_version(version)
        ])
        .await
        .unwrap();
    }
    let expected: Vec<u32> = vec![1, 3, 1, 5, 1, 7];
    let versions = |events: &[Event]| events.iter().map(|e| e.schema_version).collect::<Vec<_>>();
    b.catch_up().await.unwrap();
    assert_eq!(versions(&all(&b)), expected, "another tab reads them");

    let report = a.compact().await.unwrap();
    assert_eq!((report.segments_before, report.segments_after), (6, 1));
    assert_eq!(versions(&all(&a)), expected);
    a.close().await;
    b.close().await;

    let reopened = open(&name).await;
    assert_eq!(versions(&all(&reopened)), expected);
    let data: Vec<u32> = all(&reopened)
        .iter()
        .map(|e| e.data_as().unwrap())
        .collect();
    assert_eq!(data, [1, 2, 3, 4, 5, 6]);
    let json = reopened.read_json(&ReadQuery::default()).expect("JSON");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(json[0].get("schemaVersion").is_none(), "left out at 1");
    assert_eq!(json[1]["schemaVersion"], 3);
    reopened.close().await;
    delete_database(&name).await;
}

#[wasm_bindgen_test]
async fn a_failed_compaction_changes_nothing() {
    let name = unique_name("compact-fail");
    let engine = open(&name).await;
    for i in 1..=5 {
        engine
            .append(vec![ev("s", "Counted", json!(i))])
            .await
            .unwrap();
    }
    engine.storage().inject_failure(FailStep::CompactAfterPut);
    let err = engine.compact().await.unwrap_err();
    assert!(matches!(&err, Error::Storage(m) if m.contains("injected failure")));
    assert_eq!(engine.storage().segment_count().await.unwrap(), 5);
    engine.close().await;

    let reopened = open(&name).await;
    assert_eq!(positions(&all(&reopened)), [1, 2, 3, 4, 5]);
    reopened.compact().await.unwrap();
    assert_eq!(reopened.storage().segment_count().await.unwrap(), 1);
    reopened.close().await;
    delete_database(&name).await;
}

#[wasm_bindgen_test]
async fn a_store_written_in_a_newer_format_is_refused_and_left_untouched() {
    let name = unique_name("format");
    let engine = open(&name).await;
    engine
        .append(vec![ev("s", "Happened", json!(1))])
        .await
        .unwrap();
    engine.close().await;

    // A newer annals bumped the format.
    let newer = FORMAT_VERSION + 1;
    let db = raw_open(&name).await;
    let counters = raw_get(&db, "meta", &"counters".into()).await;
    raw_put(&db, "meta", &"format".into(), &JsValue::from(newer)).await;
    db.close();

    let err = Engine::open(IndexedDbStorage::new(&name), EngineOptions::default())
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        err,
        Error::FormatTooNew {
            found: newer,
            supported: FORMAT_VERSION
        }
    );
    assert_eq!(err.code(), "FORMAT_TOO_NEW");

    let db = raw_open(&name).await;
    assert_eq!(
        raw_get(&db, "meta", &"format".into()).await,
        JsValue::from(newer)
    );
    let json = |v: &JsValue| js_sys::JSON::stringify(v).map(String::from).unwrap();
    assert_eq!(
        json(&raw_get(&db, "meta", &"counters".into()).await),
        json(&counters)
    );
    assert_eq!(raw_count(&db, "segments").await, 1);
    db.close();
    delete_database(&name).await;
}

#[wasm_bindgen_test]
async fn a_new_store_is_created_with_its_object_stores_and_format() {
    let name = unique_name("create");
    let engine = open(&name).await;
    assert_eq!(engine.head(), 0);
    engine.close().await;

    let db = raw_open(&name).await;
    let names = db.object_store_names();
    for store in ["segments", "snapshots", "meta", "pending"] {
        assert!(names.contains(store), "object store {store} exists");
    }
    assert_eq!(db.version(), 2.0);
    assert_eq!(
        raw_get(&db, "meta", &"format".into()).await,
        JsValue::from(FORMAT_VERSION)
    );
    db.close();
    delete_database(&name).await;
}

#[wasm_bindgen_test]
async fn a_store_of_schema_1_is_moved_to_schema_2_and_format_4_when_opened() {
    // What builds before the writer lock left: schema 1, format 3 (an erased event).
    let written = unique_name("schema-1-source");
    let engine = open(&written).await;
    append_two(&engine).await;
    let stream = all(&engine)[0].stream.clone();
    engine
        .erase_stream(&stream, annals::ExpectedVersion::Any)
        .await
        .unwrap();
    engine.close().await;
    let source = raw_open(&written).await;
    // Two segments: the two events (the first erased), then the erasure at 3.
    let segments = [
        raw_get(&source, "segments", &JsValue::from(1)).await,
        raw_get(&source, "segments", &JsValue::from(3)).await,
    ];
    let counters = raw_get(&source, "meta", &"counters".into()).await;
    source.close();
    delete_database(&written).await;

    let name = unique_name("schema-1");
    let request = factory().open_with_u32(&name, 1).unwrap();
    let on_upgrade = wasm_bindgen::closure::Closure::once(move |event: web_sys::Event| {
        let db: IdbDatabase = event
            .target()
            .unwrap()
            .unchecked_into::<web_sys::IdbOpenDbRequest>()
            .result()
            .unwrap()
            .unchecked_into();
        for store in ["segments", "snapshots", "meta", "pending"] {
            db.create_object_store(store).unwrap();
        }
    });
    request.set_onupgradeneeded(Some(on_upgrade.as_ref().unchecked_ref()));
    let db: IdbDatabase = done(&request).await.unwrap().unchecked_into();
    raw_put(&db, "segments", &JsValue::from(1), &segments[0]).await;
    raw_put(&db, "segments", &JsValue::from(3), &segments[1]).await;
    raw_put(&db, "meta", &"counters".into(), &counters).await;
    raw_put(&db, "meta", &"format".into(), &JsValue::from(3)).await;
    db.close();

    let reopened = open(&name).await;
    assert_eq!(reopened.head(), 3);
    assert!(all(&reopened).iter().any(|e| e.erased));
    append_one(&reopened, 4).await;
    reopened.close().await;
    let db = raw_open(&name).await;
    assert_eq!(db.version(), 2.0);
    assert_eq!(
        raw_get(&db, "meta", &"format".into()).await,
        JsValue::from(FORMAT_VERSION)
    );
    db.close();
    delete_database(&name).await;
}

#[wasm_bindgen_test]
async fn a_format_1_store_with_its_counters_in_four_keys_is_moved_to_format_4() {
    let name = unique_name("format-1");
    let engine = open(&name).await;
    append_two(&engine).await;
    engine.close().await;

    // What an annals of format 1 wrote before the `counters` record existed.
    let db = raw_open(&name).await;
    raw_put(&db, "meta", &"format".into(), &JsValue::from(1)).await;
    raw_delete(&db, "meta", &"counters".into()).await;
    for (key, value) in [
        ("head", 2),
        ("pendingSeq", 0),
        ("pendingGeneration", 0),
        ("logGeneration", 0),
    ] {
        raw_put(&db, "meta", &key.into(), &JsValue::from(value)).await;
    }
    db.close();

    let reopened = open(&name).await;
    assert_eq!(reopened.head(), 2, "the head is read from the four keys");
    reopened
        .append(vec![ev("s", "Happened", json!(3))])
        .await
        .unwrap();
    assert_eq!(positions(&all(&reopened)), vec![1, 2, 3]);
    reopened.close().await;

    let db = raw_open(&name).await;
    assert_eq!(
        raw_get(&db, "meta", &"format".into()).await,
        JsValue::from(FORMAT_VERSION)
    );
    let counters: js_sys::Array = raw_get(&db, "meta", &"counters".into())
        .await
        .unchecked_into();
    assert_eq!(
        counters.get(0),
        JsValue::from(3),
        "the counters record holds the head"
    );
    db.close();
    delete_database(&name).await;
}

#[wasm_bindgen_test]
async fn snapshots_and_settings_survive_a_reopen() {
    let name = unique_name("snapshots");
    let engine = open(&name).await;
    append_two(&engine).await;
    let snapshot = SnapshotRecord {
        name: "todos".into(),
        version: 3,
        position: 2,
        state: r#"{"count":2,"title":"ü"}"#.into(),
    };
    engine.put_snapshot(&snapshot).await.unwrap();
    engine
        .put_snapshot(&SnapshotRecord {
            name: "gone".into(),
            ..snapshot.clone()
        })
        .await
        .unwrap();
    engine.delete_snapshot("gone").await.unwrap();
    engine
        .storage()
        .put_meta("clientId", "client-7")
        .await
        .unwrap();
    assert!(matches!(
        engine.storage().put_meta("head", "99").await,
        Err(Error::InvalidArgument(_))
    ));
    engine.close().await;

    let reopened = open(&name).await;
    assert_eq!(reopened.snapshot("todos").await.unwrap(), Some(snapshot));
    assert_eq!(reopened.snapshot("gone").await.unwrap(), None);
    assert_eq!(reopened.snapshot("never").await.unwrap(), None);
    let storage = reopened.storage();
    assert_eq!(
        storage.meta("clientId").await.unwrap().as_deref(),
        Some("client-7")
    );
    assert_eq!(storage.meta("missing").await.unwrap(), None);
    assert_eq!(storage.meta("head").await.unwrap(), None, "not a setting");
    assert_eq!(reopened.head(), 2);
    reopened.close().await;
    delete_database(&name).await;
}

#[wasm_bindgen_test]
async fn after_close_every_call_fails_with_closed() {
    let name = unique_name("closed");
    let storage = IndexedDbStorage::new(&name);
    storage.open().await.unwrap();
    storage.close();
    assert_eq!(
        storage.changes(Known::default()).await.unwrap_err(),
        Error::Closed
    );
    assert_eq!(storage.meta("x").await.unwrap_err(), Error::Closed);
    assert_eq!(storage.put_meta("x", "y").await.unwrap_err(), Error::Closed);
    assert_eq!(storage.snapshot("p").await.unwrap_err(), Error::Closed);
    assert_eq!(storage.compact(1024).await.unwrap_err(), Error::Closed);
    assert_eq!(storage.open().await.unwrap_err(), Error::Closed);

    let engine = open(&name).await;
    engine.close().await;
    let err = engine
        .append(vec![ev("s", "Happened", json!(1))])
        .await
        .unwrap_err();
    assert_eq!(err.code(), "CLOSED");
    assert_eq!(engine.catch_up().await.unwrap_err(), Error::Closed);
    assert_eq!(engine.snapshot("p").await.unwrap_err(), Error::Closed);
    delete_database(&name).await;
}

#[wasm_bindgen_test]
async fn an_upgrade_from_another_connection_is_not_blocked_by_an_open_store() {
    let name = unique_name("upgrade");
    let engine = open(&name).await;
    let reasons = Rc::new(RefCell::new(Vec::<String>::new()));
    let heard = reasons.clone();
    engine
        .storage()
        .on_connection_lost(move |reason| heard.borrow_mut().push(reason.to_owned()));
    engine
        .append(vec![ev("s", "Happened", json!(1))])
        .await
        .unwrap();

    // Another tab (a newer build) opens the database at schema version 3.
    let request = factory().open_with_u32(&name, 3).unwrap();
    let upgraded = Box::pin(done(&request));
    let timeout = Box::pin(sleep(5_000));
    let db: IdbDatabase = match future::select(upgraded, timeout).await {
        Either::Left((result, _)) => result.expect("the upgrade succeeds").unchecked_into(),
        Either::Right(_) => panic!("the upgrade was blocked by the open store"),
    };
    assert_eq!(db.version(), 3.0);

    // Our connection stepped aside: the store is closed now, not hanging, and said why.
    assert_eq!(*reasons.borrow(), ["upgraded"]);
    let err = engine
        .append(vec![ev("s", "Happened", json!(2))])
        .await
        .unwrap_err();
    assert_eq!(err, Error::Closed);
    assert_eq!(engine.catch_up().await.unwrap_err(), Error::Closed);
    assert_eq!(engine.head(), 1);
    engine.close().await;

    // Reopening with this build: the database's schema and format are newer than ours.
    raw_put(
        &db,
        "meta",
        &"format".into(),
        &JsValue::from(FORMAT_VERSION + 1),
    )
    .await;
    db.close();
    let err = Engine::open(IndexedDbStorage::new(&name), EngineOptions::default())
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        err,
        Error::FormatTooNew {
            found: FORMAT_VERSION + 1,
            supported: FORMAT_VERSION
        }
    );
    delete_database(&name).await;
}

#[wasm_bindgen_test]
async fn a_database_deleted_by_another_tab_closes_the_store_which_says_why_and_keeps_its_memory() {
    let name = unique_name("deleted");
    let engine = Engine::open(
        IndexedDbStorage::new(&name),
        EngineOptions {
            synced: true,
            ..EngineOptions::default()
        },
    )
    .await
    .unwrap();
    let reasons = Rc::new(RefCell::new(Vec::<String>::new()));
    let heard = reasons.clone();
    engine
        .storage()
        .on_connection_lost(move |reason| heard.borrow_mut().push(reason.to_owned()));
    append_two(&engine).await;

    // Another tab deletes the database: the deletion is not blocked by this store.
    let request = factory().delete_database(&name).unwrap();
    let deleted = Box::pin(done(&request));
    match future::select(deleted, Box::pin(sleep(5_000))).await {
        Either::Left((result, _)) => {
            result.expect("the deletion succeeds");
        }
        Either::Right(_) => panic!("the deletion was blocked by the open store"),
    }
    assert_eq!(*reasons.borrow(), ["deleted"]);
    let err = engine
        .append(vec![ev("s", "Happened", json!(3))])
        .await
        .unwrap_err();
    assert_eq!(err, Error::Closed, "writes fail with CLOSED, not hang");
    // The outbox is still in memory, to be appended again (by id) to a new database.
    let outbox: Vec<_> = engine.outgoing(usize::MAX).iter().map(|e| e.id).collect();
    assert_eq!(outbox.len(), 2);
    engine.close().await;
    assert_eq!(
        *reasons.borrow(),
        ["deleted"],
        "told once; close() is not a loss"
    );
    delete_database(&name).await;
}

// ---------------------------------------------------------------------------------------
// The writer lock: its holder appends with one put; the others derive the head

/// A handle of store `name` whose writes take `lock`'s view `handle`.
async fn open_locked(name: &str, lock: &Rc<HandedLock>, handle: usize) -> Engine<IndexedDbStorage> {
    let storage = IndexedDbStorage::new(name);
    storage.set_writer_lock(lock.handle(handle));
    Engine::open(storage, EngineOptions::default())
        .await
        .expect("the store opens")
}

async fn append_one(engine: &Engine<IndexedDbStorage>, n: i64) -> u64 {
    let outcome = engine
        .append(vec![ev("s", "Happened", json!(n))])
        .await
        .unwrap();
    match outcome.results.as_slice() {
        [AppendResult::Appended(position)] => *position,
        other => panic!("one event appended, got {other:?}"),
    }
}

/// The head in the stored counters record (what a handle reads before the segments).
async fn counted_head(name: &str) -> f64 {
    let db = raw_open(name).await;
    let counters = raw_get(&db, "meta", &"counters".into()).await;
    db.close();
    Array::from(&counters).get(0).as_f64().unwrap()
}

#[wasm_bindgen_test]
async fn the_lock_holder_appends_with_one_put_and_the_other_handles_derive_the_head() {
    let name = unique_name("writer");
    let lock = HandedLock::new();
    let first = open_locked(&name, &lock, 1).await;
    lock.hand_to(1);
    // Under a new lease the first write reads what others wrote, and writes the counters.
    assert_eq!(append_one(&first, 1).await, 1);
    first.storage().record_steps();
    assert_eq!(append_one(&first, 2).await, 2);
    assert_eq!(
        first.storage().recorded_steps(),
        vec![FailStep::AfterSegmentPut, FailStep::AtCommit],
        "the holder's next append puts its segment and nothing else"
    );
    assert_eq!(append_one(&first, 3).await, 3);
    assert_eq!(
        counted_head(&name).await,
        1.0,
        "the counters were left behind"
    );

    // Another handle opens, reads the head from the segments, and reads every event.
    let second = open_locked(&name, &lock, 2).await;
    assert_eq!(second.head(), 3);
    assert_eq!(positions(&all(&second)), vec![1, 2, 3]);

    // The lock changes hands: the new holder reads first, then writes alone in turn.
    lock.hand_to(2);
    assert_eq!(append_one(&second, 4).await, 4);
    assert_eq!(append_one(&second, 5).await, 5);
    lock.hand_to(1);
    assert_eq!(
        append_one(&first, 6).await,
        6,
        "back with the first handle, which reads what the second wrote"
    );
    assert_eq!(positions(&all(&first)), vec![1, 2, 3, 4, 5, 6]);
    second.catch_up().await.unwrap();
    assert_eq!(positions(&all(&second)), vec![1, 2, 3, 4, 5, 6]);
    first.close().await;
    second.close().await;

    // Opened again, whole or lazily, without a lock: the same head.
    let reopened = open(&name).await;
    assert_eq!(reopened.head(), 6);
    assert_eq!(
        all(&reopened)
            .iter()
            .map(|e| e.data.to_string())
            .collect::<Vec<_>>(),
        ["1", "2", "3", "4", "5", "6"]
    );
    reopened.close().await;
    let lazy = Engine::open_lazy(IndexedDbStorage::new(&name), EngineOptions::default())
        .await
        .unwrap();
    assert_eq!(lazy.head(), 6);
    lazy.complete().await.unwrap();
    assert_eq!(positions(&all(&lazy)), vec![1, 2, 3, 4, 5, 6]);
    lazy.close().await;
    delete_database(&name).await;
}

#[wasm_bindgen_test]
async fn a_handle_that_writes_without_the_lock_is_refused_and_writes_nothing() {
    let name = unique_name("writer-refused");
    let lock = HandedLock::new();
    let holder = open_locked(&name, &lock, 1).await;
    let other = open_locked(&name, &lock, 2).await;
    lock.hand_to(1);
    append_one(&holder, 1).await;
    let refused = other.append(vec![ev("s", "Happened", json!(2))]).await;
    assert!(
        matches!(&refused, Err(Error::Storage(m)) if m.contains("without holding the writer lock")),
        "{refused:?}"
    );
    assert_eq!(append_one(&holder, 3).await, 2);
    holder.close().await;
    other.close().await;
    delete_database(&name).await;
}

#[wasm_bindgen_test]
async fn compaction_counts_what_the_lock_holder_appended_alone() {
    let name = unique_name("writer-compact");
    let lock = HandedLock::new();
    let engine = open_locked(&name, &lock, 1).await;
    lock.hand_to(1);
    for n in 1..=5 {
        append_one(&engine, n).await;
    }
    assert_eq!(counted_head(&name).await, 1.0);
    engine.compact().await.unwrap();
    assert_eq!(engine.storage().segment_count().await.unwrap(), 1);
    assert_eq!(
        counted_head(&name).await,
        5.0,
        "the merged segment's end is counted: only the last segment's start is looked at"
    );
    assert_eq!(append_one(&engine, 6).await, 6);
    engine.close().await;
    let reopened = open(&name).await;
    assert_eq!(positions(&all(&reopened)), vec![1, 2, 3, 4, 5, 6]);
    reopened.close().await;
    delete_database(&name).await;
}

#[wasm_bindgen_test]
async fn a_failed_append_by_the_lock_holder_writes_nothing_and_the_next_takes_its_place() {
    let name = unique_name("writer-crash");
    let lock = HandedLock::new();
    let engine = open_locked(&name, &lock, 1).await;
    lock.hand_to(1);
    append_one(&engine, 1).await;
    append_one(&engine, 2).await;
    for step in [FailStep::AfterSegmentPut, FailStep::AtCommit] {
        engine.storage().inject_failure(step);
        let failed = engine.append(vec![ev("s", "Happened", json!(0))]).await;
        assert!(
            matches!(&failed, Err(Error::Storage(m)) if m.contains("injected")),
            "{failed:?}"
        );
        assert_eq!(engine.head(), 2, "nothing appended in memory ({step:?})");
    }
    assert_eq!(append_one(&engine, 3).await, 3);
    engine.close().await;
    let reopened = open(&name).await;
    assert_eq!(
        all(&reopened)
            .iter()
            .map(|e| e.data.to_string())
            .collect::<Vec<_>>(),
        ["1", "2", "3"]
    );
    reopened.close().await;
    delete_database(&name).await;
}
