//! Aggregates as deciders: validated commands, optimistic concurrency with retries, and
//! causation/correlation ids.

use annals::codec::EventRef;
use annals::command::{Aggregate, CommandContext, Decider, Decision};
use annals::{Engine, EngineOptions, MemoryStorage, ReadQuery};
use futures::executor::block_on;
use serde::Deserialize;
use serde_json::json;

/// A todo that can be added once, renamed while open, and completed once.
#[derive(Debug, Clone, Default, PartialEq)]
struct Todo {
    title: Option<String>,
    done: bool,
}

enum TodoCommand {
    Add { title: String },
    Rename { title: String },
    Complete,
}

struct TodoDecider;

#[derive(Deserialize)]
struct Titled {
    title: String,
}

impl Decider for TodoDecider {
    type State = Todo;
    type Command = TodoCommand;

    fn initial(&self) -> Todo {
        Todo::default()
    }

    fn evolve(&self, state: &mut Todo, event: &EventRef<'_>) {
        match event.event_type {
            "TodoAdded" | "TodoRenamed" => {
                state.title = event.data_as::<Titled>().ok().map(|t| t.title)
            }
            "TodoCompleted" => state.done = true,
            _ => {}
        }
    }

    fn decide(&self, command: &TodoCommand, state: &Todo) -> Result<Vec<Decision>, String> {
        let event = |kind: &str, data: serde_json::Value| {
            Decision::new(kind, &data).map_err(|e| e.to_string())
        };
        match command {
            TodoCommand::Add { .. } if state.title.is_some() => {
                Err("the todo exists already".into())
            }
            TodoCommand::Add { title } => Ok(vec![event("TodoAdded", json!({ "title": title }))?]),
            _ if state.title.is_none() => Err("no such todo".into()),
            _ if state.done => Err("the todo is done".into()),
            TodoCommand::Rename { title } if state.title.as_ref() == Some(title) => Ok(vec![]),
            TodoCommand::Rename { title } => {
                Ok(vec![event("TodoRenamed", json!({ "title": title }))?])
            }
            TodoCommand::Complete => Ok(vec![event("TodoCompleted", json!({}))?]),
        }
    }
}

fn tab(storage: &MemoryStorage) -> Engine<MemoryStorage> {
    block_on(Engine::open(
        storage.another_handle(),
        EngineOptions::default(),
    ))
    .unwrap()
}

fn title(t: &str) -> String {
    t.to_owned()
}

#[test]
fn a_refused_command_writes_nothing() {
    let engine = tab(&MemoryStorage::new());
    let todos = Aggregate::new(TodoDecider);
    let err = block_on(todos.execute(
        &engine,
        "todo-1",
        &TodoCommand::Complete,
        CommandContext::default(),
    ))
    .unwrap_err();
    assert_eq!(err.code(), "COMMAND_REJECTED");
    assert!(err.to_string().contains("no such todo"));
    assert_eq!(engine.head(), 0);

    block_on(todos.execute(
        &engine,
        "todo-1",
        &TodoCommand::Add {
            title: title("milk"),
        },
        Default::default(),
    ))
    .unwrap();
    let again = block_on(todos.execute(
        &engine,
        "todo-1",
        &TodoCommand::Add {
            title: title("eggs"),
        },
        Default::default(),
    ));
    assert!(again.unwrap_err().to_string().contains("exists already"));
    assert_eq!(engine.head(), 1);
}

#[test]
fn executing_appends_at_the_version_decide_saw_and_keeps_state_incrementally() {
    let engine = tab(&MemoryStorage::new());
    let todos = Aggregate::new(TodoDecider);
    let added = block_on(todos.execute(
        &engine,
        "todo-1",
        &TodoCommand::Add {
            title: title("milk"),
        },
        Default::default(),
    ))
    .unwrap();
    assert_eq!(
        (added.version, added.attempts, added.events.len()),
        (1, 1, 1)
    );
    let renamed = block_on(todos.execute(
        &engine,
        "todo-1",
        &TodoCommand::Rename {
            title: title("oat milk"),
        },
        Default::default(),
    ))
    .unwrap();
    assert_eq!(renamed.events[0].version, 2);
    let unchanged = block_on(todos.execute(
        &engine,
        "todo-1",
        &TodoCommand::Rename {
            title: title("oat milk"),
        },
        Default::default(),
    ))
    .unwrap();
    assert!(
        unchanged.events.is_empty(),
        "deciding nothing appends nothing"
    );
    assert_eq!(
        todos.load(&engine, "todo-1").unwrap(),
        (
            2,
            Todo {
                title: Some(title("oat milk")),
                done: false
            }
        )
    );
}

#[test]
fn a_command_that_loses_a_race_decides_again_on_the_new_state() {
    let storage = MemoryStorage::new();
    let (tab_a, tab_b) = (tab(&storage), tab(&storage));
    let (todos_a, todos_b) = (Aggregate::new(TodoDecider), Aggregate::new(TodoDecider));
    block_on(todos_a.execute(
        &tab_a,
        "todo-1",
        &TodoCommand::Add {
            title: title("milk"),
        },
        Default::default(),
    ))
    .unwrap();
    block_on(tab_b.catch_up()).unwrap();
    todos_a.load(&tab_a, "todo-1").unwrap(); // tab A's state is now at version 1

    // Tab B renames first; tab A, unaware, decides on version 1, loses, and decides again.
    block_on(todos_b.execute(
        &tab_b,
        "todo-1",
        &TodoCommand::Rename {
            title: title("eggs"),
        },
        Default::default(),
    ))
    .unwrap();
    let renamed = block_on(todos_a.execute(
        &tab_a,
        "todo-1",
        &TodoCommand::Rename {
            title: title("bread"),
        },
        Default::default(),
    ))
    .unwrap();
    assert_eq!((renamed.attempts, renamed.version), (2, 3));

    // Completing in B, then renaming in A: the retry sees "done" and refuses.
    block_on(tab_b.catch_up()).unwrap();
    block_on(todos_b.execute(&tab_b, "todo-1", &TodoCommand::Complete, Default::default()))
        .unwrap();
    let refused = block_on(todos_a.execute(
        &tab_a,
        "todo-1",
        &TodoCommand::Rename {
            title: title("jam"),
        },
        Default::default(),
    ));
    assert_eq!(refused.unwrap_err().code(), "COMMAND_REJECTED");
    let types: Vec<String> = tab_a
        .read(&ReadQuery::default())
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        types,
        ["TodoAdded", "TodoRenamed", "TodoRenamed", "TodoCompleted"]
    );
}

#[test]
fn events_carry_command_causation_and_correlation_ids() {
    let engine = tab(&MemoryStorage::new());
    let todos = Aggregate::new(TodoDecider);
    let context = CommandContext {
        command_id: Some("cmd-1".into()),
        ..Default::default()
    };
    let first = block_on(todos.execute(
        &engine,
        "todo-1",
        &TodoCommand::Add {
            title: title("milk"),
        },
        context,
    ))
    .unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(first.events[0].meta.as_ref().unwrap().get()).unwrap();
    assert_eq!(
        meta,
        json!({ "commandId": "cmd-1", "correlationId": "cmd-1", "causationId": "cmd-1" })
    );

    // A follow-up command caused by that event joins the same flow.
    let follow_up = CommandContext::caused_by(&first.events[0]);
    let second =
        block_on(todos.execute(&engine, "todo-1", &TodoCommand::Complete, follow_up)).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(second.events[0].meta.as_ref().unwrap().get()).unwrap();
    assert_eq!(meta["correlationId"], "cmd-1");
    assert_eq!(meta["causationId"], first.events[0].id.to_string());
    assert_ne!(meta["commandId"], "cmd-1");

    block_on(todos.execute(
        &engine,
        "todo-2",
        &TodoCommand::Add {
            title: title("other flow"),
        },
        Default::default(),
    ))
    .unwrap();
    let flow = engine
        .read(&ReadQuery {
            correlation_id: Some("cmd-1".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(flow.iter().map(|e| e.position).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn a_repeated_command_id_returns_the_earlier_result_and_writes_nothing() {
    let storage = MemoryStorage::new();
    let engine = tab(&storage);
    let todos = Aggregate::new(TodoDecider);
    let context = CommandContext {
        command_id: Some("add-once".into()),
        ..Default::default()
    };
    let add = TodoCommand::Add {
        title: title("milk"),
    };
    let first = block_on(todos.execute(&engine, "todo-1", &add, context.clone())).unwrap();
    assert!(!first.repeated);
    // Deciding again would be refused ("exists already"): the known id answers first.
    let again = block_on(todos.execute(&engine, "todo-1", &add, context.clone())).unwrap();
    assert!(again.repeated);
    assert_eq!(again.attempts, 0);
    assert_eq!(again.events, first.events);
    assert_eq!(again.version, first.version);
    assert_eq!(engine.head(), 1, "nothing more was written");

    // Another process with its own cache (a restart) sees the id in the log as well.
    let restarted = Aggregate::new(TodoDecider);
    let other_tab = tab(&storage);
    let third = block_on(restarted.execute(&other_tab, "todo-1", &add, context)).unwrap();
    assert!(third.repeated);
    assert_eq!(third.events, first.events);
}

#[test]
fn event_ids_are_derived_from_the_command_id() {
    let storage = MemoryStorage::new();
    let engine = tab(&storage);
    let todos = Aggregate::new(TodoDecider).with_name("todo");
    let context = CommandContext {
        command_id: Some("cmd-1".into()),
        ..Default::default()
    };
    let add = TodoCommand::Add {
        title: title("milk"),
    };
    let outcome = block_on(todos.execute(&engine, "todo-1", &add, context)).unwrap();
    assert_eq!(
        outcome.events[0].id,
        annals::command_plan::command_event_id("cmd-1", 0)
    );
    // The vector the TS wrapper computes for ("cmd-1", 0) (tests/fixtures/command_ids.json).
    assert_eq!(
        outcome.events[0].id.to_string(),
        "fac383ae-1a35-8889-9084-51c7116302c0"
    );
    let meta: serde_json::Value =
        serde_json::from_str(outcome.events[0].meta.as_ref().unwrap().get()).unwrap();
    assert_eq!(meta["aggregate"], "todo");
    assert_eq!(meta["commandId"], "cmd-1");
}

#[test]
fn an_aggregate_of_an_erased_stream_starts_again_from_its_initial_state() {
    let engine = tab(&MemoryStorage::new());
    let todos = Aggregate::new(TodoDecider);
    let add = |t: &str| TodoCommand::Add { title: title(t) };
    block_on(todos.execute(&engine, "todo-1", &add("milk"), CommandContext::default())).unwrap();
    assert!(todos.load(&engine, "todo-1").unwrap().1.title.is_some());
    block_on(engine.erase_stream("todo-1", annals::ExpectedVersion::Exact(1))).unwrap();
    // The erased event has no data left to fold: the aggregate starts from nothing.
    let (version, state) = todos.load(&engine, "todo-1").unwrap();
    assert_eq!((version, state), (2, Todo::default()));
    block_on(todos.execute(&engine, "todo-1", &add("eggs"), CommandContext::default())).unwrap();
    let (version, state) = todos.load(&engine, "todo-1").unwrap();
    assert_eq!((version, state.title.as_deref()), (3, Some("eggs")));
}

#[test]
fn an_aggregate_of_a_deleted_stream_starts_again_from_its_initial_state() {
    let engine = tab(&MemoryStorage::new());
    let todos = Aggregate::new(TodoDecider);
    let add = |t: &str| TodoCommand::Add { title: title(t) };
    block_on(todos.execute(&engine, "todo-1", &add("milk"), CommandContext::default())).unwrap();
    // Loaded once before the delete: the delete resets the folded state too.
    assert!(todos.load(&engine, "todo-1").unwrap().1.title.is_some());
    block_on(engine.delete_stream("todo-1", annals::ExpectedVersion::Exact(1))).unwrap();
    let (version, state) = todos.load(&engine, "todo-1").unwrap();
    assert_eq!((version, state), (2, Todo::default()));
    // So the todo can be added again, at the stream's next version.
    block_on(todos.execute(&engine, "todo-1", &add("eggs"), CommandContext::default())).unwrap();
    let (version, state) = todos.load(&engine, "todo-1").unwrap();
    assert_eq!((version, state.title.as_deref()), (3, Some("eggs")));
}
