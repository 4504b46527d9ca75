//! Crash consistency on IndexedDB, as a table: every operation that writes the store is run
//! once to learn which steps its transactions reach (a step is a point where a request was
//! issued, or the commit itself), then run again from the same starting store once per
//! step, with a failure injected there. After each failure:
//!
//! - the operation returned an error;
//! - the engine's memory matches what is stored (for an operation of one transaction: both
//!   are exactly as before it, the batch is absent), and what is stored is the same whatever
//!   step of the same transaction failed: what the transactions before it committed;
//! - a second handle (a reload) opens the store and sees every batch whole or absent, and
//!   a confirmed log that holds every event up to its head (the pull cursor is never ahead
//!   of its events), equal to the server's log where it is synced;
//! - the operation then succeeds, and the store ends exactly as the run without failure
//!   did, with nothing duplicated on the server.
//!
//! Loading a lazily opened log only reads; opening writes (the format, the client id, the
//! move to synced or to the current format) and is in the table.
#![cfg(target_arch = "wasm32")]

use std::rc::Rc;

use annals::clock::{FixedClock, SequentialIds};
use annals::protocol::{PushEvent, PushRequest};
use annals::storage::indexeddb::{FailStep, IndexedDbStorage};
use annals::storage::SnapshotRecord;
use annals::sync::client::{SyncClient, SyncOptions};
use annals::testing::in_process::InProcessTransport;
use annals::testing::memory_server::MemoryServer;
use annals::{Engine, EngineOptions, EventId, ExpectedVersion, NewEvent, ReadQuery};
use js_sys::{Function, Promise, Reflect};
use serde_json::json;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{console_log, wasm_bindgen_test, wasm_bindgen_test_configure};
use web_sys::{IdbDatabase, IdbFactory, IdbTransactionMode};

wasm_bindgen_test_configure!(run_in_browser);

const STORE: &str = "todos";

/// Every operation that writes the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// A local store appends one event.
    AppendOne,
    /// A local store appends a batch of four events (appendMany).
    AppendMany,
    /// A synced store appends a batch to its outbox.
    AppendToOutbox,
    /// Merging small segments.
    Compact,
    /// A projection snapshot written through the engine.
    WriteSnapshot,
    /// A projection snapshot deleted (a projection's version changed).
    DeleteSnapshot,
    /// A synced store pulls other clients' events, several pages.
    Pull,
    /// A synced store pushes its outbox (one batch is confirmed in two parts, so it is
    /// rewritten) and pulls its events back, removing them from the outbox.
    PushAndPull,
    /// The server refuses a pushed event: it leaves the outbox for the rejected list.
    PushRejected,
    /// The server's database was replaced (new epoch): the confirmed log is reset and pulled
    /// again, the outbox pushed again.
    EpochReset,
    /// Opening a new local store (writes its format).
    OpenNew,
    /// Opening a new synced store (format, client id, mode).
    OpenNewSynced,
    /// Opening a local store with events as synced: they move to the outbox.
    OpenLocalAsSynced,
    /// Opening a store of format 1 (counters in four keys) moves it to the current format.
    OpenFormat1,
    /// Retention drops confirmed events through the middle of a segment (its tail is
    /// written back), beside an outbox that stays.
    RetentionCut,
}

const OPERATIONS: [Op; 15] = [
    Op::AppendOne,
    Op::AppendMany,
    Op::AppendToOutbox,
    Op::Compact,
    Op::WriteSnapshot,
    Op::DeleteSnapshot,
    Op::Pull,
    Op::PushAndPull,
    Op::PushRejected,
    Op::EpochReset,
    Op::OpenNew,
    Op::OpenNewSynced,
    Op::OpenLocalAsSynced,
    Op::OpenFormat1,
    Op::RetentionCut,
];

impl Op {
    fn synced(self) -> bool {
        matches!(
            self,
            Op::AppendToOutbox
                | Op::Pull
                | Op::PushAndPull
                | Op::PushRejected
                | Op::EpochReset
                | Op::OpenNewSynced
                | Op::OpenLocalAsSynced
                | Op::RetentionCut
        )
    }

    /// The operation opens the store itself (there is no engine before it).
    fn opens(self) -> bool {
        matches!(
            self,
            Op::OpenNew | Op::OpenNewSynced | Op::OpenLocalAsSynced | Op::OpenFormat1
        )
    }

    /// The operation is one transaction: after a failure nothing of it may remain.
    fn one_transaction(self) -> bool {
        matches!(
            self,
            Op::AppendOne
                | Op::AppendMany
                | Op::AppendToOutbox
                | Op::Compact
                | Op::WriteSnapshot
                | Op::DeleteSnapshot
                | Op::RetentionCut
        )
    }
}

fn unique_name(test: &str) -> String {
    format!(
        "annals-crash-{test}-{:x}",
        (js_sys::Math::random() * 1e15) as u64
    )
}

/// Deterministic ids for the events the tests append: the same batch in every run.
fn id(n: u64) -> EventId {
    EventId::parse(&format!("00000000-0000-7000-8000-ab{n:010x}")).expect("a valid id")
}

fn ev(n: u64, stream: &str) -> NewEvent {
    NewEvent::new(stream, "Noted", &json!({ "n": n }))
        .expect("JSON")
        .with_id(id(n))
}

/// Fixed clock and sequential ids: two runs of an operation write the same bytes.
fn options(synced: bool) -> EngineOptions {
    EngineOptions {
        clock: Box::new(FixedClock::at(1_700_000_000_000)),
        ids: Box::new(SequentialIds::default()),
        synced,
        ..EngineOptions::default()
    }
}

async fn open(name: &str, synced: bool) -> Result<Engine<IndexedDbStorage>, String> {
    Engine::open(IndexedDbStorage::new(name), options(synced))
        .await
        .map_err(|e| e.to_string())
}

fn sync_client(server: &Rc<MemoryServer>) -> SyncClient<InProcessTransport> {
    // Small pages and push batches: a sync is several transactions, and a pending batch
    // gets confirmed in parts.
    SyncClient::new(
        InProcessTransport::new(server.clone(), STORE),
        SyncOptions {
            push_batch: 2,
            pull_limit: 2,
            ..SyncOptions::default()
        },
    )
}

/// Another client pushes events `ns` directly to the server.
fn push_from_elsewhere(server: &MemoryServer, ns: &[u64], stream: &str) {
    let events = ns
        .iter()
        .map(|n| PushEvent {
            id: id(*n),
            stream: stream.into(),
            event_type: "Noted".into(),
            schema_version: 1,
            data: serde_json::value::to_raw_value(&json!({ "n": n })).expect("JSON"),
            meta: None,
            time: 1,
            expected_version: ExpectedVersion::Any,
            erased: false,
        })
        .collect();
    server.push(
        STORE,
        &PushRequest {
            client_id: "elsewhere".into(),
            events,
        },
    );
}

/// What a handle sees of the store: its log (confirmed then pending), the snapshot, the
/// rejected list and the number of segments.
#[derive(Debug, Clone, PartialEq)]
struct View {
    /// Positions up to this one were dropped by retention.
    dropped: u64,
    confirmed: u64,
    pending: usize,
    /// (position, id, stream, data, pending) of every event.
    events: Vec<(u64, String, String, String, bool)>,
    snapshot: Option<(u32, u64, String)>,
    rejected: usize,
    segments: usize,
}

async fn view(engine: &Engine<IndexedDbStorage>) -> View {
    let events = engine
        .read(&ReadQuery {
            after: engine.dropped(),
            ..ReadQuery::default()
        })
        .expect("the log reads")
        .into_iter()
        .map(|e| {
            (
                e.position,
                e.id.to_string(),
                e.stream,
                e.data.get().to_owned(),
                e.pending,
            )
        })
        .collect();
    View {
        dropped: engine.dropped(),
        confirmed: engine.confirmed_head(),
        pending: engine.pending_count(),
        events,
        snapshot: engine
            .snapshot(STORE)
            .await
            .expect("the snapshot reads")
            .map(|s| (s.version, s.position, s.state)),
        rejected: engine.rejected().await.expect("rejections read").len(),
        segments: engine.storage().segment_count().await.expect("count"),
    }
}

/// Settles when `target` fires `ok` (`Ok`) or `fail` (`Err`), as `on<event>` handlers.
async fn fired(target: &JsValue, ok: &str, fail: &str) -> Result<(), JsValue> {
    let promise = Promise::new(&mut |resolve: Function, reject: Function| {
        Reflect::set(target, &format!("on{ok}").into(), &resolve).expect("a handler");
        Reflect::set(target, &format!("on{fail}").into(), &reject).expect("a handler");
    });
    JsFuture::from(promise).await.map(drop)
}

/// Rewrites the `meta` of a closed store as annals of format 1 left it: the counters in
/// four keys, no `counters` record.
async fn write_as_format_1(name: &str, head: u64) {
    let factory: IdbFactory = Reflect::get(&js_sys::global(), &"indexedDB".into())
        .expect("indexedDB")
        .unchecked_into();
    let request = factory.open(name).expect("open");
    fired(&request, "success", "error").await.expect("opens");
    let db: IdbDatabase = request.result().expect("a database").unchecked_into();
    let tx = db
        .transaction_with_str_and_mode("meta", IdbTransactionMode::Readwrite)
        .expect("a transaction");
    let meta = tx.object_store("meta").expect("meta");
    meta.put_with_key(&JsValue::from(1), &"format".into())
        .expect("put");
    meta.delete(&"counters".into()).expect("delete");
    for (key, value) in [
        ("head", head),
        ("pendingSeq", 0),
        ("pendingGeneration", 0),
        ("logGeneration", 0),
    ] {
        meta.put_with_key(&JsValue::from(value as f64), &key.into())
            .expect("put");
    }
    fired(&tx, "complete", "abort").await.expect("commits");
    db.close();
}

/// The starting store of `op` in database `name` (and the server's log).
async fn prepare(op: Op, name: &str, server: &Rc<MemoryServer>) {
    match op {
        Op::OpenNew | Op::OpenNewSynced => {}
        Op::AppendOne
        | Op::AppendMany
        | Op::Compact
        | Op::WriteSnapshot
        | Op::OpenLocalAsSynced
        | Op::OpenFormat1 => {
            let engine = open(name, false).await.expect("opens");
            // Three small segments, so that compaction has something to merge.
            for n in 1..=3 {
                engine.append(vec![ev(n, "a")]).await.expect("appends");
            }
            engine.close().await;
            if op == Op::OpenFormat1 {
                write_as_format_1(name, 3).await;
            }
        }
        Op::DeleteSnapshot => {
            let engine = open(name, false).await.expect("opens");
            engine.append(vec![ev(1, "a")]).await.expect("appends");
            engine
                .put_snapshot(&SnapshotRecord {
                    name: STORE.into(),
                    version: 1,
                    position: 1,
                    state: "{\"count\":1}".into(),
                })
                .await
                .expect("snapshot");
            engine.close().await;
        }
        Op::AppendToOutbox => {
            let engine = open(name, true).await.expect("opens");
            engine.append(vec![ev(1, "a")]).await.expect("appends");
            engine.close().await;
        }
        Op::Pull => {
            let engine = open(name, true).await.expect("opens");
            sync_client(server).sync(&engine).await.expect("syncs");
            engine.close().await;
            push_from_elsewhere(server, &[101, 102, 103, 104, 105], "b");
        }
        Op::PushAndPull => {
            let engine = open(name, true).await.expect("opens");
            engine.append(vec![ev(1, "a")]).await.expect("appends");
            sync_client(server).sync(&engine).await.expect("syncs");
            push_from_elsewhere(server, &[101, 102], "b");
            // One batch of three (confirmed in two parts) and one of one.
            engine
                .append(vec![ev(2, "a"), ev(3, "a"), ev(4, "a")])
                .await
                .expect("appends");
            engine.append(vec![ev(5, "a")]).await.expect("appends");
            engine.close().await;
        }
        Op::PushRejected => {
            let engine = open(name, true).await.expect("opens");
            // Another client created stream "c" first; this one expects it not to exist.
            push_from_elsewhere(server, &[101], "c");
            engine
                .append(vec![ev(1, "c").expecting(ExpectedVersion::NoStream)])
                .await
                .expect("appends");
            engine.close().await;
        }
        Op::RetentionCut => {
            let engine = open(name, true).await.expect("opens");
            push_from_elsewhere(server, &[101, 102, 103, 104, 105, 106], "b");
            sync_client(server).sync(&engine).await.expect("syncs");
            // The pages of two become one segment of six: the cut goes through it.
            engine.compact().await.expect("compacts");
            engine.append(vec![ev(1, "a")]).await.expect("appends");
            engine.close().await;
        }
        Op::EpochReset => {
            let engine = open(name, true).await.expect("opens");
            engine
                .append(vec![ev(1, "a"), ev(2, "a")])
                .await
                .expect("appends");
            sync_client(server).sync(&engine).await.expect("syncs");
            engine.append(vec![ev(3, "a")]).await.expect("appends");
            engine.close().await;
            // The server's database is replaced: it comes back empty with a new epoch.
            server.wipe(STORE);
            push_from_elsewhere(server, &[101], "b");
        }
    }
}

/// Runs `op` on `engine` (or opens `name`, for the operations that open).
async fn perform(
    op: Op,
    name: &str,
    server: &Rc<MemoryServer>,
    engine: Option<&Engine<IndexedDbStorage>>,
    arm: &dyn Fn(&IndexedDbStorage),
) -> Result<Option<Engine<IndexedDbStorage>>, String> {
    let err = |e: annals::Error| e.to_string();
    if op.opens() {
        let storage = IndexedDbStorage::new(name);
        arm(&storage);
        let opened = Engine::open(storage, options(op.synced()))
            .await
            .map_err(err)?;
        return Ok(Some(opened));
    }
    let engine = engine.expect("an open engine");
    arm(engine.storage());
    match op {
        Op::AppendOne => engine
            .append(vec![ev(10, "a")])
            .await
            .map(drop)
            .map_err(err),
        Op::AppendMany | Op::AppendToOutbox => engine
            .append(vec![ev(10, "a"), ev(11, "b"), ev(12, "a"), ev(13, "c")])
            .await
            .map(drop)
            .map_err(err),
        Op::Compact => engine.compact().await.map(drop).map_err(err),
        Op::WriteSnapshot => engine
            .put_snapshot(&SnapshotRecord {
                name: STORE.into(),
                version: 2,
                position: engine.confirmed_head(),
                state: "{\"count\":3}".into(),
            })
            .await
            .map_err(err),
        Op::DeleteSnapshot => engine.delete_snapshot(STORE).await.map_err(err),
        Op::RetentionCut => engine.drop_through(3).await.map_err(err),
        Op::Pull | Op::PushAndPull | Op::PushRejected | Op::EpochReset => sync_client(server)
            .sync(engine)
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Op::OpenNew | Op::OpenNewSynced | Op::OpenLocalAsSynced | Op::OpenFormat1 => {
            unreachable!("handled above")
        }
    }?;
    Ok(None)
}

/// The server's log: (position, id) of every event.
fn server_log(server: &MemoryServer) -> Vec<(u64, String)> {
    server
        .pull(STORE, 0, usize::MAX)
        .events
        .iter()
        .map(|e| (e.position, e.id.to_string()))
        .collect()
}

/// A handle's confirmed log holds every position up to its head (the cursor is not ahead
/// of its events) and, in a synced store whose log is of the server's current epoch, is the
/// server's log up to there (a log of an earlier epoch is reset by the next pull).
fn assert_cursor_not_ahead(
    label: &str,
    engine: &Engine<IndexedDbStorage>,
    seen: &View,
    server: Option<&MemoryServer>,
) {
    let confirmed: Vec<(u64, String)> = seen
        .events
        .iter()
        .filter(|e| !e.4)
        .map(|e| (e.0, e.1.clone()))
        .collect();
    let positions: Vec<u64> = confirmed.iter().map(|e| e.0).collect();
    assert_eq!(
        positions,
        (seen.dropped + 1..=seen.confirmed).collect::<Vec<_>>(),
        "{label}: the confirmed events are those up to the head (from the retention cut)"
    );
    let current = server.filter(|s| engine.epoch() == Some(s.pull(STORE, 0, 0).epoch));
    if let Some(server) = current {
        let log = server_log(server);
        let log = &log[(seen.dropped as usize).min(log.len())..];
        assert!(
            confirmed.len() <= log.len() && confirmed[..] == log[..confirmed.len()],
            "{label}: the confirmed log is a prefix of the server's\n  local {confirmed:?}\n  server {log:?}"
        );
    }
}

fn assert_no_duplicates(label: &str, server: &MemoryServer) {
    let log = server_log(server);
    let mut ids: Vec<&String> = log.iter().map(|e| &e.1).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        log.len(),
        "{label}: no event twice on the server"
    );
}

/// One run of `op` from its starting store: with no failure (returns the steps reached and
/// the final view), or with a failure at the `nth` time `step` is reached (checks the
/// invariants above).
/// What one run of an operation left.
struct Run {
    /// The steps reached (run without failure).
    steps: Vec<FailStep>,
    /// What a reload saw right after the failure (operations with an engine before them).
    stored_after_failure: Option<View>,
    /// The store and the server's log at the end.
    end: View,
    end_server: Vec<(u64, String)>,
}

async fn run_case(op: Op, fault: Option<(FailStep, usize)>) -> Run {
    let name = unique_name(&format!("{op:?}"));
    let server = Rc::new(MemoryServer::new());
    prepare(op, &name, &server).await;
    let engine = if op.opens() {
        None
    } else {
        Some(
            open(&name, op.synced())
                .await
                .expect("the starting store opens"),
        )
    };
    let before = match &engine {
        Some(e) => Some(view(e).await),
        None => None,
    };
    let label = format!("{op:?} failing at {fault:?}");
    let steps = std::cell::RefCell::new(Vec::new());
    let mut stored_after_failure = None;
    let arm = |storage: &IndexedDbStorage| match fault {
        Some((step, nth)) => storage.inject_failure_at(step, nth),
        None => storage.record_steps(),
    };
    let result = perform(op, &name, &server, engine.as_ref(), &arm).await;

    let engine = match fault {
        None => {
            let opened = result.unwrap_or_else(|e| panic!("{op:?} succeeds: {e}"));
            let engine = engine.or(opened).expect("an engine");
            *steps.borrow_mut() = engine.storage().recorded_steps();
            engine
        }
        Some(_) => {
            assert!(
                result.is_err(),
                "{label}: the operation reports the failure"
            );
            let reload = open(&name, op.synced())
                .await
                .unwrap_or_else(|e| panic!("{label}: the store opens again: {e}"));
            let stored = view(&reload).await;
            assert_cursor_not_ahead(&label, &reload, &stored, op.synced().then_some(&*server));
            if !op.opens() {
                stored_after_failure = Some(stored.clone());
            }
            if let (Some(engine), Some(before)) = (&engine, &before) {
                assert!(
                    !engine.storage().failure_armed(),
                    "{label}: the step was reached"
                );
                let memory = view(engine).await;
                assert_eq!(memory, stored, "{label}: memory matches the store");
                assert_eq!(
                    (engine.epoch(), engine.log_generation()),
                    (reload.epoch(), reload.log_generation()),
                    "{label}: the epoch and log generation in memory match the store"
                );
                if op.one_transaction() {
                    assert_eq!(&stored, before, "{label}: nothing of the batch is stored");
                }
            }
            if op.opens() {
                // The reload completed the open: it is the retry.
                reload
            } else {
                reload.close().await;
                let engine = engine.expect("an engine");
                perform(op, &name, &server, Some(&engine), &|_| {})
                    .await
                    .unwrap_or_else(|e| panic!("{label}: the operation succeeds again: {e}"));
                engine
            }
        }
    };
    if op.synced() {
        sync_client(&server)
            .sync(&engine)
            .await
            .unwrap_or_else(|e| panic!("{label}: the store syncs: {e}"));
        assert_no_duplicates(&label, &server);
    } else {
        // The store keeps working: one more append lands after everything else.
        let head = engine.head();
        engine.append(vec![ev(99, "z")]).await.expect("appends");
        assert_eq!(
            engine.head(),
            head + 1,
            "{label}: the store takes appends again"
        );
    }
    let end = view(&engine).await;
    if op.synced() {
        assert_eq!(
            engine.epoch(),
            Some(server.pull(STORE, 0, 0).epoch),
            "{label}: synced to the server's epoch"
        );
    }
    assert_cursor_not_ahead(&label, &engine, &end, op.synced().then_some(&*server));
    engine.close().await;
    Run {
        steps: steps.into_inner(),
        stored_after_failure,
        end,
        end_server: server_log(&server),
    }
}

#[wasm_bindgen_test]
async fn every_write_fails_cleanly_at_every_step_of_its_transactions() {
    let (mut failures, mut transactions) = (0, 0);
    for op in OPERATIONS {
        let clean = run_case(op, None).await;
        let steps = clean.steps;
        assert!(!steps.is_empty(), "{op:?} reaches at least one step");
        // What a failure inside the n-th write transaction leaves stored, whatever its step:
        // exactly what the transactions before it committed.
        let mut stored_by_transaction: Vec<Option<View>> = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let nth = steps[..i].iter().filter(|s| *s == step).count();
            let transaction = steps[..i]
                .iter()
                .filter(|s| **s == FailStep::AtCommit)
                .count();
            let label = format!("{op:?} failing at {step:?} #{nth} (transaction {transaction})");
            let run = run_case(op, Some((*step, nth))).await;
            if let Some(stored) = run.stored_after_failure {
                stored_by_transaction.resize(transaction + 1, None);
                match &stored_by_transaction[transaction] {
                    Some(first) => assert_eq!(
                        &stored, first,
                        "{label}: the store is as every other failure in this transaction left it"
                    ),
                    None => stored_by_transaction[transaction] = Some(stored),
                }
            }
            // Compaction may run later than in the clean run; the events are the same.
            let comparable = |v: &View| View {
                segments: 0,
                ..v.clone()
            };
            assert_eq!(
                comparable(&run.end),
                comparable(&clean.end),
                "{label}: ends as the run without failure"
            );
            assert_eq!(
                run.end_server, clean.end_server,
                "{label}: the server's log"
            );
            failures += 1;
        }
        let ops_transactions = steps.iter().filter(|s| **s == FailStep::AtCommit).count();
        transactions += ops_transactions;
        console_log!(
            "{op:?}: {} steps in {ops_transactions} write transactions, each failed once: {steps:?}",
            steps.len()
        );
    }
    console_log!(
        "{failures} injected failures in {transactions} write transactions across {} operations, \
         all consistent",
        OPERATIONS.len()
    );
    assert!(failures >= OPERATIONS.len());
}
