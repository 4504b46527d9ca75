//! The PostgreSQL backend against a real database (`ANNALS_TEST_PG_URL`, each test in a
//! schema of its own): duplicates, versions across instances, remembered versions that another
//! timeline of the database contradicts, the folding of the stream versions, and an older
//! database brought up to date.

use tokio_postgres::{Client, NoTls};

use std::collections::HashMap;

use super::settings::quote_ident;
use super::*;
use crate::event::{EventId, ExpectedVersion};
use serde_json::value::RawValue;

/// A fresh schema on the test database (`ANNALS_TEST_PG_URL`), dropped on drop.
struct Scratch {
    base: String,
    schema: String,
}

impl Scratch {
    fn new() -> Self {
        let base = std::env::var("ANNALS_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        Scratch {
            base,
            schema: format!("annals_unit_{}", &new_epoch().unwrap()[..12]),
        }
    }

    fn url(&self, options: &str) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}schema={}{options}", self.base, self.schema)
    }

    async fn open(&self, options: &str) -> PgStore {
        PgStore::open(&self.url(options), Authorities::default())
            .await
            .expect("open")
    }

    /// A plain connection with the search path on the schema.
    async fn sql(&self) -> Client {
        let settings = PgSettings::from_url(&self.url("")).unwrap();
        let client = settings.connect().await.expect("connect");
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                quote_ident(&self.schema)
            ))
            .await
            .unwrap();
        client
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let (base, schema) = (self.base.clone(), self.schema.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok((client, conn)) = tokio_postgres::connect(&base, NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .await;
                }
            })
        })
        .join();
    }
}

fn ev(n: u8, stream: &str, expected: ExpectedVersion) -> PushEvent {
    PushEvent {
        id: EventId([n; 16]),
        stream: stream.into(),
        event_type: "T".into(),
        schema_version: 1,
        data: RawValue::from_string(format!("{n}")).unwrap(),
        meta: None,
        time: u64::from(n),
        expected_version: expected,
        erased: false,
    }
}

fn any(n: u8, stream: &str) -> PushEvent {
    ev(n, stream, ExpectedVersion::Any)
}

fn ok(n: u8, position: u64, version: u64) -> PushResult {
    PushResult::Ok {
        id: EventId([n; 16]),
        position,
        version,
    }
}

fn duplicate(n: u8, position: u64, version: u64) -> PushResult {
    PushResult::Duplicate {
        id: EventId([n; 16]),
        position,
        version,
    }
}

async fn push(store: &PgStore, events: Vec<PushEvent>) -> PushResponse {
    store.push("s", "c", events).await.expect("push")
}

/// (stream, version) of every stored event, in position order.
async fn stored(store: &PgStore) -> Vec<(String, u64)> {
    let pulled = store.pull("s", 0, 1000).await.expect("pull");
    for (i, e) in pulled.events.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1, "gapless");
    }
    pulled
        .events
        .into_iter()
        .map(|e| (e.stream, e.version))
        .collect()
}

#[tokio::test]
async fn ids_already_stored_answer_duplicate_and_the_connection_stays_usable() {
    let scratch = Scratch::new();
    // One connection: the attempt that meets a stored id must leave it clean.
    let store = scratch.open("&pool_size=1").await;
    push(&store, vec![any(1, "a"), any(2, "a")]).await;
    let retry = push(&store, vec![any(1, "a"), any(3, "b"), any(2, "a")]).await;
    assert_eq!(
        retry.results,
        vec![duplicate(1, 1, 1), ok(3, 3, 1), duplicate(2, 2, 2)]
    );
    let again = push(&store, vec![any(3, "b"), any(3, "b")]).await;
    assert_eq!(again.results, vec![duplicate(3, 3, 1), duplicate(3, 3, 1)]);
    assert_eq!(again.head, 3);
    let next = push(&store, vec![any(4, "a"), any(5, "b")]).await;
    assert_eq!(next.results, vec![ok(4, 4, 3), ok(5, 5, 2)]);
    assert_eq!(stored(&store).await.len(), 5);
}

#[tokio::test]
async fn a_stored_id_answers_duplicate_before_its_expected_version_is_checked() {
    let scratch = Scratch::new();
    let store = scratch.open("").await;
    push(&store, vec![ev(1, "a", ExpectedVersion::NoStream)]).await;
    // Remembered by this instance, then retried: still a duplicate, not a conflict.
    let retry = push(
        &store,
        vec![
            ev(1, "a", ExpectedVersion::NoStream),
            ev(2, "a", ExpectedVersion::Exact(1)),
        ],
    )
    .await;
    assert_eq!(retry.results, vec![duplicate(1, 1, 1), ok(2, 2, 2)]);
}

#[tokio::test]
async fn instances_pushing_to_one_store_keep_versions_exact() {
    let scratch = Scratch::new();
    let (a, b) = (scratch.open("").await, scratch.open("").await);
    for round in 0..4u8 {
        let first = push(&a, vec![any(round * 4 + 1, "x"), any(round * 4 + 2, "y")]).await;
        let second = push(&b, vec![any(round * 4 + 3, "x")]).await;
        let third = push(&a, vec![any(round * 4 + 4, "x")]).await;
        let base = u64::from(round) * 3;
        assert_eq!(
            first.results[0],
            ok(round * 4 + 1, base + base / 3 + 1, base + 1)
        );
        assert_eq!(
            second.results,
            vec![ok(round * 4 + 3, base + base / 3 + 3, base + 2)]
        );
        assert_eq!(
            third.results,
            vec![ok(round * 4 + 4, base + base / 3 + 4, base + 3)]
        );
    }
    // An exact expectation from the other instance's view holds.
    let conflict = push(&b, vec![ev(100, "x", ExpectedVersion::Exact(11))]).await;
    assert!(matches!(
        conflict.results[0],
        PushResult::Rejected {
            actual_version: Some(12),
            ..
        }
    ));
    let fine = push(&a, vec![ev(101, "x", ExpectedVersion::Exact(12))]).await;
    assert_eq!(fine.results, vec![ok(101, 17, 13)]);
}

#[tokio::test]
async fn what_an_instance_remembers_is_not_used_once_another_timeline_pushed() {
    let scratch = Scratch::new();
    let store = scratch.open("").await;
    let sql = scratch.sql().await;
    // The database changes under the instance without the head moving, as after a restore
    // that another timeline refilled up to the same head: whatever it wrote, it set
    // `last_push` (here to a number of our own).
    let timeline = |statement: &'static str| {
        let sql = &sql;
        async move {
            sql.batch_execute(statement).await.unwrap();
            sql.batch_execute("UPDATE stores SET last_push = last_push + 1")
                .await
                .unwrap();
        }
    };
    push(&store, vec![any(1, "a"), any(2, "a"), any(3, "b")]).await;
    // Remembered from this rejection: c has no events.
    let rejected = push(&store, vec![ev(4, "c", ExpectedVersion::Exists)]).await;
    assert!(matches!(
        rejected.results[0],
        PushResult::Rejected {
            actual_version: Some(0),
            ..
        }
    ));
    timeline("INSERT INTO stream_versions SELECT id, 'c', 4 FROM stores").await;
    let c = push(&store, vec![any(5, "c")]).await;
    assert_eq!(c.results, vec![ok(5, 4, 5)]);

    push(&store, vec![any(6, "a"), any(7, "b")]).await; // a = 3, b = 2
    timeline("INSERT INTO stream_versions SELECT id, 'a', 7 FROM stores").await;
    let a = push(&store, vec![any(8, "a")]).await;
    assert_eq!(a.results, vec![ok(8, 7, 8)]);

    // A rejection is never answered from memory: b is remembered at 2.
    push(&store, vec![any(9, "b")]).await; // b = 3
    timeline("INSERT INTO stream_versions SELECT id, 'b', 5 FROM stores").await;
    let b = push(&store, vec![ev(10, "b", ExpectedVersion::Exact(3))]).await;
    assert!(matches!(
        b.results[0],
        PushResult::Rejected {
            actual_version: Some(5),
            ..
        }
    ));
    let b = push(&store, vec![ev(11, "b", ExpectedVersion::Exact(5))]).await;
    assert_eq!(b.results, vec![ok(11, 9, 6)]);
}

/// `n` events spread over `streams` streams (`s0`, `s1`, ...), ids from `first`.
fn batch(first: u32, n: u32, streams: u32) -> Vec<PushEvent> {
    (first..first + n)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            PushEvent {
                id: EventId(id),
                ..any(0, &format!("s{}", i % streams))
            }
        })
        .collect()
}

/// `stream_versions` and `versions_at` of store `s`, and every stream's version as its
/// events say.
async fn folded(sql: &Client) -> (Vec<(String, i64)>, i64, Vec<(String, i64)>) {
    let rows = |q: &'static str| async move {
        sql.query(q, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect::<Vec<(String, i64)>>()
    };
    let stored = rows("SELECT stream, version FROM stream_versions ORDER BY stream").await;
    let actual =
        rows("SELECT stream, max(version) FROM events GROUP BY stream ORDER BY stream").await;
    let at = sql
        .query_one("SELECT versions_at FROM stores", &[])
        .await
        .unwrap()
        .get(0);
    (stored, at, actual)
}

#[tokio::test]
async fn stream_versions_are_folded_every_so_many_events_by_whichever_instance_pushes() {
    let scratch = Scratch::new();
    let (a, b) = (scratch.open("").await, scratch.open("").await);
    let sql = scratch.sql().await;
    let per_push = 1_000u32;
    let pushes = u32::try_from(super::push::FLUSH_EVERY).unwrap() / per_push;
    // `a` pushes alone up to one push short of the fold: nothing is written to
    // `stream_versions`, and every version is right.
    for p in 0..pushes - 1 {
        let response = push(&a, batch(p * per_push, per_push, 97)).await;
        assert!(response
            .results
            .iter()
            .all(|r| matches!(r, PushResult::Ok { .. })));
    }
    let (stored, at, _) = folded(&sql).await;
    assert_eq!((stored.len(), at), (0, 0));
    // `b`, which saw none of it, makes the push that is due to fold: from the events.
    let last = (pushes - 1) * per_push;
    push(&b, batch(last, per_push, 97)).await;
    let (stored, at, actual) = folded(&sql).await;
    assert_eq!(stored, actual);
    assert_eq!(at, i64::from(pushes * per_push));
    // Versions read from the fold and the events after it, by either instance.
    let x = push(&a, vec![ev(1, "s3", ExpectedVersion::Exact(104))]).await;
    assert!(matches!(x.results[0], PushResult::Ok { version: 105, .. }));
    let y = push(&b, vec![ev(2, "s3", ExpectedVersion::Exact(104))]).await;
    assert!(matches!(
        y.results[0],
        PushResult::Rejected {
            actual_version: Some(105),
            ..
        }
    ));
    // `a` pushes alone again up to the next fold, which it makes from memory.
    let base = pushes * per_push;
    for p in 0..pushes {
        push(&a, batch(base + p * per_push, per_push, 101)).await;
    }
    let (stored, at, actual) = folded(&sql).await;
    assert_eq!(stored, actual);
    assert_eq!(at, i64::from(2 * pushes * per_push) + 1);
    // Every stream numbered 1, 2, 3, ... without a gap or a repeat.
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut after = 0;
    loop {
        let page = a.pull("s", after, 10_000).await.expect("pull");
        for e in &page.events {
            let v = seen.entry(e.stream.clone()).or_default();
            *v += 1;
            assert_eq!(e.version, *v, "{} at {}", e.stream, e.position);
        }
        after = page.events.last().map_or(after, |e| e.position);
        if !page.more {
            break;
        }
    }
}

/// The tables as the release before `stream_versions` created them (the stores without
/// their last four columns, the versions in `streams`).
const SCHEMA_BEFORE_STREAM_VERSIONS: &str = "
CREATE TABLE stores (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, epoch TEXT NOT NULL,
    head BIGINT NOT NULL DEFAULT 0, created_at TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE TABLE streams (store_id BIGINT NOT NULL, stream TEXT NOT NULL, version BIGINT NOT NULL,
    PRIMARY KEY (store_id, stream));
CREATE TABLE events (store_id BIGINT NOT NULL, position BIGINT NOT NULL, id BYTEA NOT NULL,
    stream TEXT NOT NULL, version BIGINT NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL,
    meta TEXT, time BIGINT NOT NULL, origin TEXT, schema_version BIGINT NOT NULL DEFAULT 1,
    erased BOOLEAN NOT NULL DEFAULT false, PRIMARY KEY (store_id, position),
    UNIQUE (store_id, id));
CREATE TABLE stream_ends (store_id BIGINT NOT NULL, stream TEXT NOT NULL, kind TEXT NOT NULL,
    PRIMARY KEY (store_id, stream));
CREATE TABLE rejections (store_id BIGINT NOT NULL, id BYTEA NOT NULL,
    fingerprint BIGINT NOT NULL, reason TEXT NOT NULL, actual_version BIGINT,
    PRIMARY KEY (store_id, id, fingerprint));
";

#[tokio::test]
async fn a_database_from_before_stream_versions_keeps_its_versions_and_fences_older_builds() {
    let scratch = Scratch::new();
    let sql = scratch.sql().await;
    sql.batch_execute(SCHEMA_BEFORE_STREAM_VERSIONS)
        .await
        .unwrap();
    // Store `s`: stream a at 2 (deleted), b at 1; a refusal remembered. Store `t`: nothing
    // but an event.
    sql.batch_execute(
        "INSERT INTO stores (name, epoch, head) VALUES ('s', 'e0', 3), ('t', 'e1', 1);
         INSERT INTO streams SELECT id, 'a', 2 FROM stores WHERE name = 's';
         INSERT INTO streams SELECT id, 'b', 1 FROM stores WHERE name = 's';
         INSERT INTO streams SELECT id, 'a', 1 FROM stores WHERE name = 't';
         INSERT INTO events SELECT s.id, p, decode(repeat(to_hex(p), 32), 'hex'), x.stream,
             x.version, x.type, '1', NULL, 0, 'c'
         FROM stores s, (VALUES (1, 'a', 1, 'T'), (2, 'b', 1, 'T'), (3, 'a', 2, '$StreamDeleted'))
             AS x(p, stream, version, type) WHERE s.name = 's';
         INSERT INTO events SELECT id, 1, decode(repeat('ab', 16), 'hex'), 'a', 1, 'T', '1', NULL, 0, 'c'
         FROM stores WHERE name = 't';
         INSERT INTO stream_ends SELECT id, 'a', 'deleted' FROM stores WHERE name = 's';
         INSERT INTO rejections SELECT id, decode(repeat('77', 16), 'hex'), 1, 'no', 0
         FROM stores WHERE name = 's';",
    )
    .await
    .unwrap();
    let store = scratch.open("").await;
    let flags: Vec<(String, i64, bool, bool)> = sql
        .query(
            "SELECT name, versions_at, refusals, ends FROM stores ORDER BY name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        flags,
        [("s".into(), 3, true, true), ("t".into(), 1, false, false)]
    );
    // The versions carry on; the deleted stream restarts with no_stream, as before.
    let next = push(
        &store,
        vec![any(9, "b"), ev(10, "a", ExpectedVersion::NoStream)],
    )
    .await;
    assert_eq!(next.results, vec![ok(9, 4, 2), ok(10, 5, 3)]);
    assert_eq!(next.epoch, "e0");
    assert_eq!(stored(&store).await.len(), 5);
    // An older build finds `streams` a view that takes no writes (its pushes fail) and
    // that its own migration cannot alter (it does not start).
    for older in [
        "INSERT INTO streams VALUES (1, 'c', 1)",
        "UPDATE streams SET version = 9",
        "ALTER TABLE streams SET (fillfactor = 50)",
    ] {
        assert!(sql.batch_execute(older).await.is_err(), "{older}");
    }
    // Opening again changes nothing; a fillfactor chosen by an operator is kept.
    drop(store);
    sql.batch_execute("ALTER TABLE stream_versions SET (fillfactor = 70)")
        .await
        .unwrap();
    let store = scratch.open("").await;
    let fillfactor: Option<String> = sql
        .query_one(
            "SELECT reloptions::text FROM pg_class WHERE oid = 'stream_versions'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(fillfactor.as_deref(), Some("{fillfactor=70}"));
    assert_eq!(stored(&store).await.len(), 5);
}

/// Refuses every event of type `Forbidden` in the streams it claims (all of them).
struct NoForbidden;

impl crate::push::authority::Authority for NoForbidden {
    fn claims(&self, _stream: &str) -> bool {
        true
    }

    fn check(
        &self,
        _history: &[crate::event::Event],
        event: &crate::codec::EventRef<'_>,
    ) -> Result<(), String> {
        if event.event_type == "Forbidden" {
            Err("forbidden".into())
        } else {
            Ok(())
        }
    }
}

#[tokio::test]
async fn a_refusal_made_by_another_instance_is_answered_though_the_head_did_not_move() {
    let scratch = Scratch::new();
    let a = scratch.open("").await;
    let b = PgStore::open(
        &scratch.url(""),
        Authorities::new(vec![std::sync::Arc::new(NoForbidden)]),
    )
    .await
    .expect("open");
    push(&a, vec![any(1, "g")]).await;
    let forbidden = PushEvent {
        event_type: "Forbidden".into(),
        ..any(2, "g")
    };
    let refused = push(&b, vec![forbidden.clone()]).await;
    assert!(
        matches!(&refused.results[0], PushResult::Rejected { reason, .. } if reason == "forbidden")
    );
    // `a` (no authority) last saw the store without refusals, at this head: what it
    // remembers would accept the event, but a verdict once given is final.
    let again = push(&a, vec![forbidden]).await;
    assert_eq!(again.results, refused.results);
    assert_eq!(stored(&a).await.len(), 1);
}
