//! The PostgreSQL backend against a real database (`ANNALS_TEST_PG_URL`, each test in a
//! schema of its own): duplicates, versions across instances, remembered versions that the
//! database contradicts, and an older database brought up to date.

use tokio_postgres::{Client, NoTls};

use super::schema::SCHEMA;
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
async fn remembered_versions_that_the_database_contradicts_are_not_used() {
    let scratch = Scratch::new();
    let store = scratch.open("").await;
    let sql = scratch.sql().await;
    // The database changes under the instance without the head moving (as after a
    // restore that another timeline refilled up to the same head).
    let change = |statement: &'static str| {
        let sql = &sql;
        async move { sql.batch_execute(statement).await.unwrap() }
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
    change("INSERT INTO streams (store_id, stream, version) SELECT store_id, 'c', 4 FROM streams WHERE stream = 'a'").await;
    let c = push(&store, vec![any(5, "c")]).await;
    assert_eq!(c.results, vec![ok(5, 4, 5)]);

    push(&store, vec![any(6, "a"), any(7, "b")]).await; // a = 3, b = 2
    change("UPDATE streams SET version = 7 WHERE stream = 'a'").await;
    let a = push(&store, vec![any(8, "a")]).await;
    assert_eq!(a.results, vec![ok(8, 7, 8)]);

    // A rejection is never answered from memory: b is remembered at 2.
    push(&store, vec![any(9, "b")]).await; // b = 3
    change("UPDATE streams SET version = 1 WHERE stream = 'b'").await;
    let b = push(&store, vec![ev(10, "b", ExpectedVersion::Exact(1))]).await;
    assert_eq!(b.results, vec![ok(10, 9, 2)]);
    let b = push(&store, vec![ev(11, "b", ExpectedVersion::Exact(1))]).await;
    assert!(matches!(
        b.results[0],
        PushResult::Rejected {
            actual_version: Some(2),
            ..
        }
    ));
}

#[tokio::test]
async fn an_older_database_opens_and_its_streams_get_the_fillfactor() {
    let scratch = Scratch::new();
    let sql = scratch.sql().await;
    // The schema as the previous release created it, with data.
    sql.batch_execute(&SCHEMA.replace(" WITH (fillfactor = 50)", ""))
        .await
        .unwrap();
    sql.batch_execute(
        "INSERT INTO stores (name, epoch, head) VALUES ('s', 'e0', 2);
         INSERT INTO streams SELECT id, 'a', 2 FROM stores;
         INSERT INTO events SELECT id, p, decode(repeat(to_hex(p), 32), 'hex'), 'a', p, 'T', '1', NULL, 0, 'c'
         FROM stores, generate_series(1, 2) p;",
    )
    .await
    .unwrap();
    let fillfactor = || async {
        sql.query_one(
            "SELECT reloptions::text FROM pg_class WHERE oid = 'streams'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get::<_, Option<String>>(0)
    };
    assert_eq!(fillfactor().await, None);
    let store = scratch.open("").await;
    assert_eq!(fillfactor().await.as_deref(), Some("{fillfactor=50}"));
    let next = push(&store, vec![any(9, "a")]).await;
    assert_eq!(next.results, vec![ok(9, 3, 3)]);
    assert_eq!(next.epoch, "e0");
    drop(store);
    // Opening again changes nothing; a fillfactor chosen by an operator is kept.
    sql.batch_execute("ALTER TABLE streams SET (fillfactor = 70)")
        .await
        .unwrap();
    let store = scratch.open("").await;
    assert_eq!(fillfactor().await.as_deref(), Some("{fillfactor=70}"));
    assert_eq!(stored(&store).await.len(), 3);
}
