//! A lazily opened engine (`Engine::open_lazy`), on the memory backend: the events after a
//! position first, the rest and the indexes later, and every rule exact meanwhile (what
//! needs the whole log completes it first).

use annals::clock::{FixedClock, SequentialIds};
use annals::codec::SegmentBuilder;
use annals::event::Event;
use annals::storage::{Commit, Scope, Segment, Storage};
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

fn ev(stream: &str, data: serde_json::Value) -> NewEvent {
    NewEvent::new(stream, "Happened", &data).unwrap()
}

/// A store of `batches` appends of `per_batch` events over streams s0..s6, as one writer
/// leaves it (one segment per append).
fn written(batches: u64, per_batch: u64) -> MemoryStorage {
    let storage = MemoryStorage::new();
    let engine = block_on(Engine::open(storage.another_handle(), options())).unwrap();
    for b in 0..batches {
        let batch = (0..per_batch)
            .map(|i| {
                let n = b * per_batch + i;
                ev(&format!("s{}", n % 7), json!({ "n": n }))
            })
            .collect();
        block_on(engine.append(batch)).unwrap();
    }
    block_on(engine.close());
    storage
}

fn lazy(storage: &MemoryStorage) -> Engine<MemoryStorage> {
    block_on(Engine::open_lazy(storage.another_handle(), options())).unwrap()
}

fn all(engine: &Engine<MemoryStorage>) -> Vec<Event> {
    engine.read(&ReadQuery::default()).unwrap()
}

fn range_positions(engine: &Engine<MemoryStorage>, after: u64, to: u64) -> Vec<u64> {
    let json = engine.range_json(after, to).unwrap();
    let events: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    events
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_lazy_open_reads_no_event_until_asked_and_then_only_those_after_the_position() {
    let storage = written(20, 10);
    let engine = lazy(&storage);
    assert_eq!(engine.head(), 200);
    assert!(!engine.is_complete());
    assert_eq!(engine.loaded_after(), 200);
    assert_eq!(engine.readable_to(150), 150, "nothing is loaded yet");
    assert!(engine.range_json(150, 200).is_err());

    block_on(engine.load_from(155)).unwrap();
    // Whole segments: the one holding 156 starts at 151.
    assert_eq!(engine.loaded_after(), 150);
    assert_eq!(engine.readable_to(155), 200);
    assert_eq!(
        range_positions(&engine, 155, 200),
        (156..=200).collect::<Vec<_>>()
    );
    assert!(
        engine.range_json(100, 200).is_err(),
        "events before 151 are not loaded"
    );
    let by_stream = engine.read(&ReadQuery {
        stream: Some("s1".into()),
        ..ReadQuery::default()
    });
    assert!(by_stream.is_err(), "queries by stream wait for the indexes");

    while !block_on(engine.load_step()).unwrap() {}
    assert!(engine.is_complete());
    assert_eq!(engine.loaded_after(), 0);
    let full = block_on(Engine::open(storage.another_handle(), options())).unwrap();
    assert_eq!(all(&engine), all(&full));
    let s1 = ReadQuery {
        stream: Some("s1".into()),
        ..ReadQuery::default()
    };
    assert_eq!(engine.read(&s1).unwrap(), full.read(&s1).unwrap());
    assert_eq!(engine.stream_version("s3"), full.stream_version("s3"));
    let id = full.read(&ReadQuery::default()).unwrap()[42].id;
    assert_eq!(engine.event_by_id(&id).unwrap().unwrap().position, 43);
}

#[test]
fn loading_from_the_start_reads_part_by_part_and_each_part_is_readable_at_once() {
    // More segments than one step reads: the first part is readable before the rest.
    let storage = written(150, 2);
    let engine = lazy(&storage);
    block_on(engine.load_from(0)).unwrap();
    let first = engine.readable_to(0);
    assert!(first > 0 && first < 300, "a first part, not all: {first}");
    assert_eq!(range_positions(&engine, 0, first).len() as u64, first);
    let mut readable = first;
    while readable < 300 {
        assert!(!block_on(engine.load_step()).unwrap());
        let now = engine.readable_to(0);
        assert!(now > readable, "each step reads more");
        readable = now;
    }
    block_on(engine.complete()).unwrap();
    assert!(engine.is_complete());
    assert_eq!(
        range_positions(&engine, 0, 300),
        (1..=300).collect::<Vec<_>>()
    );
}

#[test]
fn appends_after_a_lazy_open_keep_versions_ids_and_expectations_exact() {
    let storage = written(10, 10);
    let engine = lazy(&storage);
    block_on(engine.load_from(100)).unwrap();
    assert!(!engine.is_complete());
    // An id already in the log (position 3), far before what was loaded.
    let full = block_on(Engine::open(storage.another_handle(), options())).unwrap();
    let stored = all(&full)[2].clone();
    let mut again = ev(&stored.stream, json!(null)).with_id(stored.id);
    again.data = stored.data.clone();
    let out = block_on(engine.append(vec![again.clone()])).unwrap();
    assert!(engine.is_complete(), "an append completes the log first");
    assert_eq!(out.results, [AppendResult::Duplicate(3)]);
    // The same id on another event is told apart from the stored one.
    let err = block_on(engine.append(vec![ev(&stored.stream, json!("other")).with_id(stored.id)]))
        .unwrap_err();
    assert_eq!(err.code(), "DUPLICATE_ID");
    let out = block_on(engine.append(vec![
        ev("s0", json!("new")).expecting(ExpectedVersion::Exact(15)),
    ]))
    .unwrap();
    assert_eq!(out.results, [AppendResult::Appended(101)]);
    let last = engine.read(&ReadQuery {
        after: 100,
        ..ReadQuery::default()
    });
    assert_eq!(last.unwrap()[0].version, 16);
    let stale = block_on(engine.append(vec![
        ev("s0", json!("late")).expecting(ExpectedVersion::Exact(15)),
    ]));
    assert!(matches!(
        stale,
        Err(Error::WrongExpectedVersion { actual: 16, .. })
    ));
}

#[test]
fn another_writer_compacting_while_the_log_loads_changes_nothing_read() {
    let storage = written(40, 5);
    let engine = lazy(&storage);
    block_on(engine.load_from(120)).unwrap();
    assert!(!block_on(engine.load_step()).unwrap());
    // Another tab merges everything into a few segments meanwhile.
    let other = block_on(Engine::open(storage.another_handle(), options())).unwrap();
    block_on(other.compact()).unwrap();
    block_on(engine.complete()).unwrap();
    assert_eq!(all(&engine), all(&other));
    assert_eq!(engine.stream_version("s4"), other.stream_version("s4"));
}

#[test]
fn a_reset_by_another_writer_while_the_log_loads_is_taken_in_from_the_start() {
    let storage = written(10, 10);
    let engine = lazy(&storage);
    block_on(engine.load_from(90)).unwrap();
    let changes = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let seen = changes.clone();
    engine.subscribe(move |c| seen.borrow_mut().push(c));

    // Another writer resets the confirmed log (a new server epoch) to three events.
    let other = storage.another_handle();
    let mut builder = SegmentBuilder::new(1);
    let fresh: Vec<Event> = (1..=3u64)
        .map(|p| Event {
            id: EventId([p as u8; 16]),
            position: p,
            stream: "fresh".into(),
            version: p,
            event_type: "Reset".into(),
            schema_version: 1,
            data: serde_json::value::RawValue::from_string(p.to_string()).unwrap(),
            meta: None,
            time: 1,
            origin: None,
            pending: false,
            erased: false,
        })
        .collect();
    for e in &fresh {
        builder.push(&annals::codec::EventRef::from_event(e));
    }
    let segment = Segment {
        first: 1,
        bytes: builder.finish(),
    };
    let known = block_on(other.outline()).unwrap().now;
    block_on(other.transact(known, Scope::LogAndSnapshots, &mut |_| {
        Ok(Commit {
            reset_log: true,
            segment: Some(std::rc::Rc::new(segment.clone())),
            ..Commit::default()
        })
    }))
    .unwrap();

    while !block_on(engine.load_step()).unwrap() {}
    assert!(engine.is_complete());
    assert_eq!(engine.head(), 3);
    let events = all(&engine);
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.stream == "fresh"));
    assert!(
        changes.borrow().iter().any(|c| c.log_reset),
        "the listener heard of the reset"
    );
}

#[test]
fn a_catch_up_during_a_lazy_open_completes_the_log_and_takes_in_new_events() {
    let storage = written(5, 10);
    let engine = lazy(&storage);
    block_on(engine.load_from(50)).unwrap();
    let other = block_on(Engine::open(storage.another_handle(), options())).unwrap();
    block_on(other.append(vec![ev("s1", json!("from another tab"))])).unwrap();
    let change = block_on(engine.catch_up()).unwrap();
    assert!(engine.is_complete());
    assert_eq!((change.previous_head(), change.head()), (50, 51));
    assert_eq!(all(&engine), all(&other));
    assert_eq!(engine.stream_version("s1"), other.stream_version("s1"));
}

#[test]
fn an_empty_store_opens_complete() {
    let engine = lazy(&MemoryStorage::new());
    assert!(engine.is_complete());
    block_on(engine.append(vec![ev("a", json!(1))])).unwrap();
    assert_eq!(engine.stream_version("a"), 1);
}
