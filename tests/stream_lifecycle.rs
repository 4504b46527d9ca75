//! Stream lifecycle: `delete_stream` (a soft delete, `$StreamDeleted`) and `close_stream`
//! (a tombstone, `$StreamClosed`), on a local engine and through sync, where the server's
//! push rules (the in-memory server here; SQLite and PostgreSQL in `server_hostile.rs`)
//! apply the same rule.

use std::cell::RefCell;
use std::rc::Rc;

use annals::sync::client::{SyncClient, SyncOptions};
use annals::testing::in_process::InProcessTransport;
use annals::testing::memory_server::MemoryServer;
use annals::{
    AppendResult, Engine, EngineOptions, Error, ExpectedVersion, MemoryStorage, NewEvent, ReadQuery,
};
use futures::executor::block_on;
use serde_json::json;

fn open(synced: bool) -> Engine<MemoryStorage> {
    let options = EngineOptions {
        synced,
        ..EngineOptions::default()
    };
    block_on(Engine::open(MemoryStorage::new(), options)).unwrap()
}

fn ev(stream: &str, expected: ExpectedVersion) -> NewEvent {
    NewEvent::new(stream, "Noted", &json!({"n": 1}))
        .unwrap()
        .expecting(expected)
}

fn append(
    engine: &Engine<MemoryStorage>,
    stream: &str,
    expected: ExpectedVersion,
) -> Result<u64, Error> {
    let out = block_on(engine.append(vec![ev(stream, expected)]))?;
    Ok(out.stream_versions[0])
}

fn stream(engine: &Engine<MemoryStorage>, name: &str) -> Vec<(u64, String)> {
    engine
        .read(&ReadQuery {
            stream: Some(name.into()),
            ..ReadQuery::default()
        })
        .unwrap()
        .into_iter()
        .map(|e| (e.version, e.event_type))
        .collect()
}

#[test]
fn a_deleted_stream_reads_empty_keeps_counting_and_restarts_with_no_stream() {
    for synced in [false, true] {
        let engine = open(synced);
        append(&engine, "todo-1", ExpectedVersion::NoStream).unwrap();
        append(&engine, "todo-1", ExpectedVersion::Exact(1)).unwrap();
        append(&engine, "other", ExpectedVersion::Any).unwrap();

        let out = block_on(engine.delete_stream("todo-1", ExpectedVersion::Exact(2))).unwrap();
        assert_eq!(
            out.stream_versions,
            [3],
            "the delete is version 3 of the stream"
        );
        assert!(
            stream(&engine, "todo-1").is_empty(),
            "reads of it return nothing"
        );
        assert_eq!(
            engine.stream_version("todo-1"),
            3,
            "its version keeps counting"
        );
        // The whole log (what projections fold) still holds everything, the delete too.
        let types: Vec<String> = engine
            .read(&ReadQuery::default())
            .unwrap()
            .into_iter()
            .map(|e| e.event_type)
            .collect();
        assert_eq!(types, ["Noted", "Noted", "Noted", "$StreamDeleted"]);
        assert_eq!(
            stream(&engine, "other").len(),
            1,
            "other streams are untouched"
        );

        // Started again by an append expecting no stream; expectations keep counting.
        assert_eq!(
            append(&engine, "todo-1", ExpectedVersion::NoStream).unwrap(),
            4
        );
        assert_eq!(stream(&engine, "todo-1"), [(4, "Noted".to_string())]);
        let reread = engine
            .read(&ReadQuery {
                stream: Some("todo-1".into()),
                backwards: true,
                from_version: Some(1),
                ..ReadQuery::default()
            })
            .unwrap();
        assert_eq!(
            reread.len(),
            1,
            "backwards and fromVersion reads skip the deleted part"
        );
        // Once started again, no_stream no longer holds.
        assert!(matches!(
            append(&engine, "todo-1", ExpectedVersion::NoStream),
            Err(Error::WrongExpectedVersion { actual: 4, .. })
        ));
        assert_eq!(
            append(&engine, "todo-1", ExpectedVersion::Exact(4)).unwrap(),
            5
        );
    }
}

#[test]
fn deletes_and_closes_honour_expected_versions() {
    let engine = open(false);
    append(&engine, "s", ExpectedVersion::NoStream).unwrap();
    assert!(matches!(
        block_on(engine.delete_stream("s", ExpectedVersion::Exact(5))),
        Err(Error::WrongExpectedVersion { actual: 1, .. })
    ));
    assert!(matches!(
        block_on(engine.close_stream("s", ExpectedVersion::NoStream)),
        Err(Error::WrongExpectedVersion { actual: 1, .. })
    ));
    assert_eq!(engine.head(), 1, "nothing was written");
    // A deleted stream accepts a delete at its version (or `no_stream`) again.
    block_on(engine.delete_stream("s", ExpectedVersion::Exact(1))).unwrap();
    block_on(engine.delete_stream("s", ExpectedVersion::NoStream)).unwrap();
    assert_eq!(engine.stream_version("s"), 3);
}

#[test]
fn a_closed_stream_refuses_every_later_append_with_stream_deleted() {
    for synced in [false, true] {
        let engine = open(synced);
        append(&engine, "order-7", ExpectedVersion::NoStream).unwrap();
        block_on(engine.close_stream("order-7", ExpectedVersion::Exact(1))).unwrap();
        for expected in [
            ExpectedVersion::Any,
            ExpectedVersion::NoStream,
            ExpectedVersion::Exact(2),
        ] {
            let refused = append(&engine, "order-7", expected).unwrap_err();
            assert_eq!(refused.code(), "STREAM_DELETED", "{refused}");
        }
        let refused = block_on(engine.delete_stream("order-7", ExpectedVersion::Any)).unwrap_err();
        assert_eq!(refused.code(), "STREAM_DELETED");
        // The whole batch fails: nothing of it is written.
        let batch = vec![
            ev("fresh", ExpectedVersion::Any),
            ev("order-7", ExpectedVersion::Any),
        ];
        assert_eq!(
            block_on(engine.append(batch)).unwrap_err().code(),
            "STREAM_DELETED"
        );
        assert_eq!(engine.head(), 2);
        // Its events stay readable, the tombstone last.
        assert_eq!(
            stream(&engine, "order-7"),
            [(1, "Noted".to_string()), (2, "$StreamClosed".to_string())]
        );
    }
}

#[test]
fn a_close_in_the_same_batch_refuses_the_events_after_it() {
    let engine = open(false);
    let close = NewEvent::new("s", "$StreamClosed", &json!({})).unwrap();
    let refused = block_on(engine.append(vec![close, ev("s", ExpectedVersion::Any)])).unwrap_err();
    assert_eq!(refused.code(), "STREAM_DELETED");
    assert_eq!(engine.head(), 0);
}

#[test]
fn a_retry_of_the_close_is_a_duplicate_not_a_refusal() {
    let engine = open(false);
    let id = annals::EventId([7; 16]);
    let close = || {
        NewEvent::new("s", "$StreamClosed", &json!({}))
            .unwrap()
            .with_id(id)
    };
    block_on(engine.append(vec![close()])).unwrap();
    let again = block_on(engine.append(vec![close()])).unwrap();
    assert_eq!(again.results, [AppendResult::Duplicate(1)]);
}

#[test]
fn other_reserved_names_stay_refused() {
    let engine = open(false);
    for (stream, kind) in [("$all", "Noted"), ("s", "$Other"), ("$s", "$StreamDeleted")] {
        let refused =
            block_on(engine.append(vec![NewEvent::new(stream, kind, &json!({})).unwrap()]))
                .unwrap_err();
        assert_eq!(refused.code(), "INVALID_EVENT", "{stream} {kind}");
    }
}

struct Replica {
    engine: Engine<MemoryStorage>,
    sync: SyncClient<InProcessTransport>,
}

impl Replica {
    fn new(server: &Rc<MemoryServer>) -> Self {
        Replica {
            engine: open(true),
            sync: SyncClient::new(
                InProcessTransport::new(server.clone(), "todos"),
                SyncOptions::default(),
            ),
        }
    }

    fn sync(&self) -> annals::sync::client::SyncReport {
        block_on(self.sync.sync(&self.engine)).unwrap()
    }
}

#[test]
fn a_close_reaches_every_replica_and_the_server_refuses_appends_made_offline() {
    let server = Rc::new(MemoryServer::new());
    let (a, b) = (Replica::new(&server), Replica::new(&server));
    append(&a.engine, "cart", ExpectedVersion::NoStream).unwrap();
    a.sync();
    b.sync();
    // b appends offline while a closes the stream.
    append(&b.engine, "cart", ExpectedVersion::Any).unwrap();
    block_on(a.engine.close_stream("cart", ExpectedVersion::Exact(1))).unwrap();
    a.sync();

    let reported = Rc::new(RefCell::new(Vec::new()));
    let sink = reported.clone();
    b.sync
        .on_rejected(move |r| sink.borrow_mut().push(r.clone()));
    let report = b.sync();
    assert_eq!(report.rejected.len(), 1, "b's offline append is rejected");
    let reason = &reported.borrow()[0].reason;
    assert!(reason.starts_with("STREAM_DELETED"), "{reason}");
    // The close reached b: its own appends now fail at once.
    assert_eq!(b.engine.stream_version("cart"), 2);
    let refused = append(&b.engine, "cart", ExpectedVersion::Any).unwrap_err();
    assert_eq!(refused.code(), "STREAM_DELETED");
}

#[test]
fn a_delete_syncs_and_a_replica_restarts_the_stream_with_no_stream() {
    let server = Rc::new(MemoryServer::new());
    let (a, b) = (Replica::new(&server), Replica::new(&server));
    append(&a.engine, "draft", ExpectedVersion::NoStream).unwrap();
    block_on(a.engine.delete_stream("draft", ExpectedVersion::Exact(1))).unwrap();
    assert!(
        stream(&a.engine, "draft").is_empty(),
        "a pending delete hides the stream"
    );
    a.sync();
    b.sync();
    assert!(stream(&b.engine, "draft").is_empty());
    assert_eq!(b.engine.stream_version("draft"), 2);
    // b starts it again; the server accepts `no_stream` right after the delete.
    append(&b.engine, "draft", ExpectedVersion::NoStream).unwrap();
    let report = b.sync();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    a.sync();
    assert_eq!(stream(&a.engine, "draft"), [(3, "Noted".to_string())]);
}
