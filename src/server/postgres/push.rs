//! PostgreSQL backend: the push transaction, in phases: lock the store and look up (round
//! trip 1), settle the pushed streams' versions with what this instance remembers, plan
//! with the shared push rules, then write and commit (round trip 2). An attempt that fails
//! only because an assumption did not hold names it ([`Retry`]), and the push is tried
//! again without it.

use std::collections::HashMap;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use super::notify::CHANNEL;
use super::pool::PgConn;
use super::statements::{
    event_from_row, existing_ids, placed_ids, refused_ids, remember_refusals, store_row,
    stream_ends, stream_versions, Statements, BEGIN, ERASE_EVENTS, UPDATE_STREAMS,
    UPSERT_STREAM_ENDS,
};
use super::versions::{Known, MAX_KNOWN_STREAMS};
use super::PgStore;
use crate::event::{Event, EventId, StreamEnd};
use crate::protocol::{PushEvent, PushResponse};
use crate::push::rules::{plan_push, PushPlan, Refusal, Stored};
use crate::server::store::{distinct_streams, new_epoch, stream_end_name, to_i64, StoreError};

/// What a push attempt may assume. The first assumes both; each retry drops one, so a
/// push takes at most three attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attempt {
    /// Use the stream versions this instance remembers (checked when written).
    remembered: bool,
    /// Look the pushed ids up first, rather than count on the unique index.
    look_up_ids: bool,
}

impl Attempt {
    const FIRST: Attempt = Attempt {
        remembered: true,
        look_up_ids: false,
    };

    /// The attempt to make after this one failed on `retry`; `None` when this one did not
    /// make that assumption, and so the failure is final.
    fn after(self, retry: Retry) -> Option<Attempt> {
        match retry {
            Retry::StoredId if !self.look_up_ids => Some(Attempt {
                look_up_ids: true,
                ..self
            }),
            Retry::StaleVersions if self.remembered => Some(Attempt {
                remembered: false,
                ..self
            }),
            _ => None,
        }
    }
}

/// The assumption a failed attempt fell on: the next attempt does without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// The insert met an id the store already holds: look the ids up first, so that it
    /// answers `duplicate`.
    StoredId,
    /// The stream versions this instance remembered are not what is stored: read them
    /// from the database.
    StaleVersions,
}

/// Where a failed push transaction stands on its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transaction {
    /// Still open: to be rolled back.
    Open,
    /// Over: a `COMMIT` was answered (the server turns it into a rollback after a failed
    /// statement), or failed.
    Over,
}

/// A failed push attempt.
struct Failed {
    error: StoreError,
    transaction: Transaction,
    /// Set when the attempt failed only because of an assumption.
    retry: Option<Retry>,
}

impl<E: Into<StoreError>> From<E> for Failed {
    fn from(error: E) -> Self {
        Failed {
            error: error.into(),
            transaction: Transaction::Open,
            retry: None,
        }
    }
}

/// A failed `COMMIT`: the transaction is over.
fn commit_failed(error: tokio_postgres::Error) -> Failed {
    Failed {
        error: error.into(),
        transaction: Transaction::Over,
        retry: None,
    }
}

fn is_unique_violation(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

/// True when an insert met an id that the store already holds (the unique index on
/// `(store_id, id)`).
fn is_stored_id(error: &tokio_postgres::Error) -> bool {
    is_unique_violation(error)
        && error.as_db_error().is_some_and(|db| {
            db.table() == Some("events") && db.constraint() != Some("events_pkey")
        })
}

/// The store as round trip 1 found it, under its lock.
struct Locked {
    store_id: i64,
    head: u64,
    epoch: String,
    /// Every pushed stream's version once [`Memory::settle`] ran (0: no events yet).
    versions: HashMap<String, u64>,
    /// The pushed ids already stored (looked up only when the attempt says so).
    existing: HashMap<EventId, Stored>,
    /// The refusals remembered for the pushed ids.
    refused: HashMap<EventId, Vec<Refusal>>,
    /// The pushed streams whose last event is a lifecycle event (all of them looked up).
    ends: HashMap<String, StreamEnd>,
}

/// What this push makes of the stream versions the instance remembered.
struct Memory {
    /// Remembered versions of other streams, still current: kept for the next push.
    rest: HashMap<String, u64>,
    /// Some pushed streams' versions come from memory, not from the database: the writes
    /// check them, and `COMMIT` waits for that check.
    remembered: bool,
    /// Whether the next push may trust the memory (see [`Known::trusted`]).
    trusted: bool,
}

impl Memory {
    /// Fills in the versions of the `skipped` streams (not looked up in round trip 1):
    /// from memory if it is current, else with one more round trip. What is remembered
    /// holds only while the head is the one it was remembered at: every push that changes
    /// a stream's version moves the head, under the lock. The writes check it all the same.
    async fn settle(
        known: Option<Known>,
        locked: &mut Locked,
        skipped: &[&str],
        client: &Client,
        st: &Statements,
        store: &str,
    ) -> Result<Memory, Failed> {
        let had_known = known.is_some();
        let current = known
            .as_ref()
            .is_some_and(|k| k.store_id == locked.store_id && k.head == locked.head);
        let mut rest = match known {
            Some(k) if current => k.versions,
            _ => HashMap::new(),
        };
        let mut remembered = false;
        if !skipped.is_empty() {
            if current {
                for s in skipped {
                    if let Some((name, version)) = rest.remove_entry(*s) {
                        locked.versions.insert(name, version);
                    }
                }
                remembered = true;
            } else {
                // Out of date: one more round trip for the skipped streams.
                locked
                    .versions
                    .extend(stream_versions(client, st, store, skipped).await?);
            }
        }
        Ok(Memory {
            rest,
            remembered,
            trusted: current || !had_known,
        })
    }

    /// What the next push on this instance may skip looking up.
    fn into_known(self, store_id: i64, versions: HashMap<String, u64>, head: u64) -> Known {
        let versions = if versions.len() + self.rest.len() <= MAX_KNOWN_STREAMS {
            let mut all = self.rest;
            all.extend(versions);
            all
        } else {
            versions
        };
        Known {
            store_id,
            head,
            trusted: self.trusted,
            versions,
        }
    }
}

impl PgStore {
    pub(super) async fn push_inner(
        &self,
        store: &str,
        client_id: &str,
        events: &[PushEvent],
    ) -> Result<PushResponse, StoreError> {
        let mut lease = self.pool.get().await?;
        let conn = lease.conn()?;
        let mut attempt = Attempt::FIRST;
        loop {
            let known = if attempt.remembered {
                self.known.take(store)
            } else {
                None
            };
            match self
                .push_once(conn, store, client_id, events, attempt, known)
                .await
            {
                Ok((response, known)) => {
                    self.known.put(store, known);
                    return Ok(response);
                }
                Err(failed) => match failed.retry.and_then(|retry| attempt.after(retry)) {
                    Some(next) if !conn.in_transaction => attempt = next,
                    _ => return Err(failed.error),
                },
            }
        }
    }

    /// One push transaction on `conn`, rolled back if it fails (or the connection is marked
    /// to be closed).
    async fn push_once(
        &self,
        conn: &mut PgConn,
        store: &str,
        client_id: &str,
        events: &[PushEvent],
        attempt: Attempt,
        known: Option<Known>,
    ) -> Result<(PushResponse, Known), Failed> {
        let PgConn {
            client,
            st,
            in_transaction,
        } = conn;
        *in_transaction = true;
        let result = self
            .push_transaction(client, st, store, client_id, events, attempt, known)
            .await;
        match &result {
            Ok(_)
            | Err(Failed {
                transaction: Transaction::Over,
                ..
            }) => *in_transaction = false,
            Err(Failed {
                transaction: Transaction::Open,
                ..
            }) => {
                if !client.is_closed() && client.batch_execute("ROLLBACK").await.is_ok() {
                    *in_transaction = false;
                }
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn push_transaction(
        &self,
        client: &Client,
        st: &Statements,
        store: &str,
        client_id: &str,
        events: &[PushEvent],
        attempt: Attempt,
        known: Option<Known>,
    ) -> Result<(PushResponse, Known), Failed> {
        let ids: Vec<&[u8]> = events.iter().map(|e| &e.id.0[..]).collect();
        let streams = distinct_streams(events);
        // The streams whose versions this instance remembers are not looked up, unless the
        // last push found its memory of this store out of date.
        let (skipped, looked_up): (Vec<&str>, Vec<&str>) = match &known {
            Some(k) if k.trusted => streams.iter().partition(|s| k.versions.contains_key(**s)),
            _ => (Vec::new(), streams.clone()),
        };
        let mut locked =
            lock_and_look_up(client, st, store, &looked_up, &streams, &ids, attempt).await?;
        let mut memory = Memory::settle(known, &mut locked, &skipped, client, st, store).await?;
        let plan = self
            .plan(
                client,
                st,
                store,
                events,
                &ids,
                &skipped,
                attempt,
                &mut locked,
                &mut memory,
            )
            .await?;
        let Locked {
            store_id,
            epoch,
            mut versions,
            ..
        } = locked;
        if plan.inserts.is_empty() {
            client
                .batch_execute("COMMIT")
                .await
                .map_err(commit_failed)?;
            let known = memory.into_known(store_id, versions, plan.head);
            return Ok((
                PushResponse {
                    results: plan.results,
                    head: plan.head,
                    epoch,
                },
                known,
            ));
        }
        write_and_commit(
            client,
            st,
            store,
            store_id,
            client_id,
            events,
            &plan,
            &versions,
            memory.remembered,
        )
        .await?;
        for (stream, version) in plan.stream_versions {
            versions.insert(stream, version);
        }
        let known = memory.into_known(store_id, versions, plan.head);
        Ok((
            PushResponse {
                results: plan.results,
                head: plan.head,
                epoch,
            },
            known,
        ))
    }

    /// Plans the push with the shared rules (and the authorities, given the histories of
    /// the streams they claim), and stores the refusals it makes.
    #[allow(clippy::too_many_arguments)]
    async fn plan(
        &self,
        client: &Client,
        st: &Statements,
        store: &str,
        events: &[PushEvent],
        ids: &[&[u8]],
        skipped: &[&str],
        attempt: Attempt,
        locked: &mut Locked,
        memory: &mut Memory,
    ) -> Result<PushPlan, Failed> {
        let mut histories: HashMap<String, Vec<Event>> = HashMap::new();
        let claimed = self.authorities.claimed_streams(events);
        if !claimed.is_empty() {
            let params: [&(dyn ToSql + Sync); 2] = [&locked.store_id, &claimed];
            for row in client.query(&st.stream_events, &params).await? {
                let event = event_from_row(&row)?;
                histories
                    .entry(event.stream.clone())
                    .or_default()
                    .push(event);
            }
        }
        let mut plan = plan_push(
            locked.head,
            events,
            &locked.existing,
            &locked.refused,
            &locked.versions,
            &locked.ends,
            Some(&mut self.authorities.checker(histories.clone())),
        );
        if plan.rejects_any() && (!attempt.look_up_ids || memory.remembered) {
            // A rejection is an answer: it must come from the stored state. A stored id
            // answers `duplicate` before any check, so look the ids up, and read the
            // versions that were remembered (still under the lock); then plan again.
            let (id_rows, fresh) = tokio::try_join!(existing_ids(client, st, store, ids), async {
                if memory.remembered {
                    stream_versions(client, st, store, skipped).await
                } else {
                    Ok(HashMap::new())
                }
            },)?;
            locked.existing = placed_ids(&id_rows)?;
            locked.versions.extend(fresh);
            memory.remembered = false;
            plan = plan_push(
                locked.head,
                events,
                &locked.existing,
                &locked.refused,
                &locked.versions,
                &locked.ends,
                Some(&mut self.authorities.checker(histories)),
            );
        }
        if !plan.refusals.is_empty() {
            // Remembered, so that a retry of a refused event gets the same answer (rare:
            // one more round trip, only for pushes with refusals).
            remember_refusals(client, st, locked.store_id, events, &plan).await?;
        }
        Ok(plan)
    }
}

/// Round trip 1: `BEGIN`, the store's lock, then the lookups (which see the state after
/// it). A store seen for the first time is created, then locked and looked up again.
async fn lock_and_look_up(
    client: &Client,
    st: &Statements,
    store: &str,
    looked_up: &[&str],
    streams: &[&str],
    ids: &[&[u8]],
    attempt: Attempt,
) -> Result<Locked, Failed> {
    let store_params: [&(dyn ToSql + Sync); 1] = [&store];
    let lookups = move || async move {
        tokio::try_join!(
            stream_versions(client, st, store, looked_up),
            async move {
                if attempt.look_up_ids {
                    existing_ids(client, st, store, ids).await
                } else {
                    Ok(Vec::new())
                }
            },
            refused_ids(client, st, store, ids),
            stream_ends(client, store, streams),
        )
    };
    let (begun, locked, looked) = tokio::join!(
        client.batch_execute(BEGIN),
        client.query_opt(&st.lock_store, &store_params),
        lookups(),
    );
    begun?;
    let (row, (versions, id_rows, refused, ends)) = match locked? {
        Some(row) => (row, looked?),
        None => {
            // A new store. Another instance may create it (and push to it) meanwhile,
            // so look again once it is locked.
            client
                .execute(&st.create_store, &[&store, &new_epoch()?])
                .await?;
            tokio::try_join!(
                async { Ok(client.query_one(&st.lock_store, &store_params).await?) },
                lookups(),
            )?
        }
    };
    let (store_id, head, epoch) = store_row(&row)?;
    Ok(Locked {
        store_id,
        head,
        epoch,
        versions,
        existing: placed_ids(&id_rows)?,
        refused,
        ends,
    })
}

/// Round trip 2: the events, the stream versions, the head and the `NOTIFY`, and `COMMIT`
/// with them when every version was read under the lock. `versions` are the ones the plan
/// started from.
#[allow(clippy::too_many_arguments)]
async fn write_and_commit(
    client: &Client,
    st: &Statements,
    store: &str,
    store_id: i64,
    client_id: &str,
    events: &[PushEvent],
    plan: &PushPlan,
    versions: &HashMap<String, u64>,
    remembered: bool,
) -> Result<(), Failed> {
    let n = plan.inserts.len();
    let mut positions = Vec::with_capacity(n);
    let mut inserted_ids = Vec::with_capacity(n);
    let mut event_streams = Vec::with_capacity(n);
    let mut event_versions = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut data = Vec::with_capacity(n);
    let mut metas = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    let mut schema_versions = Vec::with_capacity(n);
    let mut erased = Vec::with_capacity(n);
    for (index, placed) in &plan.inserts {
        let event = events
            .get(*index)
            .ok_or_else(|| StoreError::Task("push plan out of range".into()))?;
        positions.push(to_i64(placed.position, "position")?);
        inserted_ids.push(&event.id.0[..]);
        event_streams.push(event.stream.as_str());
        event_versions.push(to_i64(placed.version, "version")?);
        types.push(event.event_type.as_str());
        data.push(event.data.get());
        metas.push(event.meta.as_ref().map(|m| m.get()));
        times.push(to_i64(event.time, "time")?);
        schema_versions.push(i64::from(event.schema_version));
        erased.push(event.erased);
    }
    // Streams with a version have a row: updated, each only from the version the plan
    // started from; the others get one (and an existing row fails the insert).
    let (mut known_streams, mut from, mut to) = (Vec::new(), Vec::new(), Vec::new());
    let (mut new_streams, mut new_versions) = (Vec::new(), Vec::new());
    for (stream, version) in &plan.stream_versions {
        let before = versions.get(stream).copied().unwrap_or(0);
        let version = to_i64(*version, "version")?;
        if before > 0 {
            known_streams.push(stream.as_str());
            from.push(to_i64(before, "version")?);
            to.push(version);
        } else {
            new_streams.push(stream.as_str());
            new_versions.push(version);
        }
    }
    let new_head = to_i64(plan.head, "head")?;
    let insert_params: [&(dyn ToSql + Sync); 12] = [
        &store_id,
        &positions,
        &inserted_ids,
        &event_streams,
        &event_versions,
        &types,
        &data,
        &metas,
        &times,
        &client_id,
        &schema_versions,
        &erased,
    ];
    let new_params: [&(dyn ToSql + Sync); 3] = [&store_id, &new_streams, &new_versions];
    let head_params: [&(dyn ToSql + Sync); 2] = [&store_id, &new_head];
    let (end_streams, end_kinds): (Vec<&str>, Vec<&str>) = plan
        .stream_ends
        .iter()
        .map(|(stream, end)| (stream.as_str(), stream_end_name(*end)))
        .unzip();
    let (erased_streams, erased_below): (Vec<&str>, Vec<i64>) = plan
        .erasures
        .iter()
        .map(|(stream, before)| (stream.as_str(), i64::try_from(*before).unwrap_or(i64::MAX)))
        .unzip();
    let notify_params: [&(dyn ToSql + Sync); 2] = [&CHANNEL, &store];
    // When every version was read under the lock, COMMIT goes with the writes: after a
    // failed statement the server refuses the rest and turns COMMIT into a rollback, so
    // success means every statement succeeded and the transaction is committed (and
    // flushed). Remembered versions are checked first (below).
    let (inserted, updated, created, moved, notified, ended, erasing, committed) = tokio::join!(
        client.execute(&st.insert_events, &insert_params),
        async {
            if known_streams.is_empty() {
                return Ok(0);
            }
            // Planned for the keys at hand each time (an unnamed statement): a generic
            // plan may hash the whole store's streams.
            client
                .execute_typed(
                    UPDATE_STREAMS,
                    &[
                        (&store_id, Type::INT8),
                        (&known_streams, Type::TEXT_ARRAY),
                        (&from, Type::INT8_ARRAY),
                        (&to, Type::INT8_ARRAY),
                    ],
                )
                .await
        },
        async {
            if new_streams.is_empty() {
                Ok(0)
            } else {
                client.execute(&st.insert_streams, &new_params).await
            }
        },
        client.execute(&st.update_head, &head_params),
        client.execute(&st.notify, &notify_params),
        async {
            if end_streams.is_empty() {
                return Ok(0);
            }
            client
                .execute_typed(
                    UPSERT_STREAM_ENDS,
                    &[
                        (&store_id, Type::INT8),
                        (&end_streams, Type::TEXT_ARRAY),
                        (&end_kinds, Type::TEXT_ARRAY),
                    ],
                )
                .await
        },
        async {
            // After the inserts (statements run in order): the push's own events of an
            // erased stream are erased too.
            if erased_streams.is_empty() {
                return Ok(0);
            }
            client
                .execute_typed(
                    ERASE_EVENTS,
                    &[
                        (&store_id, Type::INT8),
                        (&erased_streams, Type::TEXT_ARRAY),
                        (&erased_below, Type::INT8_ARRAY),
                    ],
                )
                .await
        },
        async {
            if remembered {
                Ok(())
            } else {
                client.batch_execute("COMMIT").await
            }
        },
    );
    let transaction = if !remembered && committed.is_ok() {
        Transaction::Over
    } else {
        Transaction::Open
    };
    let fail = |error: tokio_postgres::Error, retry: Option<Retry>| Failed {
        error: error.into(),
        transaction,
        retry,
    };
    inserted.map_err(|e| {
        let retry = is_stored_id(&e).then_some(Retry::StoredId);
        fail(e, retry)
    })?;
    let updated = updated.map_err(|e| fail(e, None))?;
    // A stream remembered without events has a row after all.
    created.map_err(|e| {
        let retry = (remembered && is_unique_violation(&e)).then_some(Retry::StaleVersions);
        fail(e, retry)
    })?;
    moved.map_err(|e| fail(e, None))?;
    notified.map_err(|e| fail(e, None))?;
    ended.map_err(|e| fail(e, None))?;
    erasing.map_err(|e| fail(e, None))?;
    committed.map_err(|e| fail(e, None))?;
    if remembered {
        if updated != known_streams.len() as u64 {
            // What this instance remembered is not what is stored (a database restored
            // to an earlier point, say): nothing is kept; plan again from the database.
            return Err(Failed {
                error: StoreError::Corrupt("remembered stream versions are out of date".into()),
                transaction: Transaction::Open,
                retry: Some(Retry::StaleVersions),
            });
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(commit_failed)?;
    }
    Ok(())
}
