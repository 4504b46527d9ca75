//! Bounded local storage (issue 13 item 5): a synced replica drops confirmed events that
//! every projection's snapshot covers, keeping the newest ones, the outbox and the
//! snapshots; stream versions, lifecycles and expected versions count the dropped events;
//! reads below the retained range fail with `NOT_RETAINED` naming it; other handles (tabs)
//! and later opens see the cut; the server answers for ids no longer held locally.

use std::rc::Rc;

use annals::retention::Retention;
use annals::storage::{SnapshotRecord, Storage, FORMAT_BASE, FORMAT_MARKED};
use annals::sync::client::{SyncClient, SyncOptions};
use annals::testing::in_process::InProcessTransport;
use annals::testing::memory_server::MemoryServer;
use annals::{Engine, EngineOptions, EventId, ExpectedVersion, MemoryStorage, NewEvent, ReadQuery};
use futures::executor::block_on;
use serde_json::json;

struct Replica {
    engine: Engine<MemoryStorage>,
    sync: SyncClient<InProcessTransport>,
}

fn synced_options() -> EngineOptions {
    EngineOptions {
        synced: true,
        ..EngineOptions::default()
    }
}

impl Replica {
    fn new(server: &Rc<MemoryServer>) -> Self {
        Self::on(server, MemoryStorage::new())
    }

    fn on(server: &Rc<MemoryServer>, storage: MemoryStorage) -> Self {
        Replica {
            engine: block_on(Engine::open(storage, synced_options())).unwrap(),
            sync: SyncClient::new(
                InProcessTransport::new(server.clone(), "todos"),
                SyncOptions::default(),
            ),
        }
    }

    fn sync(&self) -> annals::sync::client::SyncReport {
        block_on(self.sync.sync(&self.engine)).unwrap()
    }

    fn append(&self, stream: &str, expected: ExpectedVersion) -> annals::Result<u64> {
        let event = NewEvent::new(stream, "Noted", &json!({ "n": 1 }))?.expecting(expected);
        Ok(block_on(self.engine.append(vec![event]))?.stream_versions[0])
    }

    fn snapshot(&self, name: &str, version: u32, position: u64) {
        let record = SnapshotRecord {
            name: name.into(),
            version,
            position,
            state: "{}".into(),
        };
        block_on(self.engine.put_snapshot(&record)).unwrap();
    }

    fn read(&self, query: ReadQuery) -> annals::Result<Vec<u64>> {
        Ok(self
            .engine
            .read(&query)?
            .into_iter()
            .map(|e| e.position)
            .collect())
    }
}

/// 20 confirmed events: stream `old` (versions 1 to 8, positions 1 to 8), then `mixed`
/// (positions 9 to 16, versions 1 to 8), then `new` (positions 17 to 20).
fn twenty_confirmed(server: &Rc<MemoryServer>) -> Replica {
    let replica = Replica::new(server);
    for (stream, count) in [("old", 8), ("mixed", 8), ("new", 4)] {
        for _ in 0..count {
            replica.append(stream, ExpectedVersion::Any).unwrap();
        }
    }
    replica.sync();
    assert_eq!(replica.engine.confirmed_head(), 20);
    replica
}

#[test]
fn a_cut_drops_what_every_snapshot_covers_and_keeps_the_newest_events() {
    let server = Rc::new(MemoryServer::new());
    let replica = twenty_confirmed(&server);
    let keep_5 = Retention::events(5);
    let projections = [("todos", 1), ("stats", 1)];

    replica.snapshot("todos", 1, 18);
    let cut = block_on(replica.engine.retain(keep_5, &projections)).unwrap();
    assert_eq!(cut, None, "`stats` has no snapshot: nothing may go");

    replica.snapshot("stats", 2, 12);
    let cut = block_on(replica.engine.retain(keep_5, &projections)).unwrap();
    assert_eq!(cut, None, "`stats` has a snapshot of another version");

    replica.snapshot("stats", 1, 12);
    let cut = block_on(replica.engine.retain(keep_5, &projections)).unwrap();
    assert_eq!(cut, Some(12), "up to the lowest snapshot");
    let range = replica.engine.retained_range();
    assert_eq!(
        (range.from, range.to, range.events, range.dropped),
        (13, 20, 8, 12)
    );

    replica.snapshot("stats", 1, 20);
    let cut = block_on(replica.engine.retain(keep_5, &projections)).unwrap();
    assert_eq!(
        cut,
        Some(15),
        "the newest 5 stay whatever the snapshots cover"
    );
    assert_eq!(replica.engine.head(), 20, "the head does not move");
    assert_eq!(
        replica
            .read(ReadQuery {
                after: 15,
                ..ReadQuery::default()
            })
            .unwrap(),
        [16, 17, 18, 19, 20]
    );
    assert!(
        block_on(replica.engine.snapshot("todos"))
            .unwrap()
            .is_some(),
        "snapshots are kept"
    );
}

#[test]
fn stream_versions_and_lifecycles_count_the_dropped_events() {
    let server = Rc::new(MemoryServer::new());
    let replica = Replica::new(&server);
    for _ in 0..3 {
        replica.append("kept", ExpectedVersion::Any).unwrap();
    }
    replica.append("gone", ExpectedVersion::NoStream).unwrap();
    block_on(
        replica
            .engine
            .delete_stream("deleted", ExpectedVersion::Any),
    )
    .unwrap();
    block_on(replica.engine.close_stream("closed", ExpectedVersion::Any)).unwrap();
    replica.append("kept", ExpectedVersion::Exact(3)).unwrap();
    replica.sync();
    block_on(replica.engine.drop_through(6)).unwrap();

    assert_eq!(replica.engine.stream_version("kept"), 4);
    assert_eq!(replica.engine.stream_version("gone"), 1);
    let conflict = replica
        .append("gone", ExpectedVersion::NoStream)
        .unwrap_err();
    assert_eq!(conflict.code(), "WRONG_EXPECTED_VERSION", "{conflict}");
    assert_eq!(
        replica.append("kept", ExpectedVersion::Exact(4)).unwrap(),
        5
    );
    assert_eq!(
        replica
            .append("deleted", ExpectedVersion::NoStream)
            .unwrap(),
        2,
        "a stream deleted before the cut restarts with no_stream"
    );
    let closed = replica.append("closed", ExpectedVersion::Any).unwrap_err();
    assert_eq!(
        closed.code(),
        "STREAM_DELETED",
        "closed before the cut: {closed}"
    );

    // The same holds in a replica opened after the cut, and after a sync.
    replica.sync();
    let later = Replica::on(&server, replica.engine.storage().another_handle());
    assert_eq!(later.engine.stream_version("kept"), 5);
    assert_eq!(later.engine.stream_version("deleted"), 2);
    let closed = later.append("closed", ExpectedVersion::Any).unwrap_err();
    assert_eq!(closed.code(), "STREAM_DELETED");
}

#[test]
fn reads_below_the_retained_range_fail_with_not_retained_naming_it() {
    let server = Rc::new(MemoryServer::new());
    let replica = twenty_confirmed(&server);
    block_on(replica.engine.drop_through(12)).unwrap();
    let stream = |name: &str, from: Option<u64>| ReadQuery {
        stream: Some(name.into()),
        from_version: from,
        ..ReadQuery::default()
    };

    let below = replica.read(ReadQuery::default()).unwrap_err();
    assert_eq!(below.code(), "NOT_RETAINED");
    assert!(below.to_string().contains("positions 13 to 20"), "{below}");
    assert!(below.to_string().contains("1 to 12"), "{below}");
    assert_eq!(
        replica
            .read(ReadQuery {
                after: 12,
                limit: Some(2),
                ..ReadQuery::default()
            })
            .unwrap(),
        [13, 14]
    );
    assert_eq!(
        replica.read(stream("new", None)).unwrap(),
        [17, 18, 19, 20],
        "wholly retained"
    );
    assert_eq!(
        replica.read(stream("mixed", Some(5))).unwrap(),
        [13, 14, 15, 16]
    );
    assert_eq!(
        replica.read(stream("mixed", None)).unwrap_err().code(),
        "NOT_RETAINED",
        "versions 1 to 4 of `mixed` are gone"
    );
    assert_eq!(
        replica.read(stream("old", Some(9))).unwrap(),
        Vec::<u64>::new()
    );
    let newest = ReadQuery {
        backwards: true,
        limit: Some(3),
        ..stream("mixed", None)
    };
    assert_eq!(
        replica.read(newest).unwrap(),
        [16, 15, 14],
        "the newest three are held"
    );
    let all_backwards = ReadQuery {
        backwards: true,
        ..ReadQuery::default()
    };
    assert_eq!(
        replica.read(all_backwards).unwrap_err().code(),
        "NOT_RETAINED"
    );
    let by_type = ReadQuery {
        event_type: Some("Noted".into()),
        ..ReadQuery::default()
    };
    assert_eq!(replica.read(by_type).unwrap_err().code(), "NOT_RETAINED");
    assert_eq!(
        block_on(replica.engine.load_from(0)).map_err(|e| e.code()),
        Ok(()),
        "loading from before the cut loads from the cut"
    );
    // Folding a stream for a decision (aggregates) needs every event it would see.
    let mut seen = 0;
    let fold = replica.engine.fold_stream("mixed", 0, |_| seen += 1);
    assert_eq!(fold.unwrap_err().code(), "NOT_RETAINED");
    assert!(replica.engine.fold_stream("new", 0, |_| seen += 1).is_ok());
    assert_eq!(seen, 4);
}

#[test]
fn another_tab_and_a_later_open_see_the_cut_and_keep_working() {
    let server = Rc::new(MemoryServer::new());
    let first = twenty_confirmed(&server);
    let storage = first.engine.storage().another_handle();
    let second = Replica::on(&server, storage.another_handle());
    // Lazily opened before the cut, loading after it.
    let lazy = block_on(Engine::open_lazy(
        storage.another_handle(),
        synced_options(),
    ))
    .unwrap();

    block_on(first.engine.drop_through(12)).unwrap();
    block_on(second.engine.catch_up()).unwrap();
    assert_eq!(second.engine.dropped(), 12);
    assert_eq!(second.engine.stream_version("mixed"), 8);
    assert_eq!(
        second
            .read(ReadQuery {
                after: 12,
                ..ReadQuery::default()
            })
            .unwrap()
            .len(),
        8
    );
    assert_eq!(
        second.read(ReadQuery::default()).unwrap_err().code(),
        "NOT_RETAINED"
    );
    block_on(lazy.complete()).unwrap();
    block_on(lazy.catch_up()).unwrap();
    assert_eq!(
        (lazy.dropped(), lazy.head(), lazy.stream_version("old")),
        (12, 20, 8)
    );

    // Appends in the tab that learnt of the cut, and in a store opened after it.
    second.append("mixed", ExpectedVersion::Exact(8)).unwrap();
    second.sync();
    let reopened = Replica::on(&server, storage.another_handle());
    assert_eq!(reopened.engine.retained_range().from, 13);
    assert_eq!(reopened.engine.confirmed_head(), 21);
    assert_eq!(reopened.engine.stream_version("mixed"), 9);
    reopened.append("mixed", ExpectedVersion::Exact(9)).unwrap();
    reopened.sync();
    block_on(first.engine.catch_up()).unwrap();
    assert_eq!(first.engine.confirmed_head(), 22);
    assert_eq!(server.head("todos"), 22);
}

#[test]
fn a_cut_through_a_segment_keeps_its_tail_and_never_touches_the_outbox() {
    let server = Rc::new(MemoryServer::new());
    let replica = twenty_confirmed(&server); // one pull: one segment of 20 events
    assert_eq!(replica.engine.storage().segment_count(), 1);
    replica
        .append("offline", ExpectedVersion::NoStream)
        .unwrap();
    replica
        .append("offline", ExpectedVersion::Exact(1))
        .unwrap();

    block_on(replica.engine.drop_through(12)).unwrap();
    assert_eq!(
        replica.engine.storage().segment_count(),
        1,
        "the tail of 8 events"
    );
    assert_eq!(replica.engine.pending_count(), 2);
    assert_eq!(replica.engine.head(), 22);
    let (segments, _) = block_on(replica.engine.storage().segments_after(12, 10)).unwrap();
    assert_eq!(segments[0].first, 13);

    let report = replica.sync();
    assert_eq!((report.pushed, report.rejected.len()), (2, 0));
    assert_eq!(replica.engine.pending_count(), 0);
    assert_eq!(replica.engine.confirmed_head(), 22);
    let cut = block_on(replica.engine.drop_through(12)).unwrap_err();
    assert_eq!(
        cut.code(),
        "INVALID_ARGUMENT",
        "nothing more at or below 12: {cut}"
    );
    let past = block_on(replica.engine.drop_through(23)).unwrap_err();
    assert_eq!(
        past.code(),
        "INVALID_ARGUMENT",
        "past the confirmed head: {past}"
    );
}

#[test]
fn a_store_without_sync_keeps_every_event() {
    let engine = block_on(Engine::open(MemoryStorage::new(), EngineOptions::default())).unwrap();
    block_on(engine.append(vec![NewEvent::new("s", "Noted", &json!({})).unwrap()])).unwrap();
    let refused = block_on(engine.retain(Retention::events(1), &[])).unwrap_err();
    assert_eq!(refused.code(), "INVALID_ARGUMENT");
    assert!(refused.to_string().contains("no other copy"), "{refused}");
    let zero = block_on(engine.retain(Retention::events(0), &[])).unwrap_err();
    assert_eq!(zero.code(), "INVALID_ARGUMENT");
}

#[test]
fn an_id_dropped_locally_is_judged_by_the_server_on_push() {
    let server = Rc::new(MemoryServer::new());
    let replica = Replica::new(&server);
    let id = EventId::parse("0190f5a8-0000-7000-8000-000000000001").unwrap();
    let event = |data: serde_json::Value| NewEvent::new("s", "Noted", &data).unwrap().with_id(id);
    block_on(replica.engine.append(vec![event(json!({ "n": 1 }))])).unwrap();
    replica.append("t", ExpectedVersion::Any).unwrap();
    replica.sync();
    block_on(replica.engine.drop_through(1)).unwrap();

    // The replica no longer knows the id: the retry is appended as new...
    block_on(replica.engine.append(vec![event(json!({ "n": 1 }))])).unwrap();
    assert_eq!(replica.engine.pending_count(), 1);
    // ...and the server, which holds it, answers `duplicate`: it leaves the outbox.
    let report = replica.sync();
    assert!(report.rejected.is_empty());
    assert_eq!(replica.engine.pending_count(), 0);
    assert_eq!(
        (replica.engine.confirmed_head(), server.head("todos")),
        (2, 2)
    );

    // Another event under that id is rejected as DUPLICATE_ID and reported.
    block_on(replica.engine.append(vec![event(json!({ "n": 2 }))])).unwrap();
    let report = replica.sync();
    assert_eq!(report.rejected.len(), 1);
    assert!(
        report.rejected[0].reason.starts_with("DUPLICATE_ID"),
        "{:?}",
        report.rejected
    );
    assert_eq!(server.head("todos"), 2);
}

#[test]
fn a_new_server_epoch_pulls_the_whole_log_again() {
    let server = Rc::new(MemoryServer::new());
    let replica = twenty_confirmed(&server);
    block_on(replica.engine.drop_through(12)).unwrap();
    server.wipe("todos");
    let other = Replica::new(&server);
    other.append("fresh", ExpectedVersion::Any).unwrap();
    other.sync();

    let report = replica.sync();
    assert_eq!(report.restarts, 1);
    assert_eq!(replica.engine.dropped(), 0, "a reset log starts at 1 again");
    assert_eq!(replica.read(ReadQuery::default()).unwrap(), [1]);
}

#[test]
fn a_second_cut_keeps_the_places_of_streams_the_first_one_dropped_wholly() {
    // Found by the model test: the second cut's record forgot `old`, dropped wholly by the
    // first, so a replica opened after it counted `old` from 0.
    let server = Rc::new(MemoryServer::new());
    let replica = twenty_confirmed(&server);
    block_on(replica.engine.drop_through(8)).unwrap(); // all of `old`
    block_on(replica.engine.drop_through(18)).unwrap();
    assert_eq!(replica.engine.stream_version("old"), 8);
    let later = Replica::on(&server, replica.engine.storage().another_handle());
    assert_eq!(later.engine.stream_version("old"), 8);
    let conflict = later.append("old", ExpectedVersion::NoStream).unwrap_err();
    assert_eq!(conflict.code(), "WRONG_EXPECTED_VERSION");
}

#[test]
fn a_newest_first_read_that_the_kept_events_fill_is_answered() {
    // Found by the model test: a cut leaving exactly `limit` events refused the read.
    let server = Rc::new(MemoryServer::new());
    let replica = twenty_confirmed(&server);
    block_on(replica.engine.drop_through(17)).unwrap();
    let newest = |limit| ReadQuery {
        backwards: true,
        limit: Some(limit),
        ..ReadQuery::default()
    };
    assert_eq!(replica.read(newest(3)).unwrap(), [20, 19, 18]);
    assert_eq!(replica.read(newest(4)).unwrap_err().code(), "NOT_RETAINED");
}

#[test]
fn a_snapshot_below_the_cut_is_refused_and_the_one_the_cut_was_made_against_stays() {
    // Found by the simulation: a tab's snapshot, planned before another tab cut, replaced
    // the snapshot the cut was made against; the projection could not open again.
    let server = Rc::new(MemoryServer::new());
    let first = twenty_confirmed(&server);
    let second = Replica::on(&server, first.engine.storage().another_handle());
    let third = Replica::on(&server, first.engine.storage().another_handle());
    first.snapshot("todos", 1, 18);
    block_on(first.engine.retain(Retention::events(1), &[("todos", 1)])).unwrap();
    let late = SnapshotRecord {
        name: "todos".into(),
        version: 1,
        position: 12,
        state: "{}".into(),
    };
    let refused = block_on(second.engine.put_snapshot(&late)).unwrap_err();
    assert_eq!(refused.code(), "NOT_RETAINED", "{refused}");
    let kept = block_on(first.engine.snapshot("todos")).unwrap().unwrap();
    assert_eq!(kept.position, 18);
    // The same policy applied by a tab that has not seen the cut changes nothing.
    assert_eq!(third.engine.dropped(), 0);
    let cut = block_on(third.engine.retain(Retention::events(1), &[("todos", 1)]));
    assert_eq!(cut.unwrap(), None);
    assert_eq!((third.engine.dropped(), second.engine.dropped()), (18, 18));
}

#[test]
fn a_cut_raises_the_storage_format_so_that_older_builds_refuse_the_store_as_too_new() {
    let server = Rc::new(MemoryServer::new());
    let storage = MemoryStorage::new();
    let replica = Replica::on(&server, storage.clone());
    for _ in 0..3 {
        replica.append("s", ExpectedVersion::Any).unwrap();
    }
    replica.sync();
    assert_eq!(
        storage.format_for_tests(),
        Some(FORMAT_BASE),
        "nothing cut yet: builds of format 2 still read it"
    );
    block_on(replica.engine.drop_through(2)).unwrap();
    assert_eq!((storage.format_for_tests(), FORMAT_MARKED), (Some(3), 3));
}
