//! Rust clients syncing through a real annals-server on 127.0.0.1, on SQLite and on
//! PostgreSQL: offline replicas converge to one log and one projection state; lost
//! answers are retried without duplicates; conflicts are rejected and reported; a server
//! restart in the middle of a sync loses nothing; two server instances serve one store.
#![cfg(all(feature = "server", feature = "http-client"))]

#[macro_use]
mod server_common;

use std::collections::BTreeMap;
use std::time::Duration;

use annals::codec::EventRef;
use annals::projection::{Projection, ProjectionRunner};
use annals::sync::client::{SyncClient, SyncOptions, SyncReport};
use annals::sync::http::HttpTransport;
use annals::testing::faults::{Fault, Faulty};
use annals::{
    Engine, EngineOptions, Event, EventId, ExpectedVersion, MemoryStorage, NewEvent, ReadQuery,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use server_common::{Backend, TestServer};

/// Per-stream totals: the read model every replica must agree on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Totals(BTreeMap<String, i64>);

struct TotalsProjection;

impl Projection for TotalsProjection {
    type State = Totals;
    fn name(&self) -> &str {
        "totals"
    }
    fn initial(&self) -> Totals {
        Totals::default()
    }
    fn apply(&self, state: &mut Totals, event: &EventRef<'_>) {
        *state.0.entry(event.stream.to_owned()).or_default() += event.data_as::<i64>().unwrap_or(0);
    }
}

struct Client {
    engine: Engine<MemoryStorage>,
    sync: SyncClient<Faulty<HttpTransport>>,
}

impl Client {
    async fn new(url: &str) -> Client {
        let options = EngineOptions {
            synced: true,
            ..EngineOptions::default()
        };
        let engine = Engine::open(MemoryStorage::new(), options)
            .await
            .expect("opens");
        let transport = Faulty::new(HttpTransport::new(url, "store-a", "tok-a"));
        let options = SyncOptions {
            push_batch: 50,
            pull_limit: 40,
            long_poll_seconds: 1,
            ..SyncOptions::default()
        };
        Client {
            engine,
            sync: SyncClient::new(transport, options),
        }
    }

    async fn add(&self, stream: &str, amount: i64) {
        let event = NewEvent::new(stream, "Added", &amount).expect("event");
        self.engine.append(vec![event]).await.expect("append");
    }

    async fn sync(&self) -> SyncReport {
        self.sync.sync(&self.engine).await.expect("sync")
    }

    fn log(&self) -> Vec<Event> {
        self.engine.read(&ReadQuery::default()).expect("read")
    }

    async fn totals(&self) -> Totals {
        let runner = ProjectionRunner::open(&self.engine, TotalsProjection)
            .await
            .expect("projection");
        runner.optimistic_state(&self.engine).expect("state")
    }
}

async fn three_offline_clients_converge(backend: Backend) {
    let server = backend.start().await;
    let clients = [
        Client::new(&server.url).await,
        Client::new(&server.url).await,
        Client::new(&server.url).await,
    ];
    for c in &clients {
        c.sync.transport().set_online(false);
    }
    for round in 0..30i64 {
        for (i, c) in clients.iter().enumerate() {
            c.add(&format!("account-{}", round % 5), round * 10 + i as i64)
                .await;
        }
    }
    for c in &clients {
        assert!(c.sync.sync(&c.engine).await.is_err(), "offline");
        c.sync.transport().set_online(true);
    }
    for c in &clients {
        c.sync().await;
    }
    for c in &clients {
        c.sync().await;
    }
    let log = clients[0].log();
    assert_eq!(log.len(), 90);
    assert_eq!(
        log.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=90).collect::<Vec<_>>()
    );
    assert!(log.iter().all(|e| !e.pending));
    let totals = clients[0].totals().await;
    for c in &clients[1..] {
        assert_eq!(c.log(), log, "identical logs");
        assert_eq!(c.totals().await, totals, "identical projections");
    }
    assert_eq!(
        totals.0.values().sum::<i64>(),
        (0..30).map(|r| 3 * r * 10 + 3).sum::<i64>()
    );
    server.stop().await;
}

async fn a_lost_push_answer_is_retried_without_duplicates(backend: Backend) {
    let server = backend.start().await;
    let client = Client::new(&server.url).await;
    for i in 0..5 {
        client.add("s", i).await;
    }
    // A sync is pull, push, pull: lose the push's answer after the server stored it.
    client
        .sync
        .transport()
        .inject_after_one(Fault::LoseResponse);
    assert!(client.sync.sync(&client.engine).await.is_err());
    assert_eq!(
        client.engine.pending_count(),
        5,
        "the client could not know"
    );
    // The retry starts with a pull, which brings the stored events back: confirmed, and
    // nothing is pushed twice.
    let report = client.sync().await;
    assert_eq!((report.pulled, report.pushed), (5, 0));
    assert_eq!(client.engine.pending_count(), 0);
    assert_eq!(server.api("tok-a").head("store-a").await, 5, "stored once");
    server.stop().await;
}

async fn conflicting_expectations_are_rejected_and_reported(backend: Backend) {
    let server = backend.start().await;
    let (a, b) = (
        Client::new(&server.url).await,
        Client::new(&server.url).await,
    );
    for (client, title) in [(&a, "milk"), (&b, "eggs")] {
        let event =
            NewEvent::new("todo-1", "TodoAdded", &json!({ "title": title })).expect("event");
        client
            .engine
            .append(vec![event.expecting(ExpectedVersion::NoStream)])
            .await
            .expect("local append");
    }
    a.sync().await;
    let report = b.sync().await;
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].actual_version, Some(1));
    assert_eq!(report.rejected[0].event.data.get(), r#"{"title":"eggs"}"#);
    assert_eq!(
        b.engine.rejected().await.expect("list").len(),
        1,
        "kept readable"
    );
    assert_eq!(b.log(), a.log());
    server.stop().await;
}

async fn a_server_restart_during_sync_loses_nothing(backend: Backend) {
    let server = backend.start().await;
    let addr = server.server.as_ref().expect("running").local_addr();
    let api = server.api("tok-a");
    let client = Client::new(&server.url).await;
    for i in 0..2_000 {
        client.add(&format!("s{}", i % 3), i).await;
    }
    // The server stops as soon as the first pushed batch is stored, while the client is
    // still pushing (40 batches of 50). Should the client have finished first, the
    // restart below still has to keep everything.
    let syncing = client.sync.sync(&client.engine);
    let stopping = async {
        while api.head("store-a").await == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        server.stop().await;
    };
    let (first_sync, ()) = futures::future::join(syncing, stopping).await;
    if first_sync.is_err() {
        assert!(
            client.engine.pending_count() > 0,
            "cut short with events still to push"
        );
    }

    let restarted: TestServer = backend.start_with(|config| config.listen = addr).await;
    client.sync().await;
    assert_eq!(client.engine.pending_count(), 0);
    let stored = restarted.api("tok-a").pull_all("store-a").await;
    assert_eq!(stored.len(), 2_000, "every event once");
    let mut ids: Vec<&str> = stored.iter().filter_map(|e| e["id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 2_000, "no event stored twice");
    assert_eq!(client.log().len(), 2_000);
    restarted.stop().await;
}

/// Balances that must never go below zero: the server's authority over `account-*`.
struct Account;

impl annals::command::Decider for Account {
    type State = i64;
    type Command = i64;
    fn initial(&self) -> i64 {
        0
    }
    fn evolve(&self, balance: &mut i64, event: &EventRef<'_>) {
        *balance += event.data_as::<i64>().unwrap_or(0);
    }
    fn decide(
        &self,
        amount: &i64,
        balance: &i64,
    ) -> Result<Vec<annals::command::Decision>, String> {
        self.check_amount(*balance, *amount)?;
        Ok(vec![
            annals::command::Decision::new("Moved", amount).map_err(|e| e.to_string())?
        ])
    }
    fn check(&self, balance: &i64, event: &EventRef<'_>) -> Result<(), String> {
        self.check_amount(*balance, event.data_as::<i64>().map_err(|e| e.to_string())?)
    }
}

impl Account {
    fn check_amount(&self, balance: i64, amount: i64) -> Result<(), String> {
        if balance + amount < 0 {
            return Err(format!(
                "insufficient funds: balance {balance}, amount {amount}"
            ));
        }
        Ok(())
    }
}

async fn a_server_side_decider_rejects_and_the_client_reports_it(backend: Backend) {
    let authority = annals::push::authority::DeciderAuthority::new(Account, |s: &str| {
        s.starts_with("account-")
    });
    let authorities =
        annals::push::authority::Authorities::new(vec![std::sync::Arc::new(authority)]);
    let server = backend
        .start_with(|config| config.authorities = authorities)
        .await;
    let (a, b) = (
        Client::new(&server.url).await,
        Client::new(&server.url).await,
    );
    a.add("account-1", 10).await;
    a.sync().await;
    b.sync().await;
    // Both withdraw 7 from the 10 they saw, offline; no expected versions.
    let accounts = (
        annals::command::Aggregate::new(Account),
        annals::command::Aggregate::new(Account),
    );
    accounts
        .0
        .execute(&a.engine, "account-1", &-7, Default::default())
        .await
        .expect("a decides");
    accounts
        .1
        .execute(&b.engine, "account-1", &-7, Default::default())
        .await
        .expect("b decides");
    b.add("account-1", -7).await; // bypassing decide altogether
    a.sync().await;
    let report = b.sync().await;
    assert_eq!(report.rejected.len(), 2);
    let by_authority = report
        .rejected
        .iter()
        .filter(|r| r.reason.starts_with("insufficient funds"))
        .count();
    assert_eq!(by_authority, 1, "{:?}", report.rejected);
    assert_eq!(b.log(), a.log());
    assert_eq!(b.totals().await.0["account-1"], 3);
    server.stop().await;
}

/// A server whose limits are below the client's: a body of 64 KiB, events of 8 KiB, names
/// of 64 bytes and 20 events per push.
async fn strict_server(backend: &Backend) -> TestServer {
    backend
        .start_with(|config| {
            config.limits.max_body_bytes = 64 * 1024;
            config.limits.max_buffered_bytes = config.limits.max_buffered_bytes.max(64 * 1024);
            config.limits.max_event_bytes = 8 * 1024;
            config.limits.max_name_bytes = 64;
            config.limits.max_events_per_push = 20;
        })
        .await
}

async fn an_outbox_larger_than_a_push_body_syncs_in_parts(backend: Backend) {
    let server = strict_server(&backend).await;
    let client = Client::new(&server.url).await;
    // 50 events of 4 KiB: 200 KiB, over three times the body the server takes.
    let note = "n".repeat(4 * 1024);
    let events: Vec<NewEvent> = (0..50)
        .map(|i| {
            NewEvent::new(format!("doc-{i}"), "Noted", &json!({ "note": note })).expect("event")
        })
        .collect();
    client.engine.append(events).await.expect("append");
    let report = client.sync().await;
    assert_eq!(report.pushed, 50, "{report:?}");
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(client.engine.pending_count(), 0);
    assert_eq!(client.log().len(), 50);
    server.stop().await;
}

async fn an_event_the_server_will_not_store_is_rejected_and_the_rest_syncs(backend: Backend) {
    let server = strict_server(&backend).await;
    let client = Client::new(&server.url).await;
    // Within the client's limits, beyond the server's: one event of 16 KiB, one stream
    // name of 100 bytes, among 30 ordinary events.
    for i in 0..10 {
        client.add("account-1", i).await;
    }
    let big = NewEvent::new(
        "account-2",
        "Added",
        &json!({ "blob": "b".repeat(16 * 1024) }),
    )
    .expect("event");
    client.engine.append(vec![big]).await.expect("append");
    let big_id = client.log().last().expect("appended").id;
    for i in 0..10 {
        client.add("account-3", i).await;
    }
    let long_name = format!("account-{}", "x".repeat(92));
    let named = NewEvent::new(long_name, "Added", &1).expect("event");
    client.engine.append(vec![named]).await.expect("append");
    let named_id = client.log().last().expect("appended").id;
    for i in 0..10 {
        client.add("account-4", i).await;
    }
    let report = client.sync().await;
    assert_eq!(report.pushed, 30, "{report:?}");
    let mut rejected: Vec<(EventId, &str)> = report
        .rejected
        .iter()
        .map(|r| (r.event.id, r.reason.split(':').next().unwrap_or_default()))
        .collect();
    rejected.sort();
    let mut expected = vec![(big_id, "TOO_LARGE"), (named_id, "INVALID_EVENT")];
    expected.sort();
    assert_eq!(rejected, expected, "{:?}", report.rejected);
    // Nothing is lost: the refused events are kept with the server's reasons.
    let kept = client.engine.rejected().await.expect("rejected list");
    assert_eq!(kept.len(), 2);
    assert!(
        kept.iter()
            .any(|r| r.event.id == big_id && r.reason.contains("8192")),
        "{kept:?}"
    );
    assert_eq!(client.engine.pending_count(), 0);
    assert_eq!(client.totals().await.0.len(), 3);
    // Pushes grow back to their size once the server takes them again.
    for i in 0..45 {
        client.add("account-5", i).await;
    }
    let report = client.sync().await;
    assert_eq!(
        (report.pushed, report.rejected.len()),
        (45, 0),
        "{report:?}"
    );
    server.stop().await;
}

on_every_backend!(
    an_outbox_larger_than_a_push_body_syncs_in_parts,
    an_event_the_server_will_not_store_is_rejected_and_the_rest_syncs,
    a_server_side_decider_rejects_and_the_client_reports_it,
    three_offline_clients_converge,
    a_lost_push_answer_is_retried_without_duplicates,
    conflicting_expectations_are_rejected_and_reported,
    a_server_restart_during_sync_loses_nothing,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_two_instances_on_one_postgres_converge() {
    let backend = Backend::postgres();
    let (one, two) = (backend.start().await, backend.start().await);
    let (a, b) = (Client::new(&one.url).await, Client::new(&two.url).await);
    for i in 0..40 {
        a.add("shared", i).await;
        b.add("shared", 100 + i).await;
    }
    // Interleave syncs through both instances.
    for _ in 0..2 {
        a.sync().await;
        b.sync().await;
    }
    assert_eq!(a.log(), b.log());
    assert_eq!(a.log().len(), 80);
    let versions: Vec<u64> = a.log().iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=80).collect::<Vec<_>>());
    // A live client of instance one hears of a push to instance two through LISTEN/NOTIFY.
    let c = Client::new(&one.url).await;
    c.sync().await;
    b.add("shared", 999).await;
    let live = async {
        let timer = annals::sync::http::TokioTimer;
        c.sync.run(&c.engine, &timer, || 0.5).await;
    };
    let pushed = async {
        b.sync().await;
        for _ in 0..100 {
            if c.engine.confirmed_head() == 81 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c.sync.stop();
    };
    tokio::time::timeout(Duration::from_secs(20), futures::future::join(live, pushed))
        .await
        .expect("the live client stops");
    assert_eq!(c.engine.confirmed_head(), 81);
    one.stop().await;
    two.stop().await;
}
