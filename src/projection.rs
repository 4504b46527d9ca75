//! Rust projections: a fold of the log into a read model, with snapshots (tagged with the
//! projection's version) and in-memory checkpoints for time travel.
//! Which checkpoints are kept, which serves a target and when a snapshot is trusted are
//! [`crate::checkpoints`]' rules, which the npm package's runtime calls through the wasm
//! binding too.
//!
//! Given [`Upcasters`], a runner folds every event as its current schema version
//! ([`ProjectionRunner::open_with_upcasters`]): `apply` only ever sees the latest shapes.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::checkpoints::{snapshot_trusted, CheckpointPlan, Checkpoints, SnapshotFacts};
use crate::codec::EventRef;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::storage::{SnapshotRecord, Storage};
use crate::upcast::{with_upcast, Upcasters};

/// A read model built by folding events in log order.
pub trait Projection {
    type State: Clone + Serialize + DeserializeOwned;

    /// The name its snapshots are stored under.
    fn name(&self) -> &str;

    /// Bump it when `apply` changes meaning: older snapshots are then ignored and the state
    /// is rebuilt from the log.
    fn version(&self) -> u32 {
        1
    }

    fn initial(&self) -> Self::State;

    fn apply(&self, state: &mut Self::State, event: &EventRef<'_>);
}

/// Keeps one projection's state up to date with an engine.
pub struct ProjectionRunner<P: Projection> {
    projection: P,
    state: P::State,
    position: u64,
    /// States for `state_at`, bounded and thinned as the log grows.
    checkpoints: Checkpoints<P::State>,
    /// The engine's log generation the state was folded from.
    log_generation: u64,
    /// The engine's erasures counted when the state was folded ([`Engine::erasures`]).
    erasures: u64,
    /// Applied to every event before `apply` sees it.
    upcasters: Option<Arc<Upcasters>>,
}

impl<P: Projection> ProjectionRunner<P> {
    /// Starts from the stored snapshot when its version matches, then replays the tail.
    pub async fn open<S: Storage>(engine: &Engine<S>, projection: P) -> Result<Self> {
        Self::open_with(engine, projection, None).await
    }

    /// [`ProjectionRunner::open`], `apply` seeing every event upcast to its current
    /// version. The chain is checked first ([`Upcasters::check`]); an upcaster's error
    /// stops the fold before that event (the state stays at the event before it).
    pub async fn open_with_upcasters<S: Storage>(
        engine: &Engine<S>,
        projection: P,
        upcasters: Arc<Upcasters>,
    ) -> Result<Self> {
        upcasters.check()?;
        Self::open_with(engine, projection, Some(upcasters)).await
    }

    async fn open_with<S: Storage>(
        engine: &Engine<S>,
        projection: P,
        upcasters: Option<Arc<Upcasters>>,
    ) -> Result<Self> {
        let snapshot = engine.snapshot(projection.name()).await?;
        let (state, position) = match snapshot {
            Some(s)
                if snapshot_trusted(
                    SnapshotFacts {
                        version: s.version,
                        position: s.position,
                    },
                    projection.version(),
                    engine.confirmed_head(),
                ) =>
            {
                match serde_json::from_str::<P::State>(&s.state) {
                    Ok(state) => (state, s.position),
                    // A snapshot that no longer fits the state type is rebuilt, not trusted.
                    Err(_) => (projection.initial(), 0),
                }
            }
            _ => (projection.initial(), 0),
        };
        let mut checkpoints = Checkpoints::default();
        if position > 0 {
            checkpoints.record(position, state.clone(), state_bytes(&state), 0.0);
        }
        let mut runner = ProjectionRunner {
            checkpoints,
            projection,
            state,
            position,
            log_generation: engine.log_generation(),
            erasures: engine.erasures(),
            upcasters,
        };
        runner.catch_up(engine)?;
        Ok(runner)
    }

    /// How many events apart in-memory checkpoints are taken at first (trades memory for
    /// `state_at` speed). The spacing doubles as the log grows, so that at most
    /// [`crate::checkpoints::DEFAULT_MAX_CHECKPOINTS`] are kept. Drops the checkpoints
    /// taken so far.
    pub fn set_checkpoint_interval(&mut self, events: u64) {
        let plan = self.checkpoints.plan();
        let plan = CheckpointPlan::new(events, plan.max_count(), usize::MAX);
        self.checkpoints = Checkpoints::new(plan);
    }

    /// The positions of the kept checkpoints, ascending.
    pub fn checkpoint_positions(&self) -> Vec<u64> {
        self.checkpoints.plan().positions()
    }

    pub fn state(&self) -> &P::State {
        &self.state
    }

    /// The last position folded into the state.
    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// The generation of the engine's confirmed log that the state was folded from
    /// ([`Engine::log_generation`]).
    pub fn log_generation(&self) -> u64 {
        self.log_generation
    }

    /// Folds the confirmed events the engine has beyond this projection's position (from
    /// the start again if the confirmed log was reset, or if events it folded were erased
    /// since: the state and checkpoints held their data, see [`crate::erasure`]).
    pub fn catch_up<S: Storage>(&mut self, engine: &Engine<S>) -> Result<()> {
        if engine.log_generation() != self.log_generation || engine.erasures() != self.erasures {
            self.state = self.projection.initial();
            self.position = 0;
            self.checkpoints.reset();
            self.log_generation = engine.log_generation();
            self.erasures = engine.erasures();
        }
        let head = engine.confirmed_head();
        let projection = &self.projection;
        let state = &mut self.state;
        let checkpoints = &mut self.checkpoints;
        checkpoints.plan_mut().prepare_replay(self.position, head);
        let mut last = self.position;
        let upcasters = self.upcasters.as_deref();
        let mut failed = None;
        engine.fold_range(self.position, head, |event| {
            if failed.is_some() {
                return;
            }
            if let Err(e) = with_upcast(upcasters, &event, |e| projection.apply(state, e)) {
                failed = Some(e);
                return;
            }
            last = event.position;
            if checkpoints.is_due(last) {
                checkpoints.record(last, state.clone(), state_bytes(state), 0.0);
            }
        })?;
        self.position = last;
        failed.map_or(Ok(()), Err)
    }

    /// Folds `event` (upcast) into `state`.
    fn fold(&self, state: &mut P::State, event: &EventRef<'_>) -> Result<()> {
        with_upcast(self.upcasters.as_deref(), event, |e| {
            self.projection.apply(state, e)
        })
    }

    /// The state as it was right after `position`, from the nearest checkpoint at or before
    /// it. The log is not changed.
    pub fn state_at<S: Storage>(&self, engine: &Engine<S>, position: u64) -> Result<P::State> {
        if position > engine.head() {
            return Err(Error::InvalidArgument(format!(
                "position {position} is past the head {}",
                engine.head()
            )));
        }
        if position > self.position {
            // Among the pending events: the confirmed state, then the outbox up to there.
            let mut state = self.state.clone();
            let mut folded = Ok(());
            engine.fold_pending(|event| {
                if event.position <= position && folded.is_ok() {
                    folded = self.fold(&mut state, &event);
                }
            })?;
            return folded.map(|()| state);
        }
        let (mut state, from) = match self.checkpoints.base_for(position) {
            Some((at, state)) => (state.clone(), at),
            None => (self.projection.initial(), 0), // no checkpoint before it: from the start
        };
        let mut folded = Ok(());
        engine.fold_range(from, position, |event| {
            if folded.is_ok() {
                folded = self.fold(&mut state, &event);
            }
        })?;
        folded.map(|()| state)
    }

    /// The optimistic state: the confirmed state folded with the pending events (for a
    /// local store, the state itself).
    pub fn optimistic_state<S: Storage>(&self, engine: &Engine<S>) -> Result<P::State> {
        let mut state = self.state.clone();
        let mut folded = Ok(());
        engine.fold_pending(|event| {
            if folded.is_ok() {
                folded = self.fold(&mut state, &event);
            }
        })?;
        folded.map(|()| state)
    }

    /// Stores the current state as this projection's snapshot.
    pub async fn save_snapshot<S: Storage>(&self, engine: &Engine<S>) -> Result<()> {
        let state = serde_json::to_string(&self.state).map_err(|e| {
            Error::InvalidArgument(format!("projection state is not serialisable: {e}"))
        })?;
        let record = SnapshotRecord {
            name: self.projection.name().to_owned(),
            version: self.projection.version(),
            position: self.position,
            state,
        };
        engine
            .put_snapshot_from(&record, self.log_generation, self.erasures)
            .await
    }
}

/// What a Rust state weighs for the checkpoint budget: its shallow size (Rust states have
/// no cheap deep size; the count cap bounds them).
fn state_bytes<T>(state: &T) -> usize {
    std::mem::size_of_val(state)
}

impl<'a> EventRef<'a> {
    /// Deserialises the payload.
    pub fn data_as<T: serde::Deserialize<'a>>(&self) -> Result<T> {
        serde_json::from_str(self.data).map_err(|e| {
            Error::InvalidArgument(format!("event {} data does not match: {e}", self.position))
        })
    }
}
