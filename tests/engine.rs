//! The log's rules, on the memory backend: positions, expected versions, idempotency,
//! atomic batches, reads, several writers on one store, compaction and format checks.

use std::cell::RefCell;
use std::rc::Rc;

use annals::clock::{FixedClock, SequentialIds};
use annals::{
    AppendResult, Engine, EngineOptions, Error, EventId, ExpectedVersion, MemoryStorage, NewEvent,
    ReadQuery,
};
use futures::executor::block_on;
use serde_json::json;

fn options() -> EngineOptions {
    EngineOptions {
        clock: Box::new(FixedClock::at(1_700_000_000_000)),
        ids: Box::new(SequentialIds::default()),
        ..EngineOptions::default()
    }
}

fn open(storage: &MemoryStorage) -> Engine<MemoryStorage> {
    block_on(Engine::open(storage.another_handle(), options())).unwrap()
}

fn ev(stream: &str, kind: &str, data: serde_json::Value) -> NewEvent {
    NewEvent::new(stream, kind, &data).unwrap()
}

fn positions(engine: &Engine<MemoryStorage>, query: ReadQuery) -> Vec<u64> {
    engine
        .read(&query)
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect()
}

#[test]
fn appends_get_gapless_positions_and_per_stream_versions() {
    let engine = open(&MemoryStorage::new());
    let out = block_on(engine.append(vec![ev("a", "Added", json!(1)), ev("b", "Added", json!(2))]))
        .unwrap();
    assert_eq!(
        out.results,
        [AppendResult::Appended(1), AppendResult::Appended(2)]
    );
    block_on(engine.append(vec![ev("a", "Renamed", json!({"t": "x"}))])).unwrap();
    let events = engine.read(&ReadQuery::default()).unwrap();
    let shape: Vec<_> = events
        .iter()
        .map(|e| (e.position, e.stream.as_str(), e.version))
        .collect();
    assert_eq!(shape, [(1, "a", 1), (2, "b", 1), (3, "a", 2)]);
    assert_eq!(events[2].data.get(), r#"{"t":"x"}"#);
    assert_eq!(events[0].time, 1_700_000_000_000);
    assert!(!events[0].pending);
    assert_eq!(engine.head(), 3);
}

#[test]
fn generated_ids_are_uuidv7_and_unique() {
    let engine = block_on(Engine::open(MemoryStorage::new(), EngineOptions::default())).unwrap();
    let batch = (0..500).map(|i| ev("s", "T", json!(i))).collect();
    block_on(engine.append(batch)).unwrap();
    let events = engine.read(&ReadQuery::default()).unwrap();
    let mut ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
    assert!(ids.iter().all(|id| id.0[6] >> 4 == 7));
    ids.dedup();
    assert_eq!(ids.len(), 500);
}

#[test]
fn expected_versions_guard_each_stream() {
    let engine = open(&MemoryStorage::new());
    let add = |stream: &str, expected| {
        block_on(engine.append(vec![ev(stream, "T", json!(null)).expecting(expected)]))
    };
    assert!(add("s", ExpectedVersion::NoStream).is_ok());
    assert!(add("s", ExpectedVersion::Exists).is_ok());
    assert!(add("s", ExpectedVersion::Exact(2)).is_ok());
    assert!(add("s", ExpectedVersion::Any).is_ok());
    assert!(add("other", ExpectedVersion::Exact(0)).is_ok());

    for (stream, expected, actual) in [
        ("s", ExpectedVersion::NoStream, 4),
        ("s", ExpectedVersion::Exact(3), 4),
        ("new", ExpectedVersion::Exists, 0),
        ("new", ExpectedVersion::Exact(1), 0),
    ] {
        let err = add(stream, expected).unwrap_err();
        assert_eq!(
            err,
            Error::WrongExpectedVersion {
                stream: stream.into(),
                expected,
                actual
            }
        );
        assert_eq!(err.code(), "WRONG_EXPECTED_VERSION");
    }
    assert_eq!(engine.head(), 5, "a conflict writes nothing");
}

#[test]
fn a_conflict_anywhere_in_a_batch_writes_none_of_it() {
    let storage = MemoryStorage::new();
    let engine = open(&storage);
    block_on(engine.append(vec![ev("s", "T", json!(1))])).unwrap();
    let batch = vec![
        ev("x", "T", json!(1)),
        ev("s", "T", json!(2)).expecting(ExpectedVersion::Exact(1)),
        ev("s", "T", json!(3)).expecting(ExpectedVersion::Exact(1)), // stale: the batch moved it to 2
    ];
    let err = block_on(engine.append(batch)).unwrap_err();
    assert!(matches!(err, Error::WrongExpectedVersion { actual: 2, .. }));
    assert_eq!(engine.head(), 1);
    assert_eq!(open(&storage).head(), 1, "nothing reached storage");
    assert_eq!(engine.stream_version("x"), 0);
}

#[test]
fn a_retry_is_the_same_event_and_returns_the_stored_one_with_the_stream_version() {
    let engine = open(&MemoryStorage::new());
    let id = EventId::parse("0190a4c1-7d2e-7c3a-9f10-2b3c4d5e6f70").unwrap();
    let first = ev("s", "T", json!("first"))
        .with_id(id)
        .expecting(ExpectedVersion::NoStream);
    let out = block_on(engine.append(vec![first.clone()])).unwrap();
    assert_eq!(out.results, [AppendResult::Appended(1)]);
    assert_eq!(out.stream_versions, [1]);
    block_on(engine.append(vec![ev("s", "T", json!("second"))])).unwrap();
    // A retry carries the same stale expectation; it is a duplicate, not a conflict, and
    // it tells the stream's version now (2), not the stored event's (1).
    let retry = block_on(engine.append(vec![first.clone()])).unwrap();
    assert_eq!(retry.results, [AppendResult::Duplicate(1)]);
    assert_eq!(retry.stream_versions, [2]);
    assert!(retry.change.is_empty(), "a retry writes nothing");
    assert_eq!(engine.head(), 2);
    // A retry of a batch of several events.
    let (a, b) = (
        ev("u", "T", json!(1)).with_id(EventId([1; 16])),
        ev("v", "T", json!(2)).with_id(EventId([2; 16])),
    );
    let out = block_on(engine.append(vec![a.clone(), b.clone()])).unwrap();
    assert_eq!(
        out.results,
        [AppendResult::Appended(3), AppendResult::Appended(4)]
    );
    let again = block_on(engine.append(vec![a.clone(), b.clone()])).unwrap();
    assert_eq!(
        again.results,
        [AppendResult::Duplicate(3), AppendResult::Duplicate(4)]
    );
    assert_eq!(again.stream_versions, [1, 1]);
    assert_eq!(engine.head(), 4);
}

#[test]
fn a_reused_id_with_other_content_is_duplicate_id_carrying_the_stored_event() {
    let engine = open(&MemoryStorage::new());
    let id = EventId([5; 16]);
    let stored = ev("s", "T", json!({"a": 1}))
        .with_id(id)
        .with_meta(&json!({"by": "me"}))
        .unwrap();
    block_on(engine.append(vec![stored.clone()])).unwrap();
    let changed = [
        (
            "stream",
            ev("t", "T", json!({"a": 1}))
                .with_meta(&json!({"by": "me"}))
                .unwrap(),
        ),
        (
            "type",
            ev("s", "U", json!({"a": 1}))
                .with_meta(&json!({"by": "me"}))
                .unwrap(),
        ),
        (
            "data",
            ev("s", "T", json!({"a": 2}))
                .with_meta(&json!({"by": "me"}))
                .unwrap(),
        ),
        ("meta", ev("s", "T", json!({"a": 1}))),
        ("schemaVersion", stored.clone().with_schema_version(2)),
    ];
    for (field, event) in changed {
        let before = engine.head();
        let err = block_on(engine.append(vec![event.with_id(id)])).unwrap_err();
        assert_eq!(err.code(), "DUPLICATE_ID", "{field}");
        assert!(
            err.to_string().contains(&format!("its {field} differs")),
            "{err}"
        );
        let event = err.stored_event().expect("the stored event");
        assert_eq!(
            (event.id, event.position, event.data.get()),
            (id, 1, r#"{"a":1}"#)
        );
        assert_eq!(engine.head(), before, "nothing written");
    }
    // JSON text is compared byte for byte: the same value spelled otherwise is another event.
    let mut respelled = stored.clone();
    respelled.data = serde_json::value::RawValue::from_string(r#"{ "a": 1 }"#.into()).unwrap();
    assert_eq!(
        block_on(engine.append(vec![respelled])).unwrap_err().code(),
        "DUPLICATE_ID"
    );
    // Not compared: the expected version, time and origin.
    let mut later = stored.clone().expecting(ExpectedVersion::NoStream);
    later.time = Some(5);
    later.origin = Some("elsewhere".into());
    assert_eq!(
        block_on(engine.append(vec![later])).unwrap().results,
        [AppendResult::Duplicate(1)]
    );
}

#[test]
fn a_batch_is_wholly_a_retry_or_wholly_new() {
    let engine = open(&MemoryStorage::new());
    let known = ev("s", "T", json!(1)).with_id(EventId([1; 16]));
    block_on(engine.append(vec![known.clone()])).unwrap();
    // Known ids with new events: refused, naming the known ids; nothing written.
    let err = block_on(engine.append(vec![
        ev("s", "T", json!(2)),
        known.clone(),
        ev("s", "T", json!(3)).with_id(EventId([2; 16])),
    ]))
    .unwrap_err();
    assert_eq!(err.code(), "DUPLICATE_ID");
    assert!(
        err.to_string().contains(&EventId([1; 16]).to_string()),
        "{err}"
    );
    assert!(
        matches!(&err, Error::DuplicateId { ids, .. } if ids == &[EventId([1; 16]).to_string()])
    );
    assert_eq!(err.stored_event().map(|e| e.position), Some(1));
    assert_eq!(engine.head(), 1);
    // One id twice in a batch is malformed, whether known or new.
    for id in [EventId([1; 16]), EventId([9; 16])] {
        let twice = ev("t", "T", json!(1)).with_id(id);
        let err = block_on(engine.append(vec![twice.clone(), twice])).unwrap_err();
        assert_eq!(err.code(), "INVALID_EVENT");
        assert!(err.to_string().contains("event 1: id"), "{err}");
    }
    assert_eq!(engine.head(), 1);
}

#[test]
fn a_synced_store_checks_retries_against_its_pending_events_too() {
    let storage = MemoryStorage::new();
    let engine = block_on(Engine::open(
        storage,
        EngineOptions {
            synced: true,
            ..options()
        },
    ))
    .unwrap();
    let pending = ev("s", "T", json!(1)).with_id(EventId([3; 16]));
    block_on(engine.append(vec![pending.clone()])).unwrap();
    let retry = block_on(engine.append(vec![pending.clone()])).unwrap();
    assert_eq!(retry.results, [AppendResult::Duplicate(1)]);
    let err = block_on(engine.append(vec![ev("s", "T", json!(2)).with_id(EventId([3; 16]))]))
        .unwrap_err();
    let stored = err.stored_event().unwrap();
    assert!(stored.pending);
    assert_eq!(engine.pending_count(), 1);
}

#[test]
fn a_batch_over_max_batch_is_too_large_and_writes_nothing() {
    let storage = MemoryStorage::new();
    let mut options = options();
    options.limits.max_batch_events = 3;
    let engine = block_on(Engine::open(storage, options)).unwrap();
    let batch = |n: usize| (0..n).map(|i| ev("s", "T", json!(i))).collect::<Vec<_>>();
    assert_eq!(block_on(engine.append(batch(3))).unwrap().results.len(), 3);
    let err = block_on(engine.append(batch(4))).unwrap_err();
    assert_eq!(err.code(), "TOO_LARGE");
    assert!(err.to_string().contains("at most 3 events"), "{err}");
    assert_eq!(engine.head(), 3);
    assert_eq!(annals::Limits::default().max_batch_events, 1_000);
}

#[test]
fn names_with_edge_whitespace_control_characters_or_a_reserved_prefix_are_refused() {
    let engine = open(&MemoryStorage::new());
    for (stream, kind, expected) in [
        (" s", "T", "`stream` must not start or end with whitespace"),
        (
            "s\u{a0}",
            "T",
            "`stream` must not start or end with whitespace",
        ),
        ("s", "T\n", "`type` must not start or end with whitespace"),
        (
            "s\u{7}x",
            "T",
            "`stream` must not contain control characters",
        ),
        ("s", "A\u{0}B", "`type` must not contain control characters"),
        ("$all", "T", "reserved for annals' own streams"),
        ("s", "$Deleted", "reserved for annals' own types"),
    ] {
        let err = block_on(engine.append(vec![ev(stream, kind, json!(1))])).unwrap_err();
        assert_eq!(err.code(), "INVALID_EVENT", "{stream:?} {kind:?}");
        assert!(err.to_string().contains(expected), "{err}");
    }
    // Inner spaces, other scripts and a `$` after the start are fine.
    for stream in ["todo list 1", "t\u{e9}che-1", "a$b"] {
        block_on(engine.append(vec![ev(stream, "Added", json!(1))])).unwrap();
    }
    assert_eq!(engine.head(), 3);
}

#[test]
fn invalid_events_are_refused_whole() {
    let engine = open(&MemoryStorage::new());
    let big = "x".repeat(1024 * 1024);
    for batch in [
        vec![ev("", "T", json!(1))],
        vec![ev("s", "", json!(1))],
        vec![ev("s", "T", json!(1)), ev("s", "T", json!(big))],
    ] {
        assert_eq!(
            block_on(engine.append(batch)).unwrap_err().code(),
            "INVALID_EVENT"
        );
    }
    assert_eq!(engine.head(), 0);
    assert!(
        block_on(engine.append(vec![ev("s", "T", json!(1))])).is_ok(),
        "still usable"
    );
}

#[test]
fn reads_by_range_stream_and_type() {
    let engine = open(&MemoryStorage::new());
    let batch = (0..10)
        .map(|i| {
            ev(
                &format!("s{}", i % 3),
                if i % 2 == 0 { "Even" } else { "Odd" },
                json!(i),
            )
        })
        .collect();
    block_on(engine.append(batch)).unwrap();
    let q = |json: &str| ReadQuery::parse(json).unwrap();
    assert_eq!(
        positions(&engine, q(r#"{"after":3,"limit":4}"#)),
        [4, 5, 6, 7]
    );
    assert_eq!(positions(&engine, q(r#"{"after":8}"#)), [9, 10]);
    assert_eq!(positions(&engine, q(r#"{"to":2}"#)), [1, 2]);
    assert_eq!(positions(&engine, q(r#"{"stream":"s1"}"#)), [2, 5, 8]);
    assert_eq!(
        positions(&engine, q(r#"{"stream":"s1","after":2,"limit":1}"#)),
        [5]
    );
    assert_eq!(positions(&engine, q(r#"{"type":"Odd","to":6}"#)), [2, 4, 6]);
    assert_eq!(
        positions(&engine, q(r#"{"stream":"s0","type":"Even"}"#)),
        [1, 7]
    );
    assert_eq!(
        positions(&engine, q(r#"{"stream":"nope"}"#)),
        Vec::<u64>::new()
    );
    let json: serde_json::Value =
        serde_json::from_str(&engine.read_json(&q(r#"{"after":9}"#)).unwrap()).unwrap();
    assert_eq!(json[0]["data"], 9);
    assert_eq!(json[0]["type"], "Odd");
    assert_eq!(
        ReadQuery::parse(r#"{"after":-1}"#).unwrap_err().code(),
        "INVALID_ARGUMENT"
    );
    assert_eq!(
        ReadQuery::parse(r#"{"sream":"x"}"#).unwrap_err().code(),
        "INVALID_ARGUMENT"
    );
}

#[test]
fn streams_read_from_a_version_and_backwards_with_limits_from_the_newest() {
    let engine = open(&MemoryStorage::new());
    // s0 at positions 1, 3, 5, 7, 9 (versions 1..=5); s1 at 2, 4, 6, 8, 10.
    for i in 0..10 {
        block_on(engine.append(vec![ev(&format!("s{}", i % 2), "T", json!(i))])).unwrap();
    }
    let q = |json: &str| ReadQuery::parse(json).unwrap();
    let versions = |query: ReadQuery| -> Vec<u64> {
        engine
            .read(&query)
            .unwrap()
            .iter()
            .map(|e| e.version)
            .collect()
    };
    assert_eq!(versions(q(r#"{"stream":"s0","fromVersion":3}"#)), [3, 4, 5]);
    assert_eq!(
        versions(q(r#"{"stream":"s0","fromVersion":3,"limit":2}"#)),
        [3, 4]
    );
    assert_eq!(
        versions(q(r#"{"stream":"s0","fromVersion":0}"#)),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        versions(q(r#"{"stream":"s0","fromVersion":9}"#)),
        Vec::<u64>::new()
    );
    assert_eq!(
        versions(q(r#"{"stream":"s1","backwards":true}"#)),
        [5, 4, 3, 2, 1]
    );
    assert_eq!(
        versions(q(r#"{"stream":"s1","backwards":true,"limit":2}"#)),
        [5, 4]
    );
    assert_eq!(
        versions(q(
            r#"{"stream":"s1","fromVersion":2,"backwards":true,"limit":2}"#
        )),
        [5, 4]
    );
    // The next page backwards: `to` below the oldest position read.
    assert_eq!(
        positions(
            &engine,
            q(r#"{"stream":"s1","backwards":true,"limit":2,"to":7}"#)
        ),
        [6, 4]
    );
    // The whole log.
    assert_eq!(
        positions(&engine, q(r#"{"backwards":true,"limit":3}"#)),
        [10, 9, 8]
    );
    assert_eq!(
        positions(&engine, q(r#"{"after":7,"backwards":true}"#)),
        [10, 9, 8]
    );
    assert_eq!(
        positions(&engine, q(r#"{"after":2,"to":5,"backwards":true}"#)),
        [5, 4, 3]
    );
    assert_eq!(
        positions(&engine, q(r#"{"type":"T","backwards":true,"limit":2}"#)),
        [10, 9]
    );
    let json: serde_json::Value = serde_json::from_str(
        &engine
            .read_json(&q(r#"{"backwards":true,"limit":2}"#))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (json[0]["position"].as_u64(), json[1]["position"].as_u64()),
        (Some(10), Some(9))
    );
    let err = ReadQuery::parse(r#"{"fromVersion":2}"#).unwrap_err();
    assert_eq!(err.code(), "INVALID_ARGUMENT");
    assert!(err.to_string().contains("give `stream` too"), "{err}");
    // The stream's version without reading it.
    assert_eq!(engine.try_stream_version("s0"), Ok(5));
    assert_eq!(engine.try_stream_version("none"), Ok(0));
}

#[test]
fn backwards_reads_of_a_synced_store_start_with_its_pending_events() {
    let storage = MemoryStorage::new();
    let engine = block_on(Engine::open(
        storage,
        EngineOptions {
            synced: true,
            ..options()
        },
    ))
    .unwrap();
    for i in 0..4 {
        block_on(engine.append(vec![ev("s", "T", json!(i))])).unwrap();
    }
    let q = |json: &str| ReadQuery::parse(json).unwrap();
    let read = |query: ReadQuery| -> Vec<(u64, bool)> {
        let owned: Vec<(u64, bool)> = engine
            .read(&query)
            .unwrap()
            .iter()
            .map(|e| (e.version, e.pending))
            .collect();
        let json: Vec<serde_json::Value> =
            serde_json::from_str(&engine.read_json(&query).unwrap()).unwrap();
        let from_json: Vec<(u64, bool)> = json
            .iter()
            .map(|e| {
                (
                    e["version"].as_u64().unwrap(),
                    e["pending"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(owned, from_json, "{query:?}");
        owned
    };
    assert_eq!(
        read(q(r#"{"stream":"s","backwards":true,"limit":3}"#)),
        [(4, true), (3, true), (2, true)]
    );
    assert_eq!(
        read(q(r#"{"stream":"s","fromVersion":3}"#)),
        [(3, true), (4, true)]
    );
    assert_eq!(read(q(r#"{"backwards":true,"limit":1}"#)), [(4, true)]);
    assert_eq!(engine.try_stream_version("s"), Ok(4));
}

#[test]
fn data_survives_reopen() {
    let storage = MemoryStorage::new();
    let engine = open(&storage);
    for i in 0..5 {
        block_on(engine.append(vec![ev("s", "T", json!(i)), ev("t", "T", json!(i))])).unwrap();
    }
    let before = engine.read(&ReadQuery::default()).unwrap();
    block_on(engine.close());
    let reopened = open(&storage);
    assert_eq!(reopened.read(&ReadQuery::default()).unwrap(), before);
    assert_eq!(reopened.stream_version("s"), 5);
}

#[test]
fn two_writers_on_one_store_never_share_a_position() {
    let storage = MemoryStorage::new();
    let tab_a = open(&storage);
    let tab_b = open(&storage);
    for i in 0..20 {
        let (a, b) = block_on(futures::future::join(
            tab_a.append(vec![ev("a", "T", json!(i))]),
            tab_b.append(vec![ev("b", "T", json!(i)), ev("b", "T", json!(i))]),
        ));
        a.unwrap();
        b.unwrap();
    }
    block_on(tab_a.catch_up()).unwrap();
    block_on(tab_b.catch_up()).unwrap();
    let log_a = tab_a.read(&ReadQuery::default()).unwrap();
    assert_eq!(log_a, tab_b.read(&ReadQuery::default()).unwrap());
    let positions: Vec<u64> = log_a.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=60).collect::<Vec<_>>());
    assert_eq!(tab_a.stream_version("b"), 40);
}

#[test]
fn an_append_sees_what_another_writer_committed_first() {
    let storage = MemoryStorage::new();
    let tab_a = open(&storage);
    let tab_b = open(&storage);
    block_on(tab_a.append(vec![
        ev("s", "T", json!(1)).expecting(ExpectedVersion::NoStream),
    ]))
    .unwrap();
    // Tab B has not caught up, yet its check runs against the stored log.
    let err = block_on(tab_b.append(vec![
        ev("s", "T", json!(2)).expecting(ExpectedVersion::NoStream),
    ]))
    .unwrap_err();
    assert!(matches!(err, Error::WrongExpectedVersion { actual: 1, .. }));
    assert_eq!(
        tab_b.head(),
        1,
        "the conflict still taught tab B the new event"
    );
    let out = block_on(tab_b.append(vec![
        ev("s", "T", json!(2)).expecting(ExpectedVersion::Exact(1)),
    ]))
    .unwrap();
    assert_eq!((out.change.previous_head(), out.change.head()), (1, 2));
}

#[test]
fn change_notifications_follow_the_head() {
    let storage = MemoryStorage::new();
    let engine = open(&storage);
    let seen = Rc::new(RefCell::new(Vec::new()));
    let sink = seen.clone();
    let id = engine.subscribe(move |c| sink.borrow_mut().push((c.previous_head(), c.head())));
    block_on(engine.append(vec![ev("s", "T", json!(1)), ev("s", "T", json!(2))])).unwrap();
    block_on(open(&storage).append(vec![ev("s", "T", json!(3))])).unwrap();
    block_on(engine.catch_up()).unwrap();
    block_on(engine.catch_up()).unwrap(); // nothing new: no notification
    engine.unsubscribe(id);
    block_on(engine.append(vec![ev("s", "T", json!(4))])).unwrap();
    assert_eq!(*seen.borrow(), [(0, 2), (2, 3)]);
}

#[test]
fn a_tagged_append_tags_the_change_it_makes_and_only_that_one() {
    let storage = MemoryStorage::new();
    let engine = open(&storage);
    let other_tab = open(&storage);
    let seen = Rc::new(RefCell::new(Vec::new()));
    let sink = seen.clone();
    engine.subscribe(move |c| {
        sink.borrow_mut()
            .push((c.append_tag, c.previous_head(), c.head()))
    });
    let out = block_on(engine.append_tagged(vec![ev("s", "T", json!(1))], 7)).unwrap();
    assert_eq!(out.change.append_tag, 7);
    block_on(engine.append(vec![ev("s", "T", json!(2))])).unwrap();
    // Another tab's event, taken in by the next tagged append's transaction: one change
    // with both, still tagged (the listener checks that it holds more than the batch).
    block_on(other_tab.append(vec![ev("s", "T", json!(3))])).unwrap();
    block_on(engine.append_tagged(vec![ev("s", "T", json!(4))], 8)).unwrap();
    block_on(other_tab.append(vec![ev("s", "T", json!(5))])).unwrap();
    block_on(engine.catch_up()).unwrap();
    // A refused tagged append writes nothing and reports nothing.
    let refused = block_on(engine.append_tagged(
        vec![ev("s", "T", json!(6)).expecting(ExpectedVersion::Exact(1))],
        9,
    ));
    assert!(refused.is_err());
    assert_eq!(*seen.borrow(), [(7, 0, 1), (0, 1, 2), (8, 2, 4), (0, 4, 5)]);
}

#[test]
fn compaction_merges_segments_without_losing_or_reordering() {
    let storage = MemoryStorage::new();
    let engine = open(&storage);
    let other_tab = open(&storage);
    for i in 0..300 {
        block_on(engine.append(vec![ev(&format!("s{}", i % 7), "T", json!({ "i": i }))])).unwrap();
    }
    let before = engine.read(&ReadQuery::default()).unwrap();
    assert_eq!(storage.segment_count(), 300);
    let report = block_on(engine.compact()).unwrap();
    assert_eq!((report.segments_before, report.events), (300, 300));
    assert_eq!(storage.segment_count(), 1);
    assert_eq!(
        engine.read(&ReadQuery::default()).unwrap(),
        before,
        "in-memory view intact"
    );
    assert_eq!(
        open(&storage).read(&ReadQuery::default()).unwrap(),
        before,
        "stored view intact"
    );
    // A writer that last looked before compaction still catches up on the merged segment.
    block_on(other_tab.catch_up()).unwrap();
    assert_eq!(other_tab.read(&ReadQuery::default()).unwrap(), before);
    block_on(engine.append(vec![ev("s0", "T", json!("after"))])).unwrap();
    assert_eq!(
        engine
            .read(&ReadQuery {
                after: 299,
                ..Default::default()
            })
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        positions(
            &engine,
            ReadQuery {
                stream: Some("s0".into()),
                after: 290,
                ..Default::default()
            }
        ),
        [295, 301]
    );
}

#[test]
fn a_writer_that_missed_a_compaction_catches_up_inside_its_append() {
    let storage = MemoryStorage::new();
    let tab_a = open(&storage);
    block_on(tab_a.append(vec![ev("s", "T", json!(1))])).unwrap();
    let tab_b = open(&storage); // knows position 1
    for i in 2..=5 {
        block_on(tab_a.append(vec![ev("s", "T", json!(i))])).unwrap();
    }
    block_on(tab_a.compact()).unwrap(); // one segment 1..=5 now
    block_on(tab_b.append(vec![
        ev("s", "T", json!(6)).expecting(ExpectedVersion::Exact(5)),
    ]))
    .unwrap();
    let data: Vec<String> = tab_b
        .read(&ReadQuery::default())
        .unwrap()
        .iter()
        .map(|e| e.data.get().to_owned())
        .collect();
    assert_eq!(data, ["1", "2", "3", "4", "5", "6"]);
}

#[test]
fn a_store_from_a_newer_format_is_refused_untouched() {
    let storage = MemoryStorage::new();
    block_on(open(&storage).append(vec![ev("s", "T", json!(1))])).unwrap();
    storage.set_format_for_tests(annals::storage::FORMAT_VERSION + 1);
    let err = block_on(Engine::open(storage.another_handle(), options()))
        .err()
        .unwrap();
    assert_eq!(err.code(), "FORMAT_TOO_NEW");
    storage.set_format_for_tests(annals::storage::FORMAT_VERSION);
    assert_eq!(open(&storage).head(), 1);
}

#[test]
fn a_closed_engine_refuses_everything() {
    let engine = open(&MemoryStorage::new());
    block_on(engine.close());
    assert_eq!(
        block_on(engine.append(vec![ev("s", "T", json!(1))])).unwrap_err(),
        Error::Closed
    );
    assert_eq!(
        engine.read(&ReadQuery::default()).unwrap_err().code(),
        "CLOSED"
    );
    assert_eq!(block_on(engine.catch_up()).unwrap_err(), Error::Closed);
}

#[test]
fn snapshots_are_checked_against_the_head() {
    let storage = MemoryStorage::new();
    let engine = open(&storage);
    block_on(engine.append(vec![ev("s", "T", json!(1))])).unwrap();
    let snap = annals::storage::SnapshotRecord {
        name: "p".into(),
        version: 2,
        position: 1,
        state: "{}".into(),
    };
    block_on(engine.put_snapshot(&snap)).unwrap();
    assert_eq!(
        block_on(open(&storage).snapshot("p")).unwrap(),
        Some(snap.clone())
    );
    let ahead = annals::storage::SnapshotRecord {
        position: 9,
        ..snap
    };
    assert_eq!(
        block_on(engine.put_snapshot(&ahead)).unwrap_err().code(),
        "INVALID_ARGUMENT"
    );
    block_on(engine.delete_snapshot("p")).unwrap();
    assert_eq!(block_on(engine.snapshot("p")).unwrap(), None);
}
