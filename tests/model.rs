//! Model-based tests of the log (native only): random sequences of operations run on an
//! engine over the memory backend (one handle, or two handles as two tabs) and on a
//! reference model (a list of events, per-stream versions, the set of ids), and after every
//! step the engine reads back what the model says. proptest shrinks a failing sequence to a
//! short one.
//!
//! Operations: appends and batches with every kind of expected version, idempotent
//! retries (a stored event appended again, exactly), reused ids (a known id on another
//! event: `DUPLICATE_ID`), batches mixing both or repeating an id, invalid events,
//! compaction, snapshots (put, get, delete, refused past the head), catching up, and
//! crash-and-reopen of a tab; stream deletes, closes and erasures (an erased event reads
//! with data `null`, marked, in every tab that has read the erasure; its old copy appended
//! again is a retry). Reads check streams from a version and backwards too.
//! `PROPTEST_CASES` sets the number of sequences (default 256).
#![cfg(not(target_arch = "wasm32"))]

use std::collections::HashMap;

use annals::clock::{FixedClock, Uuidv7};
use annals::storage::SnapshotRecord;
use annals::{
    AppendResult, Engine, EngineOptions, Error, Event, EventId, ExpectedVersion, MemoryStorage,
    NewEvent, ReadQuery,
};
use futures::executor::block_on;
use proptest::prelude::*;

const TIME: u64 = 1_700_000_000_000;
const STREAMS: [&str; 4] = ["a", "b", "c", "d"];
const TYPES: [&str; 2] = ["Added", "Removed"];

// ---- operations -------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Id {
    /// The engine assigns one.
    Auto,
    /// A new id chosen by the app.
    Fresh,
    /// An id appended before (the `n`-th known, modulo), on whatever event this one is:
    /// a reused id, unless the content happens to be the same.
    Known(usize),
    /// The `n`-th stored event (modulo) appended again exactly: a retry.
    Retry(usize),
}

#[derive(Debug, Clone)]
enum Expect {
    Any,
    NoStream,
    Exists,
    /// The stream's current version plus `offset` (0 succeeds, others fail).
    Current(i8),
    Exact(u64),
}

#[derive(Debug, Clone)]
struct Ev {
    id: Id,
    stream: usize,
    kind: usize,
    data: i16,
    expect: Expect,
    /// An empty type: the event is invalid and so is its batch.
    invalid: bool,
    /// 1: a `$StreamDeleted` event instead (a delete), 2: a `$StreamClosed` one (a close),
    /// 3: a `$StreamErased` one (an erasure).
    lifecycle: u8,
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        tab: usize,
        events: Vec<Ev>,
    },
    Compact {
        tab: usize,
    },
    CatchUp {
        tab: usize,
    },
    PutSnapshot {
        tab: usize,
        name: usize,
        back: u64,
        past: bool,
    },
    GetSnapshot {
        tab: usize,
        name: usize,
    },
    DeleteSnapshot {
        tab: usize,
        name: usize,
    },
    Reopen {
        tab: usize,
    },
}

fn id_strategy() -> impl Strategy<Value = Id> {
    prop_oneof![
        2 => Just(Id::Auto),
        4 => Just(Id::Fresh),
        1 => (0usize..64).prop_map(Id::Known),
        2 => (0usize..64).prop_map(Id::Retry),
    ]
}

fn expect_strategy() -> impl Strategy<Value = Expect> {
    prop_oneof![
        4 => Just(Expect::Any),
        1 => Just(Expect::NoStream),
        1 => Just(Expect::Exists),
        3 => (-1i8..=1).prop_map(Expect::Current),
        1 => (0u64..5).prop_map(Expect::Exact),
    ]
}

fn event_strategy() -> impl Strategy<Value = Ev> {
    (
        id_strategy(),
        0..STREAMS.len(),
        0..TYPES.len(),
        any::<i16>(),
        expect_strategy(),
        prop::bool::weighted(0.03),
        // Deletes and erasures now and then, closes rarely (a closed stream takes nothing
        // more but its erasure).
        prop_oneof![60 => Just(0u8), 3 => Just(1u8), 1 => Just(2u8), 2 => Just(3u8)],
    )
        .prop_map(|(id, stream, kind, data, expect, invalid, lifecycle)| Ev {
            id,
            stream,
            kind,
            data,
            expect,
            invalid,
            lifecycle,
        })
}

fn op_strategy(tabs: usize) -> impl Strategy<Value = Op> {
    let tab = 0..tabs;
    prop_oneof![
        12 => (tab.clone(), prop::collection::vec(event_strategy(), 1..5))
            .prop_map(|(tab, events)| Op::Append { tab, events }),
        2 => tab.clone().prop_map(|tab| Op::Compact { tab }),
        2 => tab.clone().prop_map(|tab| Op::CatchUp { tab }),
        2 => (tab.clone(), 0usize..2, 0u64..4, prop::bool::weighted(0.2))
            .prop_map(|(tab, name, back, past)| Op::PutSnapshot { tab, name, back, past }),
        1 => (tab.clone(), 0usize..2).prop_map(|(tab, name)| Op::GetSnapshot { tab, name }),
        1 => (tab.clone(), 0usize..2).prop_map(|(tab, name)| Op::DeleteSnapshot { tab, name }),
        2 => tab.prop_map(|tab| Op::Reopen { tab }),
    ]
}

// ---- the reference model ----------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct ModelEvent {
    id: EventId,
    position: u64,
    stream: String,
    version: u64,
    kind: String,
    schema_version: u32,
    data: String,
    erased: bool,
}

#[derive(Debug, Default)]
struct Model {
    /// As appended (never erased here: [`Model::view`] applies the erasures).
    events: Vec<ModelEvent>,
    versions: HashMap<String, u64>,
    /// Per stream: the version of its last `$StreamDeleted`, and whether it is closed.
    lifecycles: HashMap<String, (u64, bool)>,
    ids: HashMap<EventId, u64>,
    snapshots: HashMap<String, SnapshotRecord>,
}

/// What the model says an append does.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// The results, and each event's stream version after the call.
    Ok(Vec<AppendResult>, Vec<u64>),
    WrongVersion {
        stream: String,
        expected: ExpectedVersion,
        actual: u64,
    },
    /// A known id on another event, or known ids mixed with new events: the known ids.
    DuplicateId(Vec<EventId>),
    /// An event for a closed stream: the stream.
    StreamDeleted(String),
    Invalid,
}

impl Model {
    fn version(&self, stream: &str) -> u64 {
        self.versions.get(stream).copied().unwrap_or(0)
    }

    /// The first `head` events as a reader that has read them sees them: an event is
    /// erased (data `null`) when a `$StreamErased` of its stream with a higher version is
    /// among them.
    fn view(&self, head: usize) -> Vec<ModelEvent> {
        let seen = &self.events[..head];
        let mut erased_below: HashMap<&str, u64> = HashMap::new();
        for e in seen.iter().filter(|e| e.kind == "$StreamErased") {
            let below = erased_below.entry(e.stream.as_str()).or_default();
            *below = (*below).max(e.version);
        }
        seen.iter()
            .map(|e| {
                let mut e = e.clone();
                if erased_below
                    .get(e.stream.as_str())
                    .is_some_and(|v| e.version < *v)
                {
                    e.data = "null".into();
                    e.erased = true;
                }
                e
            })
            .collect()
    }

    /// The rules, written as plainly as possible: invalid anywhere (or one id twice)
    /// refuses the batch; a known id must be the very event stored under it, and then
    /// every event of the batch must be one (a retry: nothing written, the stored
    /// positions and the streams' versions now), else `DUPLICATE_ID`; a broken expectation
    /// refuses the batch; otherwise the next position and the stream's next version.
    fn append(&mut self, batch: &[(Option<EventId>, NewEvent)], assigned: &[EventId]) -> Verdict {
        if batch.iter().any(|(_, e)| e.event_type.is_empty()) {
            return Verdict::Invalid;
        }
        let ids: Vec<EventId> = batch.iter().filter_map(|(id, _)| *id).collect();
        if (1..ids.len()).any(|i| ids[..i].contains(&ids[i])) {
            return Verdict::Invalid;
        }
        let known: Vec<EventId> = ids
            .iter()
            .copied()
            .filter(|id| self.ids.contains_key(id))
            .collect();
        if !known.is_empty() {
            let view = self.view(self.events.len());
            // An erased stored event has only its stream, type and schema version left.
            let same = |id: &EventId, event: &NewEvent| {
                let stored = &view[self.ids[id] as usize - 1];
                stored.stream == event.stream
                    && stored.kind == event.event_type
                    && stored.schema_version == event.schema_version
                    && (stored.erased || stored.data == event.data.get())
            };
            for (id, event) in batch {
                if let Some(id) = id.filter(|id| self.ids.contains_key(id)) {
                    if !same(&id, event) {
                        return Verdict::DuplicateId(vec![id]);
                    }
                }
            }
            if known.len() < batch.len() {
                return Verdict::DuplicateId(known);
            }
            return Verdict::Ok(
                known
                    .iter()
                    .map(|id| AppendResult::Duplicate(self.ids[id]))
                    .collect(),
                batch.iter().map(|(_, e)| self.version(&e.stream)).collect(),
            );
        }
        let mut staged: Vec<ModelEvent> = Vec::new();
        let mut results = Vec::new();
        let mut versions = self.versions.clone();
        let mut lifecycles = self.lifecycles.clone();
        let mut auto = assigned.iter();
        for (id, event) in batch {
            let actual = versions.get(&event.stream).copied().unwrap_or(0);
            let (deleted_at, closed) = lifecycles.get(&event.stream).copied().unwrap_or_default();
            // A closed stream takes nothing but its erasure; right after a delete, no_stream
            // holds too.
            if closed && event.event_type != "$StreamErased" {
                return Verdict::StreamDeleted(event.stream.clone());
            }
            let ok = match event.expected_version {
                ExpectedVersion::Any => true,
                ExpectedVersion::NoStream => {
                    actual == 0 || (deleted_at > 0 && deleted_at == actual)
                }
                ExpectedVersion::Exists => actual > 0,
                ExpectedVersion::Exact(v) => actual == v,
            };
            if !ok {
                return Verdict::WrongVersion {
                    stream: event.stream.clone(),
                    expected: event.expected_version,
                    actual,
                };
            }
            let position = (self.events.len() + staged.len()) as u64 + 1;
            let id = match id {
                Some(id) => *id,
                // The engine's own id, learnt from what it returned (none if it refused
                // the batch: then the verdicts differ and the test fails on that).
                None => auto.next().copied().unwrap_or(EventId([0; 16])),
            };
            versions.insert(event.stream.clone(), actual + 1);
            let lifecycle = lifecycles.entry(event.stream.clone()).or_default();
            match event.event_type.as_str() {
                "$StreamDeleted" => lifecycle.0 = actual + 1,
                "$StreamClosed" => lifecycle.1 = true,
                _ => {}
            }
            staged.push(ModelEvent {
                id,
                position,
                stream: event.stream.clone(),
                version: actual + 1,
                kind: event.event_type.clone(),
                schema_version: event.schema_version,
                data: event.data.get().to_owned(),
                erased: false,
            });
            results.push(AppendResult::Appended(position));
        }
        let before = self.view(self.events.len());
        for e in staged {
            self.ids.insert(e.id, e.position);
            self.events.push(e);
        }
        // An erasure drops the snapshots taken at or after the first event it erased.
        let after = self.view(self.events.len());
        if let Some(first) = after
            .iter()
            .zip(&before)
            .find(|(now, was)| now.erased && !was.erased)
            .map(|(now, _)| now.position)
        {
            self.snapshots.retain(|_, s| s.position < first);
        }
        self.versions = versions;
        self.lifecycles = lifecycles;
        Verdict::Ok(
            results,
            batch.iter().map(|(_, e)| self.version(&e.stream)).collect(),
        )
    }
}

// ---- the system under test --------------------------------------------------------------------

struct System {
    storage: MemoryStorage,
    tabs: Vec<Engine<MemoryStorage>>,
    model: Model,
    known_ids: Vec<EventId>,
    next_id: u64,
}

fn open(storage: &MemoryStorage) -> Engine<MemoryStorage> {
    let options = EngineOptions {
        clock: Box::new(FixedClock::at(TIME)),
        ids: Box::new(Uuidv7::new()),
        ..EngineOptions::default()
    };
    block_on(Engine::open(storage.another_handle(), options)).expect("open")
}

fn shape(e: &Event) -> ModelEvent {
    ModelEvent {
        id: e.id,
        position: e.position,
        stream: e.stream.clone(),
        version: e.version,
        kind: e.event_type.clone(),
        schema_version: e.schema_version,
        data: e.data.get().to_owned(),
        erased: e.erased,
    }
}

impl System {
    fn new(tabs: usize) -> Self {
        let storage = MemoryStorage::new();
        let tabs = (0..tabs).map(|_| open(&storage)).collect();
        System {
            storage,
            tabs,
            model: Model::default(),
            known_ids: Vec::new(),
            next_id: 0,
        }
    }

    fn fresh_id(&mut self) -> EventId {
        self.next_id += 1;
        let mut b = [0u8; 16];
        b[0] = 0xaa;
        b[6] = 0x70;
        b[8] = 0x80;
        b[8..].copy_from_slice(&self.next_id.to_be_bytes());
        EventId(b)
    }

    fn build(&mut self, tab: usize, events: &[Ev]) -> Vec<(Option<EventId>, NewEvent)> {
        let mut planned: HashMap<&str, u64> = HashMap::new();
        let mut batch = Vec::new();
        for ev in events {
            if let (Id::Retry(n), false) = (&ev.id, self.model.events.is_empty()) {
                // The stored event again, exactly as appended (its expectation may be
                // stale: a retry is not checked against it; its data may have been erased
                // since: an old copy).
                let stored = self.model.events[n % self.model.events.len()].clone();
                let mut event = NewEvent::new(stored.stream.as_str(), stored.kind.as_str(), &0)
                    .expect("JSON")
                    .with_id(stored.id)
                    .with_schema_version(stored.schema_version)
                    .expecting(ExpectedVersion::NoStream);
                event.data = serde_json::value::RawValue::from_string(stored.data.clone())
                    .expect("stored JSON");
                batch.push((Some(stored.id), event));
                continue;
            }
            let stream = STREAMS[ev.stream];
            let id = match ev.id {
                Id::Auto => None,
                Id::Fresh => Some(self.fresh_id()),
                Id::Known(n) if !self.known_ids.is_empty() => {
                    Some(self.known_ids[n % self.known_ids.len()])
                }
                Id::Known(_) | Id::Retry(_) => Some(self.fresh_id()),
            };
            // "Current" as the appending tab sees the stream (it may lag: then it fails,
            // as the model says, since the model knows the store).
            let current = *planned
                .entry(stream)
                .or_insert_with(|| self.tabs[tab].stream_version(stream));
            let expected = match ev.expect {
                Expect::Any => ExpectedVersion::Any,
                Expect::NoStream => ExpectedVersion::NoStream,
                Expect::Exists => ExpectedVersion::Exists,
                Expect::Current(offset) => {
                    ExpectedVersion::Exact(current.saturating_add_signed(i64::from(offset)))
                }
                Expect::Exact(v) => ExpectedVersion::Exact(v),
            };
            planned.insert(stream, current + 1);
            let kind = match (ev.invalid, ev.lifecycle) {
                (true, _) => "",
                (false, 1) => "$StreamDeleted",
                (false, 2) => "$StreamClosed",
                (false, 3) => "$StreamErased",
                (false, _) => TYPES[ev.kind],
            };
            let mut event = NewEvent::new(stream, kind, &serde_json::json!({ "n": ev.data }))
                .expect("JSON")
                .expecting(expected)
                // "Removed" events come at schema versions 1 to 3, "Added" ones at 1: the
                // log mixes segments of both formats, which compaction merges.
                .with_schema_version(if ev.kind == 1 && ev.lifecycle == 0 {
                    1 + u32::from(ev.data.unsigned_abs() % 3)
                } else {
                    1
                });
            if let Some(id) = id {
                event = event.with_id(id);
            }
            batch.push((id, event));
        }
        batch
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Append { tab, events } => {
                let batch = self.build(*tab, events);
                let engine = &self.tabs[*tab];
                let outcome =
                    block_on(engine.append(batch.iter().map(|(_, e)| e.clone()).collect()));
                // Ids the engine assigned, read back at the positions it returned.
                let mut assigned = Vec::new();
                if let Ok(outcome) = &outcome {
                    for ((id, _), result) in batch.iter().zip(&outcome.results) {
                        if let (None, AppendResult::Appended(p)) = (id, result) {
                            let read = engine
                                .read(&ReadQuery {
                                    after: p - 1,
                                    limit: Some(1),
                                    ..ReadQuery::default()
                                })
                                .expect("read");
                            assigned.push(read[0].id);
                        }
                    }
                }
                let expected = self.model.append(&batch, &assigned);
                match (&expected, outcome) {
                    (Verdict::Ok(results, versions), Ok(outcome)) => {
                        prop_assert_eq!(results, &outcome.results);
                        prop_assert_eq!(versions, &outcome.stream_versions);
                        for (id, result) in batch.iter().map(|(id, _)| id).zip(results) {
                            if let (Some(id), AppendResult::Appended(_)) = (id, result) {
                                self.known_ids.push(*id);
                            }
                        }
                        self.known_ids.extend(assigned);
                    }
                    (
                        Verdict::WrongVersion {
                            stream,
                            expected,
                            actual,
                        },
                        Err(Error::WrongExpectedVersion {
                            stream: s,
                            expected: e,
                            actual: a,
                        }),
                    ) => {
                        prop_assert_eq!((stream, expected, actual), (&s, &e, &a));
                    }
                    (Verdict::Invalid, Err(Error::InvalidEvent(_))) => {}
                    (Verdict::StreamDeleted(stream), Err(Error::StreamDeleted(message))) => {
                        prop_assert!(message.contains(&format!("`{stream}`")), "{}", message);
                    }
                    (Verdict::DuplicateId(ids), Err(err @ Error::DuplicateId { .. })) => {
                        let Error::DuplicateId { ids: got, .. } = &err else {
                            unreachable!()
                        };
                        let ids: Vec<String> = ids.iter().map(EventId::to_string).collect();
                        prop_assert_eq!(&ids, got);
                        let stored = err.stored_event().expect("the stored event");
                        let position = self.model.ids[&EventId::parse(&ids[0]).expect("id")];
                        prop_assert_eq!(
                            shape(&stored),
                            self.model.view(self.model.events.len())[position as usize - 1].clone()
                        );
                    }
                    (expected, got) => {
                        return Err(TestCaseError::fail(format!(
                            "the model says {expected:?}, the engine did {got:?}"
                        )))
                    }
                }
                // The appending tab has read everything stored before it wrote.
                self.check_tab(*tab, true)?;
            }
            Op::Compact { tab } => {
                let before = self.tabs[*tab].read(&ReadQuery::default()).expect("read");
                block_on(self.tabs[*tab].compact()).expect("compact");
                let after = self.tabs[*tab].read(&ReadQuery::default()).expect("read");
                prop_assert_eq!(before, after, "compaction changed what the tab reads");
            }
            Op::CatchUp { tab } => {
                block_on(self.tabs[*tab].catch_up()).expect("catch up");
                self.check_tab(*tab, true)?;
            }
            Op::PutSnapshot {
                tab,
                name,
                back,
                past,
            } => {
                let engine = &self.tabs[*tab];
                let stored = self.model.events.len() as u64;
                let position = if *past {
                    stored + 1 + back
                } else {
                    stored.saturating_sub(*back)
                };
                let record = SnapshotRecord {
                    name: format!("p{name}"),
                    version: 1 + *back as u32,
                    position,
                    state: format!("{{\"at\":{position}}}"),
                };
                // A snapshot is of the log the tab has read: if another tab erased some of
                // it since, the state would hold erased data, and it is refused.
                let held = engine.head() as usize;
                let all = self.model.view(self.model.events.len());
                let erased_since = all[..held]
                    .iter()
                    .zip(self.model.view(held))
                    .any(|(now, seen)| now.erased && !seen.erased);
                let result = block_on(engine.put_snapshot(&record));
                if *past {
                    prop_assert!(
                        matches!(result, Err(Error::InvalidArgument(_))),
                        "a snapshot past the head was accepted: {result:?}"
                    );
                } else if erased_since {
                    prop_assert!(
                        matches!(&result, Err(Error::InvalidArgument(m)) if m.contains("erased since")),
                        "a snapshot of erased data was accepted: {result:?}"
                    );
                } else {
                    prop_assert!(result.is_ok(), "{result:?}");
                    self.model.snapshots.insert(record.name.clone(), record);
                }
            }
            Op::GetSnapshot { tab, name } => {
                let name = format!("p{name}");
                let got = block_on(self.tabs[*tab].snapshot(&name)).expect("snapshot");
                prop_assert_eq!(got.as_ref(), self.model.snapshots.get(&name));
            }
            Op::DeleteSnapshot { tab, name } => {
                let name = format!("p{name}");
                block_on(self.tabs[*tab].delete_snapshot(&name)).expect("delete");
                self.model.snapshots.remove(&name);
            }
            Op::Reopen { tab } => {
                // A crash: the engine goes without closing; a new one opens on the disk.
                let fresh = open(&self.storage);
                drop(std::mem::replace(&mut self.tabs[*tab], fresh));
                self.check_tab(*tab, true)?;
            }
        }
        for tab in 0..self.tabs.len() {
            self.check_tab(tab, false)?;
        }
        Ok(())
    }

    /// A tab reads the model's log (all of it when `current`, else a prefix: it may not
    /// have looked since the other tab wrote).
    fn check_tab(&self, tab: usize, current: bool) -> Result<(), TestCaseError> {
        let engine = &self.tabs[tab];
        let model = &self.model;
        let log: Vec<ModelEvent> = engine
            .read(&ReadQuery::default())
            .expect("read")
            .iter()
            .map(shape)
            .collect();
        if current {
            prop_assert_eq!(log.len(), model.events.len(), "tab {} is behind", tab);
        }
        prop_assert!(log.len() <= model.events.len());
        // What the tab has read, with the erasures among it applied.
        let view = model.view(log.len());
        prop_assert_eq!(&log[..], &view[..], "tab {}", tab);
        prop_assert_eq!(engine.head(), log.len() as u64);
        let head = log.len();
        // Stream reads, type reads, ranges with limits, ids, versions: on the prefix.
        let seen = &view[..];
        for stream in STREAMS {
            // A stream reads from after its last delete (as far as this tab has read).
            let deleted_at = seen
                .iter()
                .filter(|e| e.stream == stream && e.kind == "$StreamDeleted")
                .map(|e| e.version)
                .max()
                .unwrap_or(0);
            let expected: Vec<&ModelEvent> = seen
                .iter()
                .filter(|e| e.stream == stream && e.version > deleted_at)
                .collect();
            let got: Vec<ModelEvent> = engine
                .read(&ReadQuery {
                    stream: Some(stream.into()),
                    ..ReadQuery::default()
                })
                .expect("read")
                .iter()
                .map(shape)
                .collect();
            prop_assert_eq!(got.iter().collect::<Vec<_>>(), expected.clone());
            let read = |query: ReadQuery| -> Vec<ModelEvent> {
                engine
                    .read(&query)
                    .expect("read")
                    .iter()
                    .map(shape)
                    .collect()
            };
            let newest: Vec<&ModelEvent> = expected.iter().rev().take(2).copied().collect();
            let got = read(ReadQuery {
                stream: Some(stream.into()),
                backwards: true,
                limit: Some(2),
                ..ReadQuery::default()
            });
            prop_assert_eq!(got.iter().collect::<Vec<_>>(), newest);
            let from_two: Vec<&ModelEvent> = expected
                .iter()
                .filter(|e| e.version >= 2)
                .copied()
                .collect();
            let got = read(ReadQuery {
                stream: Some(stream.into()),
                from_version: Some(2),
                ..ReadQuery::default()
            });
            prop_assert_eq!(got.iter().collect::<Vec<_>>(), from_two);
            prop_assert_eq!(
                engine.stream_version(stream),
                seen.iter().filter(|e| e.stream == stream).count() as u64
            );
        }
        for kind in TYPES {
            let after = (head / 3) as u64;
            let expected: Vec<&ModelEvent> = seen
                .iter()
                .filter(|e| e.kind == kind && e.position > after)
                .take(2)
                .collect();
            let got: Vec<ModelEvent> = engine
                .read(&ReadQuery {
                    event_type: Some(kind.into()),
                    after,
                    limit: Some(2),
                    ..ReadQuery::default()
                })
                .expect("read")
                .iter()
                .map(shape)
                .collect();
            prop_assert_eq!(got.iter().collect::<Vec<_>>(), expected);
        }
        let newest: Vec<&ModelEvent> = seen.iter().rev().take(3).collect();
        let got: Vec<ModelEvent> = engine
            .read(&ReadQuery {
                backwards: true,
                limit: Some(3),
                ..ReadQuery::default()
            })
            .expect("read")
            .iter()
            .map(shape)
            .collect();
        prop_assert_eq!(got.iter().collect::<Vec<_>>(), newest);
        if head > 0 {
            let (after, to) = (head as u64 / 2, head as u64);
            let json = engine.range_json(after, to).expect("range");
            let parsed: Vec<Event> = serde_json::from_str(&json).expect("JSON");
            prop_assert_eq!(
                parsed.iter().map(shape).collect::<Vec<_>>(),
                seen[after as usize..].to_vec()
            );
            let last = &seen[head - 1];
            let by_id = engine
                .event_by_id(&last.id)
                .expect("by id")
                .map(|e| shape(&e));
            prop_assert_eq!(by_id.as_ref(), Some(last));
        }
        Ok(())
    }
}

fn run(ops: Vec<Op>, tabs: usize) -> Result<(), TestCaseError> {
    let mut system = System::new(tabs);
    for (i, op) in ops.iter().enumerate() {
        system
            .step(op)
            .map_err(|e| TestCaseError::fail(format!("step {i} ({op:?}): {e}")))?;
    }
    // At the end every tab, caught up, and a fresh open read the whole model.
    for tab in 0..tabs {
        block_on(system.tabs[tab].catch_up()).expect("catch up");
        system.check_tab(tab, true)?;
    }
    let reopened = open(&system.storage);
    let log: Vec<ModelEvent> = reopened
        .read(&ReadQuery::default())
        .expect("read")
        .iter()
        .map(shape)
        .collect();
    prop_assert_eq!(log, system.model.view(system.model.events.len()));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Case count from PROPTEST_CASES (default 256); shrinking kept short for CI.
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    })]

    #[test]
    fn one_tab_follows_the_model(ops in prop::collection::vec(op_strategy(1), 1..40)) {
        run(ops, 1)?;
    }

    #[test]
    fn two_tabs_follow_the_model(ops in prop::collection::vec(op_strategy(2), 1..40)) {
        run(ops, 2)?;
    }
}

/// The model itself, on a case written out by hand: so that a wrong model cannot make
/// every property pass.
#[test]
fn the_model_applies_the_rules() {
    let mut model = Model::default();
    let id = EventId([7; 16]);
    let ev = |stream: &str, expected| NewEvent::new(stream, "T", &1).unwrap().expecting(expected);
    assert_eq!(
        model.append(
            &[
                (Some(id), ev("s", ExpectedVersion::NoStream)),
                (Some(id), ev("s", ExpectedVersion::Any)),
            ],
            &[],
        ),
        Verdict::Invalid,
        "one id twice in a batch"
    );
    let first = model.append(
        &[
            (Some(id), ev("s", ExpectedVersion::NoStream)),
            (Some(EventId([8; 16])), ev("s", ExpectedVersion::Exact(1))),
        ],
        &[],
    );
    assert_eq!(
        first,
        Verdict::Ok(
            vec![AppendResult::Appended(1), AppendResult::Appended(2)],
            vec![2, 2]
        )
    );
    // A retry (a stale expectation is not checked); a reused id; a mix.
    assert_eq!(
        model.append(&[(Some(id), ev("s", ExpectedVersion::NoStream))], &[]),
        Verdict::Ok(vec![AppendResult::Duplicate(1)], vec![2])
    );
    assert_eq!(
        model.append(&[(Some(id), ev("t", ExpectedVersion::Any))], &[]),
        Verdict::DuplicateId(vec![id])
    );
    assert_eq!(
        model.append(
            &[
                (Some(id), ev("s", ExpectedVersion::Any)),
                (None, ev("s", ExpectedVersion::Any))
            ],
            &[]
        ),
        Verdict::DuplicateId(vec![id])
    );
    let refused = model.append(
        &[
            (Some(EventId([9; 16])), ev("t", ExpectedVersion::Any)),
            (Some(EventId([10; 16])), ev("s", ExpectedVersion::Exact(1))),
        ],
        &[],
    );
    assert_eq!(
        refused,
        Verdict::WrongVersion {
            stream: "s".into(),
            expected: ExpectedVersion::Exact(1),
            actual: 2
        }
    );
    assert_eq!(model.events.len(), 2, "a refused batch writes nothing");
    assert_eq!(
        model.append(
            &[(None, ev("s", ExpectedVersion::Exists))],
            &[EventId([11; 16])]
        ),
        Verdict::Ok(vec![AppendResult::Appended(3)], vec![3])
    );
    assert_eq!(model.version("s"), 3);
    // Lifecycle: right after a delete no_stream holds (versions count on); after a close
    // nothing does.
    let life = |kind: &str, expected| NewEvent::new("s", kind, &1).unwrap().expecting(expected);
    let mut id_n = 20u8;
    let mut next = || {
        id_n += 1;
        Some(EventId([id_n; 16]))
    };
    let deleted = model.append(
        &[(next(), life("$StreamDeleted", ExpectedVersion::Exact(3)))],
        &[],
    );
    assert_eq!(
        deleted,
        Verdict::Ok(vec![AppendResult::Appended(4)], vec![4])
    );
    let restarted = model.append(&[(next(), ev("s", ExpectedVersion::NoStream))], &[]);
    assert_eq!(
        restarted,
        Verdict::Ok(vec![AppendResult::Appended(5)], vec![5])
    );
    assert!(matches!(
        model.append(&[(next(), ev("s", ExpectedVersion::NoStream))], &[]),
        Verdict::WrongVersion { actual: 5, .. }
    ));
    let closed = model.append(
        &[(next(), life("$StreamClosed", ExpectedVersion::Any))],
        &[],
    );
    assert_eq!(
        closed,
        Verdict::Ok(vec![AppendResult::Appended(6)], vec![6])
    );
    assert_eq!(
        model.append(&[(next(), ev("s", ExpectedVersion::Any))], &[]),
        Verdict::StreamDeleted("s".into())
    );
    // Erasure: a closed stream takes it; the stream's earlier events read erased (as far as
    // a reader has read the erasure); an old copy of one is a retry; snapshots at or after
    // the first erased event go.
    model.snapshots.insert(
        "p".into(),
        SnapshotRecord {
            name: "p".into(),
            version: 1,
            position: 2,
            state: "{}".into(),
        },
    );
    let erased = model.append(
        &[(next(), life("$StreamErased", ExpectedVersion::Any))],
        &[],
    );
    assert_eq!(
        erased,
        Verdict::Ok(vec![AppendResult::Appended(7)], vec![7])
    );
    let view = model.view(7);
    assert!(view[..6].iter().all(|e| e.erased && e.data == "null"));
    assert!(!view[6].erased);
    assert!(
        model.view(6).iter().all(|e| !e.erased),
        "before the erasure"
    );
    assert!(model.snapshots.is_empty());
    let old_copy = NewEvent::new("s", "T", &"other data than the erased one had")
        .unwrap()
        .expecting(ExpectedVersion::NoStream);
    assert_eq!(
        model.append(&[(Some(id), old_copy)], &[]),
        Verdict::Ok(vec![AppendResult::Duplicate(1)], vec![7])
    );
}

// ---- truncation (retention, issue 13 item 5) ----------------------------------------------------
//
// The same operations on synced tabs (each append is pushed and pulled at once, through an
// in-memory server, so the replica's log is the model's), with retention cuts in between:
// a tab drops the confirmed events up to `head - keep`. The model keeps its whole log and
// where the cut is; after every step each tab must read what the model says of the part it
// holds, refuse with NOT_RETAINED exactly the reads that need a dropped event (whole-log
// reads from the start; a stream whose visible events were dropped; a newest-first read the
// kept events cannot fill), and count the dropped events in stream versions and in the
// append rules. Appends reusing the id of a dropped event are left out (the replica no
// longer knows it; the server judges it: `tests/retention.rs`).

#[derive(Debug, Clone)]
enum CutOp {
    Append { tab: usize, events: Vec<Ev> },
    Cut { tab: usize, keep: u64 },
    CatchUp { tab: usize },
    Compact { tab: usize },
    Reopen { tab: usize },
}

fn cut_op_strategy(tabs: usize) -> impl Strategy<Value = CutOp> {
    let tab = 0..tabs;
    prop_oneof![
        10 => (tab.clone(), prop::collection::vec(event_strategy(), 1..5))
            .prop_map(|(tab, events)| CutOp::Append { tab, events }),
        4 => (tab.clone(), 0u64..6).prop_map(|(tab, keep)| CutOp::Cut { tab, keep }),
        2 => tab.clone().prop_map(|tab| CutOp::CatchUp { tab }),
        1 => tab.clone().prop_map(|tab| CutOp::Compact { tab }),
        2 => tab.prop_map(|tab| CutOp::Reopen { tab }),
    ]
}

struct CutSystem {
    system: System,
    server: std::rc::Rc<annals::testing::memory_server::MemoryServer>,
    syncs: Vec<annals::sync::client::SyncClient<annals::testing::in_process::InProcessTransport>>,
    /// Where the store was cut (the model's log is whole).
    dropped: u64,
}

fn open_synced(storage: &MemoryStorage) -> Engine<MemoryStorage> {
    let options = EngineOptions {
        clock: Box::new(FixedClock::at(TIME)),
        ids: Box::new(Uuidv7::new()),
        synced: true,
        ..EngineOptions::default()
    };
    block_on(Engine::open(storage.another_handle(), options)).expect("open")
}

fn not_retained<T: std::fmt::Debug>(result: annals::Result<T>) -> Result<(), TestCaseError> {
    prop_assert!(
        matches!(result, Err(Error::NotRetained { .. })),
        "expected NOT_RETAINED, got {:?}",
        result
    );
    Ok(())
}

impl CutSystem {
    fn new(tabs: usize) -> Self {
        let storage = MemoryStorage::new();
        let server = std::rc::Rc::new(annals::testing::memory_server::MemoryServer::new());
        let syncs = (0..tabs)
            .map(|_| {
                annals::sync::client::SyncClient::new(
                    annals::testing::in_process::InProcessTransport::new(server.clone(), "m"),
                    annals::sync::client::SyncOptions::default(),
                )
            })
            .collect();
        CutSystem {
            system: System {
                tabs: (0..tabs).map(|_| open_synced(&storage)).collect(),
                storage,
                model: Model::default(),
                known_ids: Vec::new(),
                next_id: 0,
            },
            server,
            syncs,
            dropped: 0,
        }
    }

    fn sync(&self, tab: usize) {
        let report = block_on(self.syncs[tab].sync(&self.system.tabs[tab])).expect("sync");
        assert!(report.rejected.is_empty(), "{report:?}");
    }

    fn step(&mut self, op: &CutOp) -> Result<(), TestCaseError> {
        match op {
            CutOp::Append { tab, events } => {
                let batch = self.system.build(*tab, events);
                let dropped = self.dropped;
                let model = &self.system.model;
                if batch.iter().any(|(id, _)| {
                    id.is_some_and(|id| model.ids.get(&id).is_some_and(|p| *p <= dropped))
                }) {
                    return Ok(()); // an id the replica no longer holds: see above
                }
                // The appending tab has pulled everything (it appends at the model's head).
                block_on(self.system.tabs[*tab].catch_up()).expect("catch up");
                let engine = &self.system.tabs[*tab];
                let outcome =
                    block_on(engine.append(batch.iter().map(|(_, e)| e.clone()).collect()));
                let mut assigned = Vec::new();
                if let Ok(outcome) = &outcome {
                    for ((id, _), result) in batch.iter().zip(&outcome.results) {
                        if let (None, AppendResult::Appended(p)) = (id, result) {
                            let read = engine
                                .read(&ReadQuery {
                                    after: p - 1,
                                    limit: Some(1),
                                    ..ReadQuery::default()
                                })
                                .expect("read");
                            assigned.push(read[0].id);
                        }
                    }
                }
                let expected = self.system.model.append(&batch, &assigned);
                match (&expected, &outcome) {
                    (Verdict::Ok(results, versions), Ok(outcome)) => {
                        prop_assert_eq!(results, &outcome.results);
                        prop_assert_eq!(versions, &outcome.stream_versions);
                        for (id, result) in batch.iter().map(|(id, _)| id).zip(results) {
                            if let (Some(id), AppendResult::Appended(_)) = (id, result) {
                                self.system.known_ids.push(*id);
                            }
                        }
                        self.system.known_ids.extend(assigned);
                    }
                    (
                        Verdict::WrongVersion { actual, .. },
                        Err(Error::WrongExpectedVersion { actual: a, .. }),
                    ) => {
                        prop_assert_eq!(actual, a);
                    }
                    (Verdict::Invalid, Err(Error::InvalidEvent(_)))
                    | (Verdict::StreamDeleted(_), Err(Error::StreamDeleted(_)))
                    | (Verdict::DuplicateId(_), Err(Error::DuplicateId { .. })) => {}
                    (expected, got) => {
                        return Err(TestCaseError::fail(format!(
                            "the model says {expected:?}, the engine did {got:?}"
                        )))
                    }
                }
                self.sync(*tab);
                prop_assert_eq!(
                    self.system.tabs[*tab].confirmed_head(),
                    self.system.model.events.len() as u64
                );
                prop_assert_eq!(self.server.head("m"), self.system.model.events.len() as u64);
            }
            CutOp::Cut { tab, keep } => {
                let engine = &self.system.tabs[*tab];
                block_on(engine.catch_up()).expect("catch up");
                let through = engine.confirmed_head().saturating_sub(*keep);
                let result = block_on(engine.drop_through(through));
                if through > self.dropped {
                    prop_assert!(result.is_ok(), "{result:?}");
                    self.dropped = through;
                    // Known ids (for reuse) are those the replica still holds.
                    let (model, dropped) = (&self.system.model, self.dropped);
                    self.system.known_ids.retain(|id| model.ids[id] > dropped);
                } else {
                    prop_assert!(
                        matches!(result, Err(Error::InvalidArgument(_))),
                        "{result:?}"
                    );
                }
                prop_assert_eq!(engine.dropped(), self.dropped);
            }
            CutOp::CatchUp { tab } => {
                block_on(self.system.tabs[*tab].catch_up()).expect("catch up");
                prop_assert_eq!(self.system.tabs[*tab].dropped(), self.dropped);
            }
            CutOp::Compact { tab } => {
                block_on(self.system.tabs[*tab].compact()).expect("compact");
            }
            CutOp::Reopen { tab } => {
                let fresh = open_synced(&self.system.storage);
                drop(std::mem::replace(&mut self.system.tabs[*tab], fresh));
                prop_assert_eq!(self.system.tabs[*tab].dropped(), self.dropped);
            }
        }
        for tab in 0..self.system.tabs.len() {
            self.check(tab)?;
        }
        Ok(())
    }

    /// What a tab reads: the model's log from where the tab's view is cut, up to its head.
    fn check(&self, tab: usize) -> Result<(), TestCaseError> {
        let engine = &self.system.tabs[tab];
        let (dropped, head) = (engine.dropped(), engine.head() as usize);
        prop_assert!(dropped <= self.dropped);
        prop_assert_eq!(engine.pending_count(), 0);
        let view = self.system.model.view(head);
        let seen = &view[..];
        let read = |query: ReadQuery| {
            engine
                .read(&query)
                .map(|l| l.iter().map(shape).collect::<Vec<_>>())
        };
        let held = read(ReadQuery {
            after: dropped,
            ..ReadQuery::default()
        })
        .expect("read what is held");
        prop_assert_eq!(&held[..], &seen[dropped as usize..], "tab {}", tab);
        if dropped > 0 {
            not_retained(read(ReadQuery::default()))?;
            let by_type = ReadQuery {
                event_type: Some(TYPES[0].into()),
                ..ReadQuery::default()
            };
            not_retained(read(by_type))?;
        }
        for stream in STREAMS {
            let deleted_at = seen
                .iter()
                .filter(|e| e.stream == stream && e.kind == "$StreamDeleted")
                .map(|e| e.version)
                .max()
                .unwrap_or(0);
            let visible: Vec<ModelEvent> = seen
                .iter()
                .filter(|e| e.stream == stream && e.version > deleted_at)
                .cloned()
                .collect();
            let got = read(ReadQuery {
                stream: Some(stream.into()),
                ..ReadQuery::default()
            });
            if visible.iter().any(|e| e.position <= dropped) {
                not_retained(got)?;
            } else {
                prop_assert_eq!(got.expect("read"), visible);
            }
            prop_assert_eq!(
                engine.stream_version(stream),
                seen.iter().filter(|e| e.stream == stream).count() as u64
            );
        }
        let newest = read(ReadQuery {
            backwards: true,
            limit: Some(3),
            ..ReadQuery::default()
        });
        if head as u64 - dropped >= 3 || dropped == 0 {
            let expected: Vec<ModelEvent> = seen.iter().rev().take(3).cloned().collect();
            prop_assert_eq!(newest.expect("read"), expected);
        } else {
            not_retained(newest)?;
        }
        Ok(())
    }
}

fn run_with_cuts(ops: Vec<CutOp>, tabs: usize) -> Result<(), TestCaseError> {
    let mut system = CutSystem::new(tabs);
    for (i, op) in ops.iter().enumerate() {
        system
            .step(op)
            .map_err(|e| TestCaseError::fail(format!("step {i} ({op:?}): {e}")))?;
    }
    // A store opened at the end holds the model's log from the cut on.
    let reopened = open_synced(&system.system.storage);
    prop_assert_eq!(reopened.dropped(), system.dropped);
    let held: Vec<ModelEvent> = reopened
        .read(&ReadQuery {
            after: system.dropped,
            ..ReadQuery::default()
        })
        .expect("read")
        .iter()
        .map(shape)
        .collect();
    let model = &system.system.model;
    prop_assert_eq!(
        &held[..],
        &model.view(model.events.len())[system.dropped as usize..]
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    })]

    #[test]
    fn one_tab_with_retention_cuts_follows_the_model(ops in prop::collection::vec(cut_op_strategy(1), 1..40)) {
        run_with_cuts(ops, 1)?;
    }

    #[test]
    fn two_tabs_with_retention_cuts_follow_the_model(ops in prop::collection::vec(cut_op_strategy(2), 1..40)) {
        run_with_cuts(ops, 2)?;
    }
}
