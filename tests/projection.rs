//! Rust projections: folding, snapshots with versions, time travel.

use std::collections::BTreeMap;

use annals::clock::{FixedClock, SequentialIds};
use annals::codec::EventRef;
use annals::projection::{Projection, ProjectionRunner};
use annals::{Engine, EngineOptions, MemoryStorage, NewEvent};
use futures::executor::block_on;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Totals {
    count: u64,
    per_stream: BTreeMap<String, i64>,
}

struct TotalsProjection {
    version: u32,
}

impl Projection for TotalsProjection {
    type State = Totals;
    fn name(&self) -> &str {
        "totals"
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn initial(&self) -> Totals {
        Totals::default()
    }
    fn apply(&self, state: &mut Totals, event: &EventRef<'_>) {
        let amount: i64 = event.data_as().unwrap_or(0);
        state.count += 1;
        *state.per_stream.entry(event.stream.to_owned()).or_default() +=
            amount * i64::from(self.version);
    }
}

fn engine(storage: &MemoryStorage) -> Engine<MemoryStorage> {
    let options = EngineOptions {
        clock: Box::new(FixedClock::at(0)),
        ids: Box::new(SequentialIds::default()),
        ..EngineOptions::default()
    };
    block_on(Engine::open(storage.another_handle(), options)).unwrap()
}

fn append_amounts(engine: &Engine<MemoryStorage>, amounts: impl IntoIterator<Item = i64>) {
    let events: Vec<NewEvent> = amounts
        .into_iter()
        .map(|a| NewEvent::new(format!("s{}", a.rem_euclid(3)), "Added", &a).unwrap())
        .collect();
    // One append takes at most `max_batch_events` (1,000 by default).
    for batch in events.chunks(1_000) {
        block_on(engine.append(batch.to_vec())).unwrap();
    }
}

#[test]
fn a_projection_folds_the_log_and_follows_new_events() {
    let storage = MemoryStorage::new();
    let engine = engine(&storage);
    append_amounts(&engine, 1..=5);
    let mut runner = block_on(ProjectionRunner::open(
        &engine,
        TotalsProjection { version: 1 },
    ))
    .unwrap();
    assert_eq!(runner.state().count, 5);
    assert_eq!(runner.state().per_stream["s1"], 1 + 4);
    append_amounts(&engine, [6]);
    runner.catch_up(&engine).unwrap();
    assert_eq!((runner.state().count, runner.position()), (6, 6));
}

#[test]
fn open_starts_from_a_matching_snapshot_and_replays_only_the_tail() {
    let storage = MemoryStorage::new();
    let engine = engine(&storage);
    append_amounts(&engine, 1..=10);
    let runner = block_on(ProjectionRunner::open(
        &engine,
        TotalsProjection { version: 1 },
    ))
    .unwrap();
    block_on(runner.save_snapshot(&engine)).unwrap();
    append_amounts(&engine, [11]);

    // Tamper with the snapshot to prove it is used rather than a full replay.
    let mut snap = block_on(engine.snapshot("totals")).unwrap().unwrap();
    assert_eq!((snap.position, snap.version), (10, 1));
    snap.state = snap.state.replace("\"count\":10", "\"count\":1000");
    block_on(engine.put_snapshot(&snap)).unwrap();
    let resumed = block_on(ProjectionRunner::open(
        &engine,
        TotalsProjection { version: 1 },
    ))
    .unwrap();
    assert_eq!(resumed.state().count, 1001);

    // A bumped version ignores the snapshot and rebuilds from the log.
    let rebuilt = block_on(ProjectionRunner::open(
        &engine,
        TotalsProjection { version: 2 },
    ))
    .unwrap();
    assert_eq!(rebuilt.state().count, 11);
    assert_eq!(rebuilt.state().per_stream["s2"], 2 * (2 + 5 + 8 + 11));
}

#[test]
fn a_snapshot_that_no_longer_parses_is_rebuilt() {
    let storage = MemoryStorage::new();
    let engine = engine(&storage);
    append_amounts(&engine, 1..=3);
    let snap = annals::storage::SnapshotRecord {
        name: "totals".into(),
        version: 1,
        position: 3,
        state: "[1,2]".into(),
    };
    block_on(engine.put_snapshot(&snap)).unwrap();
    let runner = block_on(ProjectionRunner::open(
        &engine,
        TotalsProjection { version: 1 },
    ))
    .unwrap();
    assert_eq!(runner.state().count, 3);
}

#[test]
fn state_at_travels_back_without_touching_the_log() {
    let storage = MemoryStorage::new();
    let engine = engine(&storage);
    append_amounts(&engine, 1..=2_500);
    let mut runner = block_on(ProjectionRunner::open(
        &engine,
        TotalsProjection { version: 1 },
    ))
    .unwrap();
    runner.set_checkpoint_interval(100);
    for position in [0, 1, 999, 1_000, 1_001, 2_500] {
        let past = runner.state_at(&engine, position).unwrap();
        assert_eq!(past.count, position, "at {position}");
        let expected: i64 = (1..=position as i64).filter(|a| a % 3 == 1).sum();
        assert_eq!(past.per_stream.get("s1").copied().unwrap_or(0), expected);
    }
    assert_eq!(
        runner.state_at(&engine, 2_501).unwrap_err().code(),
        "INVALID_ARGUMENT"
    );
    assert_eq!(engine.head(), 2_500);
    assert_eq!(runner.state().count, 2_500);
}

#[test]
fn checkpoints_stay_bounded_and_spread_as_the_log_grows() {
    let storage = MemoryStorage::new();
    let engine = engine(&storage);
    let mut runner = block_on(ProjectionRunner::open(
        &engine,
        TotalsProjection { version: 1 },
    ))
    .unwrap();
    runner.set_checkpoint_interval(10);
    for _ in 0..50 {
        append_amounts(&engine, 1..=100);
        runner.catch_up(&engine).unwrap();
        let kept = runner.checkpoint_positions();
        assert!(
            kept.len() <= annals::checkpoints::DEFAULT_MAX_CHECKPOINTS,
            "{} checkpoints kept",
            kept.len()
        );
    }
    let kept = runner.checkpoint_positions();
    assert!(kept.len() >= annals::checkpoints::DEFAULT_MAX_CHECKPOINTS / 2);
    // Spread over the whole log, not bunched at its end.
    assert!(kept[0] <= 5_000 / 8, "first kept at {}", kept[0]);
    // Time travel still lands exactly, whatever was thinned.
    let at = block_on(async { runner.state_at(&engine, 2_345) }).unwrap();
    assert_eq!(at.count, 2_345);
}
