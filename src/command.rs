//! The command side of CQRS for Rust apps: aggregates as deciders.
//!
//! `execute` loads the aggregate's state from its stream (kept incrementally, never
//! replayed from the start on every command), asks `decide` for events, and appends them
//! expecting the stream version `decide` saw. If another writer moved the stream first, it
//! folds the new events and decides again, a bounded number of times.
//!
//! The execute plan is [`crate::command_plan`]'s, the same as the TS wrapper's: a command
//! id already in the stream answers with the events it wrote then (nothing is written),
//! and event ids derive from the command id, so a command runs exactly once.
//!
//! Given [`Upcasters`] ([`Aggregate::with_upcasters`]), `evolve` sees every event upcast
//! to its current schema version.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::clock::Clock;
use crate::clock::{IdSource, SystemClock, Uuidv7};
use crate::codec::EventRef;
pub use crate::command_plan::Decision;
use crate::command_plan::{command_id_of, command_result, plan_batch, CommandIds};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::event::{is_lifecycle_type, Event, STREAM_DELETED_TYPE, STREAM_ERASED_TYPE};
use crate::storage::Storage;
use crate::upcast::{with_upcast, Upcasters};

/// How many times `execute` decides again after losing a race on the stream.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// An aggregate: how its state evolves from its events, and how it decides on commands.
pub trait Decider {
    type State: Clone;
    type Command;

    fn initial(&self) -> Self::State;

    fn evolve(&self, state: &mut Self::State, event: &EventRef<'_>);

    /// The events to append, or `Err(reason)` to refuse the command (nothing is written).
    fn decide(
        &self,
        command: &Self::Command,
        state: &Self::State,
    ) -> std::result::Result<Vec<Decision>, String>;

    /// On a server that runs this decider as an authority
    /// ([`crate::push::authority::DeciderAuthority`]): whether a pushed `event` may follow
    /// `state`. `Err(reason)` rejects it. Accepts everything unless overridden.
    fn check(
        &self,
        _state: &Self::State,
        _event: &EventRef<'_>,
    ) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// What a decider's fold of its stream does with one event: the same rule for aggregates
/// ([`Aggregate`]) and for server authorities
/// ([`crate::push::authority::DeciderAuthority`]), so that both judge from the same state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeciderStep {
    /// An event of the app's: `evolve` folds it.
    Evolve,
    /// `$StreamDeleted` or `$StreamErased`: the stream starts again from the decider's
    /// initial state (its reads start after a delete; an erasure leaves no data to fold).
    Restart,
    /// Annals' own other events (`$StreamClosed`) and erased events: not the decider's.
    Skip,
}

impl DeciderStep {
    pub fn of(event: &EventRef<'_>) -> Self {
        if event.event_type == STREAM_DELETED_TYPE || event.event_type == STREAM_ERASED_TYPE {
            DeciderStep::Restart
        } else if event.erased || is_lifecycle_type(event.event_type) {
            DeciderStep::Skip
        } else {
            DeciderStep::Evolve
        }
    }
}

/// Ids that tie a command's events to the flow they belong to. Unset ids default to the
/// command id, so a command started by a user begins its own flow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandContext {
    pub command_id: Option<String>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
}

impl CommandContext {
    /// The context for a command caused by `event`: same flow, caused by that event.
    pub fn caused_by(event: &Event) -> Self {
        let correlation = event
            .meta
            .as_ref()
            .and_then(|m| crate::log::correlation_of(Some(m.get())))
            .unwrap_or_else(|| event.id.to_string());
        CommandContext {
            command_id: None,
            correlation_id: Some(correlation),
            causation_id: Some(event.id.to_string()),
        }
    }
}

/// What `execute` did.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecuteOutcome {
    pub command_id: String,
    /// The events appended (empty when `decide` returned none); for a command id already
    /// in the stream, the events it wrote then.
    pub events: Vec<Event>,
    /// The stream's version after the command.
    pub version: u64,
    /// How many times `decide` ran (more than 1 after a lost race; 0 for a command id
    /// already in the stream).
    pub attempts: u32,
    /// The command id was already in the stream: nothing was decided or written.
    pub repeated: bool,
}

/// An aggregate's state folded from its confirmed events.
struct Loaded<S> {
    /// Last position of this stream folded into `state`.
    position: u64,
    version: u64,
    state: S,
    log_generation: u64,
    /// The command ids of the folded events (`meta.commandId`).
    commands: HashSet<String>,
}

/// One kind of aggregate, with the states of the instances it has loaded.
pub struct Aggregate<D: Decider> {
    decider: D,
    loaded: RefCell<HashMap<String, Loaded<D::State>>>,
    ids: RefCell<Uuidv7>,
    max_attempts: u32,
    /// Recorded as `meta.aggregate` (what routes a rejected event back to its aggregate).
    name: Option<String>,
    /// Applied to every event before `evolve` sees it.
    upcasters: Option<Arc<Upcasters>>,
}

impl<D: Decider> Aggregate<D> {
    pub fn new(decider: D) -> Self {
        Aggregate {
            decider,
            loaded: RefCell::new(HashMap::new()),
            ids: RefCell::new(Uuidv7::new()),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            name: None,
            upcasters: None,
        }
    }

    /// `evolve` sees every event upcast to its current version. The chain is checked
    /// first ([`Upcasters::check`]).
    pub fn with_upcasters(mut self, upcasters: Arc<Upcasters>) -> Result<Self> {
        upcasters.check()?;
        self.upcasters = Some(upcasters);
        self.loaded.borrow_mut().clear(); // states folded without them
        Ok(self)
    }

    /// Names the aggregate kind: its events carry `meta.aggregate` (as the TS wrapper's).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    pub fn decider(&self) -> &D {
        &self.decider
    }

    /// The aggregate's current state and stream version, folding only events it has not
    /// seen yet.
    pub fn load<S: Storage>(&self, engine: &Engine<S>, stream: &str) -> Result<(u64, D::State)> {
        self.load_checking(engine, stream, None)
            .map(|(version, state, _)| (version, state))
    }

    /// [`Aggregate::load`], and whether an event of command `command_id` is in the stream.
    fn load_checking<S: Storage>(
        &self,
        engine: &Engine<S>,
        stream: &str,
        command_id: Option<&str>,
    ) -> Result<(u64, D::State, bool)> {
        let mut loaded = self.loaded.borrow_mut();
        let generation = engine.log_generation();
        if loaded
            .values()
            .next()
            .is_some_and(|l| l.log_generation != generation)
        {
            loaded.clear(); // the confirmed log was reset: states folded from it are stale
        }
        let entry = loaded.entry(stream.to_owned()).or_insert_with(|| Loaded {
            position: 0,
            version: 0,
            state: self.decider.initial(),
            log_generation: generation,
            commands: HashSet::new(),
        });
        let decider = &self.decider;
        let upcasters = self.upcasters.as_deref();
        let mut failed = None;
        engine.fold_stream(stream, entry.position, |event| {
            if failed.is_some() {
                return;
            }
            match DeciderStep::of(&event) {
                DeciderStep::Restart => entry.state = decider.initial(),
                DeciderStep::Skip => {}
                DeciderStep::Evolve => {
                    if let Err(e) =
                        with_upcast(upcasters, &event, |e| decider.evolve(&mut entry.state, e))
                    {
                        failed = Some(e); // the state stays at the event before
                        return;
                    }
                }
            }
            entry.position = event.position;
            entry.version = event.version;
            if let Some(id) = command_id_of(event.meta) {
                entry.commands.insert(id);
            }
        })?;
        let mut known = command_id.is_some_and(|id| entry.commands.contains(id));
        // Pending events may still move or be rejected: fold them on a copy, every time.
        let (mut version, mut state) = (entry.version, entry.state.clone());
        if let Some(e) = failed {
            return Err(e);
        }
        engine.fold_pending_stream(stream, |event| {
            if failed.is_some() {
                return;
            }
            match DeciderStep::of(&event) {
                DeciderStep::Restart => state = decider.initial(),
                DeciderStep::Skip => {}
                DeciderStep::Evolve => {
                    if let Err(e) =
                        with_upcast(upcasters, &event, |e| decider.evolve(&mut state, e))
                    {
                        failed = Some(e);
                        return;
                    }
                }
            }
            version = event.version;
            if !known && command_id.is_some() {
                known = command_id_of(event.meta).as_deref() == command_id;
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        Ok((version, state, known))
    }

    /// Decides on `command` against the stream's state and appends the decided events
    /// atomically, expecting the version `decide` saw.
    pub async fn execute<S: Storage>(
        &self,
        engine: &Engine<S>,
        stream: &str,
        command: &D::Command,
        context: CommandContext,
    ) -> Result<ExecuteOutcome> {
        let command_id = context.command_id.clone().unwrap_or_else(|| {
            self.ids
                .borrow_mut()
                .next_id(SystemClock.now_ms())
                .to_string()
        });
        let ids = CommandIds::new(
            command_id,
            context.correlation_id.clone(),
            context.causation_id.clone(),
        );
        let mut attempts = 0;
        loop {
            let (version, state, known) =
                self.load_checking(engine, stream, Some(&ids.command_id))?;
            if known {
                // Executed before (a retry, or a process manager handling an event again):
                // answer with what it wrote then.
                let (events, version) = command_result(engine, stream, &ids.command_id)?
                    .unwrap_or((Vec::new(), version));
                return Ok(ExecuteOutcome {
                    command_id: ids.command_id,
                    events,
                    version,
                    attempts,
                    repeated: true,
                });
            }
            attempts += 1;
            let decisions = self
                .decider
                .decide(command, &state)
                .map_err(Error::CommandRejected)?;
            if decisions.is_empty() {
                return Ok(ExecuteOutcome {
                    command_id: ids.command_id,
                    events: Vec::new(),
                    version,
                    attempts,
                    repeated: false,
                });
            }
            let batch = plan_batch(stream, self.name.as_deref(), &ids, version, decisions)?;
            match engine.append(batch).await {
                Ok(outcome) => {
                    let mut events = Vec::with_capacity(outcome.results.len());
                    for result in &outcome.results {
                        let query = crate::log::ReadQuery {
                            after: result.position() - 1,
                            to: Some(result.position()),
                            ..Default::default()
                        };
                        events.extend(engine.read(&query)?);
                    }
                    let version = events.last().map_or(version, |e| e.version);
                    return Ok(ExecuteOutcome {
                        command_id: ids.command_id,
                        events,
                        version,
                        attempts,
                        repeated: false,
                    });
                }
                Err(Error::WrongExpectedVersion { stream: s, .. })
                    if s == stream && attempts < self.max_attempts =>
                {
                    continue; // another writer got there first: decide again on the new state
                }
                Err(e) => return Err(e),
            }
        }
    }
}
