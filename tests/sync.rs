//! Sync through an in-process server: offline replicas converge, nothing is lost or
//! doubled, conflicts are rejected and reported, positions rebase, epochs restart.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use annals::command::{Aggregate, Decider, Decision};
use annals::protocol::PushResult;
use annals::push::authority::{Authorities, DeciderAuthority};
use annals::sync::client::{SyncClient, SyncError, SyncOptions};
use annals::testing::faults::{Fault, Faulty};
use annals::testing::in_process::InProcessTransport;
use annals::testing::memory_server::MemoryServer;
use annals::{Engine, EngineOptions, Event, ExpectedVersion, MemoryStorage, NewEvent, ReadQuery};
use futures::executor::block_on;
use serde_json::json;

struct Replica {
    engine: Engine<MemoryStorage>,
    sync: SyncClient<Faulty<InProcessTransport>>,
}

impl Replica {
    fn new(server: &Rc<MemoryServer>) -> Self {
        Self::on(server, MemoryStorage::new())
    }

    fn on(server: &Rc<MemoryServer>, storage: MemoryStorage) -> Self {
        let engine = block_on(Engine::open(storage, synced())).unwrap();
        let transport = Faulty::new(InProcessTransport::new(server.clone(), "todos"));
        let options = SyncOptions {
            push_batch: 7,
            pull_limit: 5,
            ..SyncOptions::default()
        };
        Replica {
            engine,
            sync: SyncClient::new(transport, options),
        }
    }

    fn append(&self, stream: &str, data: serde_json::Value) {
        block_on(
            self.engine
                .append(vec![NewEvent::new(stream, "Noted", &data).unwrap()]),
        )
        .unwrap();
    }

    fn log(&self) -> Vec<Event> {
        self.engine.read(&ReadQuery::default()).unwrap()
    }

    fn sync(&self) -> annals::sync::client::SyncReport {
        block_on(self.sync.sync(&self.engine)).unwrap()
    }
}

fn synced() -> EngineOptions {
    EngineOptions {
        synced: true,
        ..EngineOptions::default()
    }
}

fn shape(log: &[Event]) -> Vec<(u64, String, u64, String, bool)> {
    log.iter()
        .map(|e| {
            (
                e.position,
                e.stream.clone(),
                e.version,
                e.data.get().to_owned(),
                e.pending,
            )
        })
        .collect()
}

#[test]
fn appends_wait_in_the_outbox_until_the_server_confirms_them() {
    let server = Rc::new(MemoryServer::new());
    let replica = Replica::new(&server);
    replica.append("a", json!(1));
    replica.append("a", json!(2));
    let log = replica.log();
    assert!(log.iter().all(|e| e.pending), "not confirmed yet");
    assert_eq!(
        (replica.engine.head(), replica.engine.confirmed_head()),
        (2, 0)
    );
    assert_eq!(log[1].version, 2);
    assert_eq!(log[0].origin.as_deref(), replica.engine.client_id());

    let report = replica.sync();
    assert_eq!((report.pushed, report.pulled), (2, 2));
    assert_eq!(replica.engine.pending_count(), 0);
    assert!(replica.log().iter().all(|e| !e.pending));
    assert_eq!(server.head("todos"), 2);
}

#[test]
fn three_offline_replicas_converge_to_one_log() {
    let server = Rc::new(MemoryServer::new());
    let replicas: Vec<Replica> = (0..3).map(|_| Replica::new(&server)).collect();
    for r in &replicas {
        r.sync.transport().set_online(false);
    }
    for round in 0..10 {
        for (i, r) in replicas.iter().enumerate() {
            r.append(
                &format!("todo-{}", round % 4),
                json!({ "by": i, "round": round }),
            );
        }
    }
    for r in &replicas {
        assert!(block_on(r.sync.sync(&r.engine)).is_err(), "offline");
        assert_eq!(r.sync.status().pending, 10);
        assert!(!r.sync.status().online);
    }
    for r in &replicas {
        r.sync.transport().set_online(true);
        r.sync();
    }
    for r in &replicas {
        r.sync(); // pick up what the others pushed after this one's sync
    }
    let first = shape(&replicas[0].log());
    assert_eq!(first.len(), 30);
    assert_eq!(
        first.iter().map(|e| e.0).collect::<Vec<_>>(),
        (1..=30).collect::<Vec<_>>()
    );
    for r in &replicas[1..] {
        assert_eq!(shape(&r.log()), first);
    }
    assert!(first.iter().all(|e| !e.4));
    let versions: Vec<u64> = replicas[0]
        .log()
        .iter()
        .filter(|e| e.stream == "todo-0")
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
}

#[test]
fn pending_events_rebase_behind_events_the_server_ordered_first() {
    let server = Rc::new(MemoryServer::new());
    let (a, b) = (Replica::new(&server), Replica::new(&server));
    a.append("s", json!("a1"));
    a.sync();
    b.append("s", json!("b1"));
    assert_eq!(
        (b.log()[0].position, b.log()[0].version),
        (1, 1),
        "provisional"
    );
    let seen = Rc::new(RefCell::new(Vec::new()));
    let sink = seen.clone();
    b.engine
        .subscribe(move |change| sink.borrow_mut().push(change));
    b.sync();
    let log = shape(&b.log());
    assert_eq!(log[0], (1, "s".into(), 1, "\"a1\"".into(), false));
    assert_eq!(log[1], (2, "s".into(), 2, "\"b1\"".into(), false));
    let first = seen.borrow()[0];
    assert!(
        first.rebased,
        "a confirmed event arrived before a pending one"
    );
    assert_eq!(
        (first.previous_confirmed, first.confirmed, first.pending),
        (0, 1, 1)
    );
}

#[test]
fn a_push_whose_response_is_lost_is_retried_without_duplicates() {
    let server = Rc::new(MemoryServer::new());
    let replica = Replica::new(&server);
    for i in 0..3 {
        replica.append("s", json!(i));
    }
    replica.sync.transport().inject(Fault::LoseResponse); // the pull before the push
    assert!(block_on(replica.sync.sync(&replica.engine)).is_err());
    replica.sync.transport().inject(Fault::LoseRequest);
    assert!(block_on(replica.sync.sync(&replica.engine)).is_err());
    // Push applied on the server, answer lost:
    assert!(block_on(replica.sync.sync(&replica.engine)).is_ok());
    let other = Replica::new(&server);
    replica.append("s", json!(3));
    replica.sync.transport().inject(Fault::LoseResponse);
    // The pull goes through first; then the push's answer is lost.
    let _ = block_on(replica.sync.sync(&replica.engine));
    let _ = block_on(replica.sync.sync(&replica.engine));
    assert_eq!(server.head("todos"), 4, "every event stored once");
    other.sync();
    assert_eq!(shape(&other.log()), shape(&replica.log()));
    assert_eq!(replica.engine.pending_count(), 0);
}

#[test]
fn a_lost_push_response_then_a_retry_is_answered_duplicate() {
    let server = Rc::new(MemoryServer::new());
    let replica = Replica::new(&server);
    replica.append("s", json!(1));
    replica.sync(); // nothing special
    replica.append("s", json!(2));
    // Order of requests in a sync: pull, push, pull. Lose the push's answer.
    replica
        .sync
        .transport()
        .inject_after_one(Fault::LoseResponse);
    assert!(block_on(replica.sync.sync(&replica.engine)).is_err());
    assert_eq!(server.head("todos"), 2, "the server stored it");
    assert_eq!(
        replica.engine.pending_count(),
        1,
        "the client does not know yet"
    );
    replica.sync();
    assert_eq!(server.head("todos"), 2, "the retry stored nothing new");
    assert_eq!(replica.log().len(), 2);
    assert_eq!(replica.engine.pending_count(), 0);
}

#[test]
fn conflicting_expectations_are_rejected_reported_and_kept_readable() {
    let server = Rc::new(MemoryServer::new());
    let (a, b) = (Replica::new(&server), Replica::new(&server));
    let create = |r: &Replica, title: &str| {
        let event = NewEvent::new("todo-1", "TodoAdded", &json!({ "title": title })).unwrap();
        block_on(
            r.engine
                .append(vec![event.expecting(ExpectedVersion::NoStream)]),
        )
        .unwrap();
    };
    create(&a, "milk");
    create(&b, "eggs"); // offline from each other: both think the stream is new
    a.sync();
    let reported = Rc::new(RefCell::new(Vec::new()));
    let sink = reported.clone();
    b.sync
        .on_rejected(move |r| sink.borrow_mut().push(r.clone()));
    let report = b.sync();
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(reported.borrow().len(), 1);
    let rejection = &reported.borrow()[0];
    assert_eq!(rejection.actual_version, Some(1));
    assert!(rejection.reason.contains("wrong expected version"));
    assert_eq!(rejection.event.data.get(), r#"{"title":"eggs"}"#);
    assert_eq!(b.engine.pending_count(), 0, "removed from the outbox");
    assert_eq!(shape(&b.log()), shape(&a.log()));
    let kept = block_on(b.engine.rejected()).unwrap();
    assert_eq!(kept, vec![rejection.clone()]);
}

#[test]
fn an_id_the_server_holds_as_another_event_is_rejected_and_reported_once() {
    let server = Rc::new(MemoryServer::new());
    let (a, b, c) = (
        Replica::new(&server),
        Replica::new(&server),
        Replica::new(&server),
    );
    let id = annals::EventId([4; 16]);
    let append = |r: &Replica, data: serde_json::Value| {
        let event = NewEvent::new("s", "Noted", &data).unwrap().with_id(id);
        block_on(r.engine.append(vec![event])).unwrap();
    };
    append(&a, json!("first"));
    append(&b, json!("other")); // offline: the same id on another event
    append(&c, json!("first")); // the very same event: a duplicate, confirmed
    a.sync();
    let reported = Rc::new(RefCell::new(Vec::new()));
    let sink = reported.clone();
    b.sync
        .on_rejected(move |r| sink.borrow_mut().push(r.clone()));
    // B pulls first: the page's event under its pending id is another event, so the pending
    // one is refused and reported, not taken as confirmed.
    b.sync();
    assert_eq!(reported.borrow().len(), 1);
    let rejection = reported.borrow()[0].clone();
    assert!(
        rejection.reason.starts_with("DUPLICATE_ID: "),
        "{}",
        rejection.reason
    );
    assert_eq!(rejection.event.data.get(), r#""other""#);
    assert_eq!(b.engine.pending_count(), 0);
    assert_eq!(block_on(b.engine.rejected()).unwrap(), vec![rejection]);
    assert_eq!(data_of(&b.log()), ["\"first\""]);
    // Pushed rather than pulled, the server's answer says the same.
    let rejected = block_on(c.engine.append(vec![NewEvent::new("t", "Noted", &1)
        .unwrap()
        .with_id(annals::EventId([5; 16]))]));
    rejected.unwrap();
    c.sync();
    assert_eq!(c.engine.pending_count(), 0);
    assert_eq!(data_of(&c.log()), ["\"first\"", "1"]);
    assert!(block_on(c.engine.rejected()).unwrap().is_empty());
    // A push of the reused id answers `rejected` with a DUPLICATE_ID reason.
    let pushed = server.push(
        "todos",
        &annals::protocol::PushRequest {
            client_id: "x".into(),
            events: vec![annals::protocol::PushEvent {
                id,
                stream: "s".into(),
                event_type: "Noted".into(),
                schema_version: 1,
                data: serde_json::value::RawValue::from_string("\"third\"".into()).unwrap(),
                meta: None,
                time: 0,
                expected_version: ExpectedVersion::Any,
                erased: false,
            }],
        },
    );
    assert!(matches!(
        &pushed.results[0],
        PushResult::Rejected { reason, .. } if reason.starts_with("DUPLICATE_ID: ")
    ));
    reported.borrow_mut().clear();
    b.sync();
    assert!(reported.borrow().is_empty(), "announced once");
}

#[test]
fn a_changed_server_epoch_restarts_the_pull_and_keeps_pending_events() {
    let server = Rc::new(MemoryServer::new());
    let replica = Replica::new(&server);
    replica.append("s", json!("old"));
    replica.sync();
    let old_epoch = replica.engine.epoch();
    server.wipe("todos");
    let other = Replica::new(&server);
    other.append("t", json!("new world"));
    other.sync();
    replica.append("s", json!("mine"));
    let report = replica.sync();
    assert_eq!(report.restarts, 1);
    assert_ne!(replica.engine.epoch(), old_epoch);
    let data: Vec<String> = replica
        .log()
        .iter()
        .map(|e| e.data.get().to_owned())
        .collect();
    assert_eq!(data, ["\"new world\"", "\"mine\""]);
    assert_eq!(replica.engine.pending_count(), 0);
}

#[test]
fn the_outbox_and_client_id_survive_a_restart() {
    let server = Rc::new(MemoryServer::new());
    let storage = MemoryStorage::new();
    let replica = Replica::on(&server, storage.another_handle());
    replica.append("s", json!(1));
    let client_id = replica.engine.client_id().map(str::to_owned);
    block_on(replica.engine.close());
    let restarted = Replica::on(&server, storage.another_handle());
    assert_eq!(restarted.engine.client_id().map(str::to_owned), client_id);
    assert_eq!(restarted.engine.pending_count(), 1);
    restarted.sync();
    assert_eq!(server.head("todos"), 1);
    assert_eq!(restarted.log()[0].origin, client_id);
}

#[test]
fn another_tab_sees_synced_events_through_the_shared_store() {
    let server = Rc::new(MemoryServer::new());
    let storage = MemoryStorage::new();
    let syncing_tab = Replica::on(&server, storage.another_handle());
    let other_tab = block_on(Engine::open(storage.another_handle(), synced())).unwrap();
    block_on(other_tab.append(vec![
        NewEvent::new("s", "T", &json!("from the other tab")).unwrap(),
    ]))
    .unwrap();
    syncing_tab.sync(); // pushes the other tab's event: the outbox is shared
    assert_eq!(server.head("todos"), 1);
    let change = block_on(other_tab.catch_up()).unwrap();
    assert!(change.rebased);
    assert_eq!(
        (other_tab.confirmed_head(), other_tab.pending_count()),
        (1, 0)
    );
}

#[test]
fn a_local_store_that_becomes_synced_pushes_what_it_had() {
    let server = Rc::new(MemoryServer::new());
    let storage = MemoryStorage::new();
    let local = block_on(Engine::open(
        storage.another_handle(),
        EngineOptions::default(),
    ))
    .unwrap();
    block_on(local.append(vec![
        NewEvent::new("s", "T", &1).unwrap(),
        NewEvent::new("s", "T", &2).unwrap(),
    ]))
    .unwrap();
    block_on(local.close());
    let replica = Replica::on(&server, storage);
    assert_eq!(
        (
            replica.engine.confirmed_head(),
            replica.engine.pending_count()
        ),
        (0, 2)
    );
    replica.sync();
    assert_eq!(server.head("todos"), 2);
}

struct Counter;

impl Decider for Counter {
    type State = i64;
    type Command = i64;
    fn initial(&self) -> i64 {
        0
    }
    fn evolve(&self, state: &mut i64, event: &annals::codec::EventRef<'_>) {
        *state += event.data_as::<i64>().unwrap_or(0);
    }
    fn decide(&self, add: &i64, state: &i64) -> Result<Vec<Decision>, String> {
        if state + add > 10 {
            return Err(format!("{state} + {add} would pass 10"));
        }
        Ok(vec![Decision::new("Added", add).map_err(|e| e.to_string())?])
    }
    fn check(&self, state: &i64, event: &annals::codec::EventRef<'_>) -> Result<(), String> {
        let add = event.data_as::<i64>().map_err(|e| e.to_string())?;
        if state + add > 10 {
            return Err(format!("{state} + {add} would pass 10"));
        }
        Ok(())
    }
}

#[test]
fn a_server_side_decider_rejects_what_offline_clients_decided_separately() {
    let authority = DeciderAuthority::new(Counter, |stream: &str| stream.starts_with("counter-"));
    let server = Rc::new(MemoryServer::with_authorities(Authorities::new(vec![
        Arc::new(authority),
    ])));
    let (a, b) = (Replica::new(&server), Replica::new(&server));
    let (counter_a, counter_b) = (Aggregate::new(Counter), Aggregate::new(Counter));
    // Each client, offline, sees 0 and decides +6: fine locally, 12 together.
    block_on(counter_a.execute(&a.engine, "counter-1", &6, Default::default())).unwrap();
    block_on(counter_b.execute(&b.engine, "counter-1", &6, Default::default())).unwrap();
    // Without expected versions the server's stream checks alone would accept both.
    block_on(
        b.engine
            .append(vec![NewEvent::new("counter-2", "Added", &20).unwrap()]),
    )
    .unwrap();
    a.sync();
    let report = b.sync();
    let reasons: Vec<&str> = report.rejected.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons.len(), 2);
    assert!(
        reasons.iter().any(|r| r.contains("wrong expected version")),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"0 + 20 would pass 10"),
        "the decider's message: {reasons:?}"
    );
    assert_eq!(server.head("todos"), 1);
    assert_eq!(counter_b.load(&b.engine, "counter-1").unwrap(), (1, 6));
    // Streams it does not claim are not checked.
    block_on(
        b.engine
            .append(vec![NewEvent::new("other", "Added", &99).unwrap()]),
    )
    .unwrap();
    b.sync();
    assert_eq!(server.head("todos"), 2);
}

#[test]
fn a_server_side_decider_leaves_lifecycle_events_to_annals_and_folds_from_the_last_delete() {
    let authority = DeciderAuthority::new(Counter, |stream: &str| stream.starts_with("counter-"));
    let server = Rc::new(MemoryServer::with_authorities(Authorities::new(vec![
        Arc::new(authority),
    ])));
    let replica = Replica::new(&server);
    let counter = Aggregate::new(Counter);
    block_on(counter.execute(&replica.engine, "counter-1", &6, Default::default())).unwrap();
    replica.sync();
    // The decider does not judge a delete (its data is no number)...
    block_on(
        replica
            .engine
            .delete_stream("counter-1", annals::ExpectedVersion::Exact(1)),
    )
    .unwrap();
    // ...and after it folds from its initial state, as the aggregate does: 0 + 6.
    block_on(counter.execute(&replica.engine, "counter-1", &6, Default::default())).unwrap();
    let report = replica.sync();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(server.head("todos"), 3);
    // An erasure likewise, and the erased events are not folded either.
    block_on(
        replica
            .engine
            .erase_stream("counter-1", annals::ExpectedVersion::Exact(3)),
    )
    .unwrap();
    block_on(counter.execute(&replica.engine, "counter-1", &9, Default::default())).unwrap();
    let report = replica.sync();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(server.head("todos"), 5);
    assert_eq!(counter.load(&replica.engine, "counter-1").unwrap(), (5, 9));
}

#[test]
fn commands_on_a_synced_store_decide_on_the_optimistic_state() {
    let server = Rc::new(MemoryServer::new());
    let replica = Replica::new(&server);
    let counter = Aggregate::new(Counter);
    block_on(counter.execute(&replica.engine, "c", &6, Default::default())).unwrap();
    let refused = block_on(counter.execute(&replica.engine, "c", &6, Default::default()));
    assert_eq!(
        refused.unwrap_err().code(),
        "COMMAND_REJECTED",
        "sees its own pending event"
    );
    replica.sync();
    block_on(counter.execute(&replica.engine, "c", &4, Default::default())).unwrap();
    assert_eq!(counter.load(&replica.engine, "c").unwrap(), (2, 10));
}

/// Records the pushes it passes on, so that a test can deliver a late copy of one.
struct Tap {
    inner: InProcessTransport,
    pushes: Rc<RefCell<Vec<annals::protocol::PushRequest>>>,
}

impl annals::sync::client::Transport for Tap {
    async fn push(
        &self,
        request: &annals::protocol::PushRequest,
    ) -> Result<annals::protocol::PushResponse, annals::sync::client::TransportError> {
        self.pushes.borrow_mut().push(request.clone());
        self.inner.push(request).await
    }

    async fn pull(
        &self,
        after: u64,
        limit: usize,
        wait_seconds: u32,
    ) -> Result<annals::protocol::PullResponse, annals::sync::client::TransportError> {
        self.inner.pull(after, limit, wait_seconds).await
    }
}

/// Regression (found by the deterministic simulation): a late copy of a push, arriving
/// after the client was told its event was refused, was judged again and could store the
/// event the app had been told was rejected. The server's verdict is now final for that
/// event.
#[test]
fn a_late_copy_of_a_push_cannot_store_an_event_reported_rejected() {
    let authority = DeciderAuthority::new(Counter, |stream: &str| stream.starts_with("counter-"));
    let server = Rc::new(MemoryServer::with_authorities(Authorities::new(vec![
        Arc::new(authority),
    ])));
    let b = Replica::new(&server);
    let a = block_on(Engine::open(MemoryStorage::new(), synced())).unwrap();
    let pushes = Rc::new(RefCell::new(Vec::new()));
    let a_sync = SyncClient::new(
        Tap {
            inner: InProcessTransport::new(server.clone(), "todos"),
            pushes: pushes.clone(),
        },
        SyncOptions::default(),
    );
    let reported = Rc::new(RefCell::new(Vec::new()));
    let sink = reported.clone();
    a_sync.on_rejected(move |r| sink.borrow_mut().push(r.event.id));

    b.append("counter-1", json!(5));
    b.sync(); // the counter is at 5
    let add = NewEvent::new("counter-1", "Added", &8).unwrap();
    block_on(a.append(vec![add])).unwrap();
    let report = block_on(a_sync.sync(&a)).unwrap();
    assert_eq!(report.rejected.len(), 1, "5 + 8 would pass 10");
    let refused = report.rejected[0].event.id;
    assert_eq!(*reported.borrow(), [refused]);

    b.append("counter-1", json!(-5));
    b.sync(); // back to 0: +8 would now pass the check
    let late = pushes.borrow()[0].clone();
    let answer = server.push("todos", &late);
    assert!(
        matches!(&answer.results[0], PushResult::Rejected { id, .. } if *id == refused),
        "{answer:?}"
    );

    block_on(a_sync.sync(&a)).unwrap();
    b.sync();
    assert_eq!(server.head("todos"), 2);
    assert!(a.event_by_id(&refused).unwrap().is_none());
    assert_eq!(
        shape(&a.read(&ReadQuery::default()).unwrap()),
        shape(&b.log())
    );
    assert_eq!(block_on(a.rejected()).unwrap().len(), 1);
    assert_eq!(reported.borrow().len(), 1, "reported once");
}

fn data_of(log: &[Event]) -> Vec<String> {
    log.iter().map(|e| e.data.get().to_owned()).collect()
}

/// Regression (found by the deterministic simulation): a tab that takes over sync judged
/// the server's epoch by its own memory, which was empty (it had never pulled itself), and
/// appended the events of a replaced database to the log of the old one.
#[test]
fn a_tab_that_takes_over_sync_notices_an_epoch_it_never_saw() {
    let server = Rc::new(MemoryServer::new());
    let storage = MemoryStorage::new();
    let before = Replica::new(&server);
    before.append("s", json!("old"));
    before.sync();
    let first_tab = Replica::on(&server, storage.another_handle());
    let second_tab = Replica::on(&server, storage.another_handle());
    first_tab.sync(); // the store's log: "old", epoch 1
    server.wipe("todos");
    let after = Replica::new(&server);
    after.append("t", json!("new"));
    after.append("t", json!("newer"));
    after.sync();
    block_on(first_tab.engine.close());
    let report = second_tab.sync(); // takes over
    assert_eq!(report.restarts, 1);
    assert_eq!(data_of(&second_tab.log()), ["\"new\"", "\"newer\""]);
    assert_eq!(second_tab.engine.epoch(), after.engine.epoch());
}

/// Regression (found by the deterministic simulation): after a push, the server's database
/// was replaced; the pull that followed restarted the log, and the event the old database
/// had accepted, at a position now behind the cursor, was taken for one the server already
/// had and silently left the outbox.
#[test]
fn an_event_accepted_by_a_replaced_database_is_pushed_again() {
    struct ReplaceAfterPush {
        inner: InProcessTransport,
        server: Rc<MemoryServer>,
        armed: std::cell::Cell<bool>,
    }
    impl annals::sync::client::Transport for ReplaceAfterPush {
        async fn push(
            &self,
            request: &annals::protocol::PushRequest,
        ) -> Result<annals::protocol::PushResponse, annals::sync::client::TransportError> {
            let answer = self.inner.push(request).await;
            if self.armed.replace(false) {
                // The database is replaced right after it answered; the new one soon
                // holds more events than the old one did.
                self.server.wipe("todos");
                let events = (0..3u8)
                    .map(|i| annals::protocol::PushEvent {
                        id: annals::EventId([i + 1; 16]),
                        stream: "other".into(),
                        event_type: "T".into(),
                        schema_version: 1,
                        data: serde_json::value::to_raw_value(&i).unwrap(),
                        meta: None,
                        time: 0,
                        expected_version: ExpectedVersion::Any,
                        erased: false,
                    })
                    .collect();
                self.server.push(
                    "todos",
                    &annals::protocol::PushRequest {
                        client_id: "other".into(),
                        events,
                    },
                );
            }
            answer
        }
        async fn pull(
            &self,
            after: u64,
            limit: usize,
            wait_seconds: u32,
        ) -> Result<annals::protocol::PullResponse, annals::sync::client::TransportError> {
            self.inner.pull(after, limit, wait_seconds).await
        }
    }
    let server = Rc::new(MemoryServer::new());
    let engine = block_on(Engine::open(MemoryStorage::new(), synced())).unwrap();
    let sync = SyncClient::new(
        ReplaceAfterPush {
            inner: InProcessTransport::new(server.clone(), "todos"),
            server: server.clone(),
            armed: std::cell::Cell::new(true),
        },
        SyncOptions::default(),
    );
    block_on(engine.append(vec![NewEvent::new("mine", "T", &json!("keep me")).unwrap()])).unwrap();
    let report = block_on(sync.sync(&engine)).unwrap();
    assert_eq!(report.restarts, 1);
    assert_eq!(engine.pending_count(), 0);
    let log = engine.read(&ReadQuery::default()).unwrap();
    assert_eq!(log.len(), 4);
    assert_eq!(
        log[3].data.get(),
        "\"keep me\"",
        "pushed again to the new database"
    );
    assert_eq!(server.head("todos"), 4);
}

/// Regression (found by the deterministic simulation): a tab that took over sync asked for
/// events after the cursor it remembered, though the previous syncing tab had reset the log
/// on disk since (a new epoch): the pull failed with "the server sent position 4 where 1
/// was due".
#[test]
fn a_tab_that_takes_over_sync_pulls_from_the_cursor_on_disk() {
    let server = Rc::new(MemoryServer::new());
    let storage = MemoryStorage::new();
    let before = Replica::new(&server);
    for i in 0..3 {
        before.append("s", json!(i));
    }
    before.sync();
    let first_tab = Replica::on(&server, storage.another_handle());
    let second_tab = Replica::on(&server, storage.another_handle());
    first_tab.sync();
    block_on(second_tab.engine.catch_up()).unwrap();
    assert_eq!(second_tab.engine.confirmed_head(), 3);
    server.wipe("todos");
    let after = Replica::new(&server);
    for i in 0..5 {
        after.append("t", json!(i));
    }
    after.sync();
    // The first tab sees the new epoch (its log is reset) and closes before pulling more.
    let answer = server.pull("todos", 3, 10);
    let outcome = block_on(first_tab.engine.apply_pull(&answer)).unwrap();
    assert!(outcome.restart);
    block_on(first_tab.engine.close());
    let report = block_on(second_tab.sync.sync(&second_tab.engine)).expect("a clean takeover");
    assert_eq!(report.pulled, 5);
    assert_eq!(shape(&second_tab.log()), shape(&after.log()));
}

/// Regression (found by the deterministic simulation): a snapshot folded from the old
/// confirmed log, stored by a tab that had not seen the log reset yet (a new server epoch),
/// outlived the reset and was loaded against the new log.
#[test]
fn a_snapshot_of_a_log_that_was_reset_is_refused() {
    use annals::projection::{Projection, ProjectionRunner};
    use annals::storage::SnapshotRecord;
    struct Sum;
    impl Projection for Sum {
        type State = (u64, i64);
        fn name(&self) -> &str {
            "sum"
        }
        fn initial(&self) -> (u64, i64) {
            (0, 0)
        }
        fn apply(&self, state: &mut (u64, i64), event: &annals::codec::EventRef<'_>) {
            state.0 += 1;
            state.1 += event.data_as::<i64>().unwrap_or(0);
        }
    }
    let server = Rc::new(MemoryServer::new());
    let storage = MemoryStorage::new();
    let syncing = Replica::on(&server, storage.another_handle());
    let other_tab = block_on(Engine::open(storage.another_handle(), synced())).unwrap();
    for i in 1..=5 {
        syncing.append("s", json!(i * 100));
    }
    syncing.sync();
    block_on(other_tab.catch_up()).unwrap();
    let runner = block_on(ProjectionRunner::open(&other_tab, Sum)).unwrap();
    assert_eq!(*runner.state(), (5, 1500));

    server.wipe("todos");
    let after = Replica::new(&server);
    for i in 1..=6 {
        after.append("t", json!(i));
    }
    after.sync();
    syncing.sync(); // the store's log is the new one now: 6 events
    assert_eq!(syncing.engine.confirmed_head(), 6);

    // The other tab has not looked yet: what it folded is of the old log.
    let stale = SnapshotRecord {
        name: "sum".into(),
        version: 1,
        position: 5,
        state: "[5,1500]".into(),
    };
    let refused = block_on(other_tab.put_snapshot(&stale)).unwrap_err();
    assert!(refused.to_string().contains("reset"), "{refused}");
    // The runner knows the generation it folded from, even once the engine has caught up.
    assert_eq!(
        other_tab.confirmed_head(),
        6,
        "the failed write read the reset in"
    );
    let refused = block_on(runner.save_snapshot(&other_tab)).unwrap_err();
    assert!(refused.to_string().contains("reset"), "{refused}");
    assert_eq!(block_on(other_tab.snapshot("sum")).unwrap(), None);
    let reopened = block_on(ProjectionRunner::open(&syncing.engine, Sum)).unwrap();
    assert_eq!(*reopened.state(), (6, 21));

    // A snapshot of the new log is stored as usual.
    let fresh = block_on(ProjectionRunner::open(&other_tab, Sum)).unwrap();
    block_on(fresh.save_snapshot(&other_tab)).unwrap();
    assert_eq!(
        block_on(other_tab.snapshot("sum"))
            .unwrap()
            .map(|s| s.position),
        Some(6)
    );
}

/// A transport that records the ids of every event it pushes, and can run a hook once a
/// push has reached the server (standing in for "the tab froze or closed meanwhile").
struct Watched {
    inner: InProcessTransport,
    pushed: Rc<RefCell<Vec<Vec<String>>>>,
    requests: Rc<std::cell::Cell<usize>>,
    after_push: RefCell<Option<Box<dyn Fn()>>>,
}

impl Watched {
    fn new(server: &Rc<MemoryServer>) -> Self {
        Watched {
            inner: InProcessTransport::new(server.clone(), "todos"),
            pushed: Rc::default(),
            requests: Rc::default(),
            after_push: RefCell::new(None),
        }
    }
}

impl annals::sync::client::Transport for Watched {
    async fn push(
        &self,
        request: &annals::protocol::PushRequest,
    ) -> Result<annals::protocol::PushResponse, annals::sync::client::TransportError> {
        self.requests.set(self.requests.get() + 1);
        let ids = request.events.iter().map(|e| e.id.to_string()).collect();
        self.pushed.borrow_mut().push(ids);
        let response = self.inner.push(request).await;
        if let Some(hook) = self.after_push.borrow().as_ref() {
            hook();
        }
        response
    }

    async fn pull(
        &self,
        after: u64,
        limit: usize,
        wait_seconds: u32,
    ) -> Result<annals::protocol::PullResponse, annals::sync::client::TransportError> {
        self.requests.set(self.requests.get() + 1);
        self.inner.pull(after, limit, wait_seconds).await
    }
}

/// A synced engine on `storage` and a client whose pushes are watched.
fn watched_tab(
    server: &Rc<MemoryServer>,
    storage: MemoryStorage,
) -> (Engine<MemoryStorage>, Rc<SyncClient<Watched>>) {
    let engine = block_on(Engine::open(storage, synced())).unwrap();
    let options = SyncOptions {
        push_batch: 7,
        ..SyncOptions::default()
    };
    (
        engine,
        Rc::new(SyncClient::new(Watched::new(server), options)),
    )
}

fn append_n(engine: &Engine<MemoryStorage>, stream: &str, n: usize) {
    let events = (0..n)
        .map(|i| NewEvent::new(stream, "Noted", &json!(i)).unwrap())
        .collect();
    block_on(engine.append(events)).unwrap();
}

/// A tab that stops syncing (it closed, or froze and let go of the sync lock) while a push
/// is on the way finishes that request, and sends nothing after it: the tab that takes over
/// pushes the rest, and would otherwise be pushing the same events at the same time.
#[test]
fn a_client_stopped_during_a_sync_sends_no_further_request() {
    let server = Rc::new(MemoryServer::new());
    let (engine, client) = watched_tab(&server, MemoryStorage::new());
    append_n(&engine, "s", 20);
    let weak = Rc::downgrade(&client);
    *client.transport().after_push.borrow_mut() = Some(Box::new(move || {
        if let Some(client) = weak.upgrade() {
            client.stop();
        }
    }));
    let requests_before_push = 1; // the pull a sync starts with
    let result = block_on(client.sync(&engine));
    assert!(
        matches!(result, Err(SyncError::Stopped)),
        "the sync ends as stopped: {result:?}"
    );
    assert_eq!(result.unwrap_err().code(), "OFFLINE");
    assert_eq!(
        client.transport().pushed.borrow().len(),
        1,
        "one push, of 3 due"
    );
    assert_eq!(client.transport().requests.get(), requests_before_push + 1);
    assert_eq!(server.head("todos"), 7, "the push on the way was stored");
    assert_eq!(
        engine.pending_count(),
        20,
        "nothing confirmed: no pull brought the pushed events back"
    );
    assert!(
        block_on(client.sync(&engine)).is_err(),
        "stopped for good: a later sync fails too"
    );
    assert_eq!(client.transport().requests.get(), requests_before_push + 1);
    assert_eq!(client.status().last_error, None, "stopping is not an error");
}

/// A client stopped before its live loop first runs (a tab frozen right after it was handed
/// the sync lock) never syncs: the stop is not forgotten when the loop starts.
#[test]
fn a_client_stopped_before_its_loop_starts_sends_nothing() {
    struct NoSleep;
    impl annals::sync::client::Timer for NoSleep {
        async fn sleep(&self, _ms: u64) {}
    }
    let server = Rc::new(MemoryServer::new());
    let (engine, client) = watched_tab(&server, MemoryStorage::new());
    append_n(&engine, "s", 3);
    client.stop();
    // Were the stop forgotten, the loop would sync; the hook then stops it for the test to end.
    let weak = Rc::downgrade(&client);
    *client.transport().after_push.borrow_mut() = Some(Box::new(move || {
        if let Some(client) = weak.upgrade() {
            client.stop();
        }
    }));
    block_on(client.run(&engine, &NoSleep, || 0.5));
    assert_eq!(client.transport().requests.get(), 0);
    assert_eq!(server.head("todos"), 0);
}

/// Four tabs share one store (one IndexedDB: pending events included). The syncing tab stops
/// after one push; another takes over and pushes what is left, the other tabs' pending events
/// too, and each event goes out in exactly one push.
#[test]
fn a_tab_that_takes_over_pushes_every_pending_event_exactly_once() {
    let server = Rc::new(MemoryServer::new());
    let storage = MemoryStorage::new();
    let tabs: Vec<_> = (0..4)
        .map(|_| watched_tab(&server, storage.another_handle()))
        .collect();
    for (i, (engine, _)) in tabs.iter().enumerate() {
        append_n(engine, &format!("tab-{i}"), 6);
    }
    let (first, first_client) = &tabs[0];
    let weak = Rc::downgrade(first_client);
    *first_client.transport().after_push.borrow_mut() = Some(Box::new(move || {
        if let Some(client) = weak.upgrade() {
            client.stop();
        }
    }));
    assert!(block_on(first_client.sync(first)).is_err());
    // The other tabs append on while nobody syncs; then tab two takes over.
    for (i, (engine, _)) in tabs.iter().enumerate().skip(1) {
        append_n(engine, &format!("tab-{i}-later"), 2);
    }
    let (second, second_client) = &tabs[1];
    let report = block_on(second_client.sync(second)).unwrap();
    assert_eq!(report.pushed + 7, 30, "the rest, once");
    assert_eq!(server.head("todos"), 30);
    let pushed: Vec<String> = tabs
        .iter()
        .flat_map(|(_, c)| c.transport().pushed.borrow().concat())
        .collect();
    let unique: std::collections::HashSet<&String> = pushed.iter().collect();
    assert_eq!(pushed.len(), 30, "no event pushed twice");
    assert_eq!(unique.len(), 30);
    for (engine, _) in &tabs {
        block_on(engine.catch_up()).unwrap();
        assert_eq!(engine.pending_count(), 0);
        let log = |e: &Engine<MemoryStorage>| e.read(&ReadQuery::default()).unwrap();
        assert_eq!(shape(&log(engine)), shape(&log(second)));
    }
}
