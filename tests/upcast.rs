//! Events that evolve: a log written at schema version 1 is read, through upcasters, as
//! the current version everywhere Rust reads events for app logic (projections,
//! aggregates, the server's deciders), on the replica that wrote it and on one that
//! received it by sync, while the stored events stay as they were written.
//!
//! The chain is the shared fixture's (`tests/fixtures/upcasters.json`): `TodoAdded` v1 gains
//! `priority`, v2 becomes `TodoCreated` v3 with `title` moved to `text`; `TodoCompleted` v1's
//! `done` becomes v2's `status`.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use annals::codec::EventRef;
use annals::command::{Aggregate, Decider, Decision};
use annals::projection::{Projection, ProjectionRunner};
use annals::push::authority::{Authorities, DeciderAuthority};
use annals::sync::client::{SyncClient, SyncOptions};
use annals::testing::in_process::InProcessTransport;
use annals::testing::memory_server::MemoryServer;
use annals::upcast::Upcasters;
use annals::{Engine, EngineOptions, Error, Event, MemoryStorage, NewEvent, ReadQuery};
use futures::executor::block_on;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[path = "todo_upcasters/mod.rs"]
mod todo_upcasters;

fn upcasters() -> Arc<Upcasters> {
    todo_upcasters::registry().build().expect("a valid chain")
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Todo {
    text: String,
    priority: i64,
    status: String,
}

/// A projection written for the current versions only: `TodoCreated` v3 and
/// `TodoCompleted` v2. Anything else is recorded as not understood.
struct Todos;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct TodoState {
    todos: BTreeMap<String, Todo>,
    not_understood: Vec<(String, u32)>,
}

impl Projection for Todos {
    type State = TodoState;
    fn name(&self) -> &str {
        "todos"
    }
    fn initial(&self) -> TodoState {
        TodoState::default()
    }
    fn apply(&self, state: &mut TodoState, event: &EventRef<'_>) {
        let data: Value = event.data_as().unwrap_or(Value::Null);
        match (event.event_type, event.schema_version) {
            ("TodoCreated", 3) => {
                state.todos.insert(
                    event.stream.to_owned(),
                    Todo {
                        text: data["text"].as_str().unwrap_or("").to_owned(),
                        priority: data["priority"].as_i64().unwrap_or(-1),
                        status: "open".into(),
                    },
                );
            }
            ("TodoCompleted", 2) => {
                if let Some(todo) = state.todos.get_mut(event.stream) {
                    todo.status = data["status"].as_str().unwrap_or("").to_owned();
                }
            }
            (other, version) => state.not_understood.push((other.to_owned(), version)),
        }
    }
}

fn todo(text: &str, priority: i64, status: &str) -> Todo {
    Todo {
        text: text.into(),
        priority,
        status: status.into(),
    }
}

/// What version 1 of the app wrote (no schema version: 1), then version 3 of it.
fn written_over_the_years() -> Vec<NewEvent> {
    let v1 = |stream: &str, kind: &str, data: Value| NewEvent::new(stream, kind, &data).unwrap();
    vec![
        v1("todo-1", "TodoAdded", json!({ "title": "milk" })),
        v1("todo-2", "TodoAdded", json!({ "title": "eggs" })),
        v1("todo-1", "TodoCompleted", json!({ "done": true })),
        NewEvent::new(
            "todo-3",
            "TodoAdded",
            &json!({ "title": "jam", "priority": 2 }),
        )
        .unwrap()
        .with_schema_version(2),
        NewEvent::new(
            "todo-4",
            "TodoCreated",
            &json!({ "text": "tea", "priority": 1 }),
        )
        .unwrap()
        .with_schema_version(3),
        v1("todo-2", "TodoCompleted", json!({ "done": false })),
    ]
}

fn expected_state() -> TodoState {
    TodoState {
        todos: BTreeMap::from([
            ("todo-1".into(), todo("milk", 0, "done")),
            ("todo-2".into(), todo("eggs", 0, "open")),
            ("todo-3".into(), todo("jam", 2, "open")),
            ("todo-4".into(), todo("tea", 1, "open")),
        ]),
        not_understood: Vec::new(),
    }
}

/// (type, schema version, data) of every stored event.
fn stored(engine: &Engine<MemoryStorage>) -> Vec<(String, u32, String)> {
    engine
        .read(&ReadQuery::default())
        .unwrap()
        .iter()
        .map(|e| {
            (
                e.event_type.clone(),
                e.schema_version,
                e.data.get().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_log_of_old_events_replays_into_current_state_with_upcasters() {
    let storage = MemoryStorage::new();
    let engine = block_on(Engine::open(
        storage.another_handle(),
        EngineOptions::default(),
    ))
    .unwrap();
    block_on(engine.append(written_over_the_years())).unwrap();
    let before = stored(&engine);

    let runner = block_on(ProjectionRunner::open_with_upcasters(
        &engine,
        Todos,
        upcasters(),
    ))
    .unwrap();
    assert_eq!(runner.state(), &expected_state());
    // Time travel sees upcast events too: after position 3, todo-1 was done.
    let at_3 = runner.state_at(&engine, 3).unwrap();
    assert_eq!(at_3.todos["todo-1"], todo("milk", 0, "done"));
    assert_eq!(at_3.todos.len(), 2);

    // Reading changed nothing stored: types, versions and bytes are as written.
    assert_eq!(stored(&engine), before);
    assert_eq!(
        before
            .iter()
            .map(|(t, v, _)| (t.as_str(), *v))
            .collect::<Vec<_>>(),
        [
            ("TodoAdded", 1),
            ("TodoAdded", 1),
            ("TodoCompleted", 1),
            ("TodoAdded", 2),
            ("TodoCreated", 3),
            ("TodoCompleted", 1)
        ]
    );
    assert_eq!(before[0].2, r#"{"title":"milk"}"#);

    // A replica reopened on the same storage replays the same state.
    drop(runner);
    drop(engine);
    let engine = block_on(Engine::open(
        storage.another_handle(),
        EngineOptions::default(),
    ))
    .unwrap();
    let runner = block_on(ProjectionRunner::open_with_upcasters(
        &engine,
        Todos,
        upcasters(),
    ))
    .unwrap();
    assert_eq!(runner.state(), &expected_state());

    // Without upcasters the same projection sees the old shapes it was not written for.
    let raw = block_on(ProjectionRunner::open(&engine, Todos)).unwrap();
    assert_eq!(
        raw.state().not_understood,
        [
            ("TodoAdded".to_owned(), 1),
            ("TodoAdded".to_owned(), 1),
            ("TodoCompleted".to_owned(), 1),
            ("TodoAdded".to_owned(), 2),
            ("TodoCompleted".to_owned(), 1)
        ]
    );
}

#[test]
fn the_upcast_event_keeps_its_envelope() {
    let engine = block_on(Engine::open(MemoryStorage::new(), EngineOptions::default())).unwrap();
    block_on(engine.append(written_over_the_years())).unwrap();
    let events: Vec<Event> = engine.read(&ReadQuery::default()).unwrap();
    let upcast = upcasters().upcast(&events[0]).unwrap();
    assert_eq!(
        (upcast.event_type.as_str(), upcast.schema_version),
        ("TodoCreated", 3)
    );
    assert_eq!(
        serde_json::from_str::<Value>(upcast.data.get()).unwrap(),
        json!({ "text": "milk", "priority": 0 })
    );
    assert_eq!(
        (
            upcast.id,
            upcast.position,
            &upcast.stream,
            upcast.version,
            upcast.time
        ),
        (
            events[0].id,
            events[0].position,
            &events[0].stream,
            events[0].version,
            events[0].time
        )
    );
    // The JSON apps read names the version only when it is not 1.
    let json = serde_json::to_value(&events[4]).unwrap();
    assert_eq!(json["schemaVersion"], 3);
    assert!(serde_json::to_value(&events[0])
        .unwrap()
        .get("schemaVersion")
        .is_none());
}

#[test]
fn an_upcaster_that_fails_stops_the_fold_before_its_event_and_names_it() {
    let engine = block_on(Engine::open(MemoryStorage::new(), EngineOptions::default())).unwrap();
    block_on(engine.append(vec![
        NewEvent::new("todo-1", "TodoAdded", &json!({ "title": "milk" })).unwrap(),
        // Data that the v1 -> v2 upcaster cannot take (not an object).
        NewEvent::new("todo-2", "TodoAdded", &json!("eggs")).unwrap(),
    ]))
    .unwrap();
    let err = block_on(ProjectionRunner::open_with_upcasters(
        &engine,
        Todos,
        upcasters(),
    ))
    .err()
    .expect("the second event cannot be upcast");
    assert_eq!(err.code(), "INVALID_EVENT");
    let message = err.to_string();
    assert!(
        message.contains("upcasting TodoAdded from version 1 to 2")
            && message.contains("TodoAdded data must be an object"),
        "{message}"
    );
}

#[test]
fn a_broken_chain_is_refused_where_it_is_installed() {
    let gap = || Arc::new(todo_upcasters::registry().add("TodoCompleted", 3, Ok));
    let engine = block_on(Engine::open(MemoryStorage::new(), EngineOptions::default())).unwrap();
    let err = block_on(ProjectionRunner::open_with_upcasters(&engine, Todos, gap()))
        .err()
        .expect("a gap");
    assert_eq!(err.code(), "INVALID_ARGUMENT");
    assert_eq!(
        err.to_string(),
        "invalid argument: upcasters: gap: TodoCompleted has upcasters 1→2 and 3→4 but none from version 2 to 3"
    );
    let err = Aggregate::new(TodoDecider)
        .with_upcasters(gap())
        .err()
        .expect("a gap");
    assert_eq!(err.code(), "INVALID_ARGUMENT");
    let err = DeciderAuthority::new(TodoDecider, |_: &str| true)
        .with_upcasters(gap())
        .err()
        .expect("a gap");
    assert_eq!(err.code(), "INVALID_ARGUMENT");

    let duplicate = todo_upcasters::registry()
        .add("TodoAdded", 1, Ok)
        .build()
        .unwrap_err();
    assert_eq!(
        duplicate.to_string(),
        "invalid argument: upcasters: duplicate: TodoAdded has two upcasters from version 1 to 2"
    );
    let no_path = todo_upcasters::registry()
        .add("TodoCreated", 4, Ok)
        .build()
        .unwrap_err();
    assert_eq!(
        no_path.to_string(),
        "invalid argument: upcasters: gap: TodoAdded 2→3 renames it to TodoCreated at version 3, but \
         TodoCreated's upcasters start at version 4: nothing takes TodoCreated from version 3 to 4"
    );
    assert!(matches!(no_path, Error::InvalidArgument(_)));
}

// ---- deciders: in a Rust app and on the server ----------------------------------------------

/// One todo per stream, written against the current versions only.
struct TodoDecider;

#[derive(Debug, Clone, Default, PartialEq)]
struct TodoFacts {
    text: Option<String>,
    done: bool,
}

enum TodoCommand {
    Complete,
}

impl Decider for TodoDecider {
    type State = TodoFacts;
    type Command = TodoCommand;
    fn initial(&self) -> TodoFacts {
        TodoFacts::default()
    }
    fn evolve(&self, state: &mut TodoFacts, event: &EventRef<'_>) {
        let data: Value = event.data_as().unwrap_or(Value::Null);
        match event.event_type {
            "TodoCreated" => state.text = data["text"].as_str().map(str::to_owned),
            "TodoCompleted" => state.done = data["status"] == "done",
            _ => {}
        }
    }
    fn decide(&self, command: &TodoCommand, state: &TodoFacts) -> Result<Vec<Decision>, String> {
        match command {
            TodoCommand::Complete if state.text.is_none() => Err("no such todo".into()),
            TodoCommand::Complete if state.done => Ok(Vec::new()),
            TodoCommand::Complete => Ok(vec![Decision::new(
                "TodoCompleted",
                &json!({ "status": "done" }),
            )
            .map_err(|e| e.to_string())?
            .with_schema_version(2)]),
        }
    }
    fn check(&self, state: &TodoFacts, event: &EventRef<'_>) -> Result<(), String> {
        let data: Value = event.data_as().map_err(|e| e.to_string())?;
        match event.event_type {
            "TodoCreated" if !data["text"].is_string() => Err("a todo needs a text".into()),
            "TodoCompleted" if state.text.is_none() => Err("no such todo".into()),
            _ => Ok(()),
        }
    }
}

#[test]
fn an_aggregate_decides_on_state_folded_from_upcast_events() {
    let engine = block_on(Engine::open(MemoryStorage::new(), EngineOptions::default())).unwrap();
    block_on(engine.append(written_over_the_years())).unwrap();
    let todos = Aggregate::new(TodoDecider)
        .with_upcasters(upcasters())
        .unwrap();
    let (_, facts) = todos.load(&engine, "todo-2").unwrap();
    assert_eq!(
        facts,
        TodoFacts {
            text: Some("eggs".into()),
            done: false
        }
    );
    let outcome = block_on(todos.execute(
        &engine,
        "todo-2",
        &TodoCommand::Complete,
        Default::default(),
    ))
    .unwrap();
    assert_eq!(
        outcome.events[0].schema_version, 2,
        "the decided version is stored"
    );
    assert!(todos.load(&engine, "todo-2").unwrap().1.done);

    // The same decider without upcasters does not know the todo its v1 events created.
    let blind = Aggregate::new(TodoDecider);
    let refused = block_on(blind.execute(
        &engine,
        "todo-3",
        &TodoCommand::Complete,
        Default::default(),
    ));
    assert_eq!(refused.unwrap_err().code(), "COMMAND_REJECTED");
}

fn replica(server: &Rc<MemoryServer>) -> (Engine<MemoryStorage>, SyncClient<InProcessTransport>) {
    let options = EngineOptions {
        synced: true,
        ..EngineOptions::default()
    };
    let engine = block_on(Engine::open(MemoryStorage::new(), options)).unwrap();
    let sync = SyncClient::new(
        InProcessTransport::new(server.clone(), "todos"),
        SyncOptions::default(),
    );
    (engine, sync)
}

#[test]
fn a_fresh_replica_gets_the_schema_versions_by_sync_and_folds_the_same_state() {
    let server = Rc::new(MemoryServer::new());
    let (old, old_sync) = replica(&server);
    block_on(old.append(written_over_the_years())).unwrap();
    block_on(old_sync.sync(&old)).unwrap();
    assert_eq!(old.pending_count(), 0);

    let (fresh, fresh_sync) = replica(&server);
    block_on(fresh_sync.sync(&fresh)).unwrap();
    assert_eq!(
        stored(&fresh),
        stored(&old),
        "types, schema versions and data as written"
    );
    let runner = block_on(ProjectionRunner::open_with_upcasters(
        &fresh,
        Todos,
        upcasters(),
    ))
    .unwrap();
    assert_eq!(runner.state(), &expected_state());

    // An event the fresh replica appends at a later version reaches the first one as is.
    block_on(fresh.append(
        vec![NewEvent::new("todo-5", "TodoCreated", &json!({ "text": "rice", "priority": 3 }))
        .unwrap()
        .with_schema_version(3)],
    ))
    .unwrap();
    let pending = fresh.read(&ReadQuery::default()).unwrap();
    let last = pending.last().unwrap();
    assert!(last.pending);
    assert_eq!(last.schema_version, 3, "a pending event keeps its version");
    block_on(fresh_sync.sync(&fresh)).unwrap();
    block_on(old_sync.sync(&old)).unwrap();
    let events = old.read(&ReadQuery::default()).unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (last.event_type.as_str(), last.schema_version),
        ("TodoCreated", 3)
    );
    let runner = block_on(ProjectionRunner::open_with_upcasters(
        &old,
        Todos,
        upcasters(),
    ))
    .unwrap();
    assert_eq!(runner.state().todos["todo-5"], todo("rice", 3, "open"));
}

#[test]
fn a_server_decider_judges_pushed_events_upcast_and_stores_them_as_written() {
    let server_with = |upcast: bool| {
        let authority = DeciderAuthority::new(TodoDecider, |s: &str| s.starts_with("todo-"));
        let authority = if upcast {
            authority.with_upcasters(upcasters()).unwrap()
        } else {
            authority
        };
        Rc::new(MemoryServer::with_authorities(Authorities::new(vec![
            Arc::new(authority),
        ])))
    };
    let push_all = |server: &Rc<MemoryServer>| {
        let (client, sync) = replica(server);
        block_on(client.append(vec![
            // v1: created (its title becomes the text the decider checks)
            NewEvent::new("todo-1", "TodoAdded", &json!({ "title": "milk" })).unwrap(),
            // v1, completed: the decider knows todo-1 from the upcast v1 event before it
            NewEvent::new("todo-1", "TodoCompleted", &json!({ "done": true })).unwrap(),
            // v1 without a title: no text once upcast, refused
            NewEvent::new("todo-2", "TodoAdded", &json!({ "note": "?" })).unwrap(),
            // v1, completing a todo that does not exist: refused
            NewEvent::new("todo-3", "TodoCompleted", &json!({ "done": true })).unwrap(),
        ]))
        .unwrap();
        let report = block_on(sync.sync(&client)).unwrap();
        let reasons: Vec<String> = report.rejected.iter().map(|r| r.reason.clone()).collect();
        (client, reasons)
    };

    let server = server_with(true);
    let (client, reasons) = push_all(&server);
    assert_eq!(reasons, ["a todo needs a text", "no such todo"]);
    assert_eq!(server.head("todos"), 2);
    // Stored as pushed: the server keeps version 1 and the old type.
    assert_eq!(
        stored(&client),
        [
            ("TodoAdded".to_owned(), 1, r#"{"title":"milk"}"#.to_owned()),
            ("TodoCompleted".to_owned(), 1, r#"{"done":true}"#.to_owned()),
        ]
    );

    // A later push is judged against the stored history, upcast again.
    let (late, late_sync) = replica(&server);
    block_on(late_sync.sync(&late)).unwrap();
    block_on(late.append(
        vec![NewEvent::new("todo-1", "TodoCompleted", &json!({ "status": "done" }))
        .unwrap()
        .with_schema_version(2)],
    ))
    .unwrap();
    let report = block_on(late_sync.sync(&late)).unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(server.head("todos"), 3);

    // The same decider without upcasters sees a type it does not know, and refuses more.
    let (_, reasons) = push_all(&server_with(false));
    assert_eq!(reasons, ["no such todo", "no such todo"]);
}
