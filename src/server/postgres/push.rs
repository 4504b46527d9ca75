//! PostgreSQL backend: the push transaction, in phases: lock the store and look up (round
//! trip 1), settle the pushed streams' versions with what this instance remembers, plan
//! with the shared push rules, then write and commit (round trip 2). An attempt that fails
//! only because an assumption did not hold names it ([`Retry`]), and the push is tried
//! again without it.
//!
//! A push writes no stream version: the versions are derived, from `stream_versions` (as
//! of the store's `versions_at`) and the events after it, which one statement folds into
//! `stream_versions` every [`FLUSH_EVERY`] events. Nor does it look up the pushed ids'
//! refusals or the pushed streams' lifecycle ends when the store's row says it never had
//! any (and this instance's last look at it said so too, since the lookups are sent
//! before the row is back).

use std::collections::HashMap;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use super::notify::CHANNEL;
use super::pool::PgConn;
use super::statements::{
    event_from_row, existing_ids, placed_ids, refused_ids, remember_refusals, store_row,
    stream_ends, stream_versions, Statements, BEGIN, ERASE_EVENTS, FLUSH_STREAM_VERSIONS,
    UPSERT_STREAM_ENDS, UPSERT_STREAM_VERSIONS,
};
use super::versions::{Known, Map, Set, MAX_KNOWN_STREAMS};
use super::PgStore;
use crate::event::{Event, EventId, StreamEnd};
use crate::protocol::{PushEvent, PushResponse};
use crate::push::rules::{plan_push, PushPlan, Refusal, Stored};
use crate::server::store::{
    distinct_streams, new_epoch, stored_u64, stream_end_name, to_i64, StoreError,
};

/// Events after a store's `versions_at` before a push folds them into `stream_versions`:
/// what a push that cannot use this instance's memory reads beyond one probe per stream
/// (a range of the primary key), against one statement per so many events for the pushes
/// that can.
pub(super) const FLUSH_EVERY: u64 = 10_000;

/// What a push attempt may assume. The first assumes that the pushed ids are new and that
/// the store is as this instance's last push left it; each retry drops what failed, so a
/// push takes at most three attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attempt {
    /// Look the pushed ids up first, rather than count on the unique index.
    look_up_ids: bool,
    /// Plan from memory and send everything in one round trip, behind a guard that fails
    /// the transaction unless the store is still as remembered (see [`one_trip`]).
    one_trip: bool,
}

impl Attempt {
    const FIRST: Attempt = Attempt {
        look_up_ids: false,
        one_trip: true,
    };

    /// The attempt to make after this one failed on `retry`; `None` when this one did not
    /// make that assumption, and so the failure is final.
    fn after(self, retry: Retry) -> Option<Attempt> {
        match retry {
            Retry::StoredId if !self.look_up_ids => Some(Attempt {
                look_up_ids: true,
                ..self
            }),
            Retry::Moved if self.one_trip => Some(Attempt {
                one_trip: false,
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
    /// The store is not as this instance's last push left it (the guard of a one-trip
    /// push failed): plan from what is stored.
    Moved,
}

/// A fresh `stores.last_push`: random, so that a database restored to an earlier point and
/// pushed to again (another timeline) never shows the number an instance remembers.
fn new_push_mark() -> Result<i64, StoreError> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| StoreError::Task(format!("no randomness for a push: {e}")))?;
    Ok(i64::from_le_bytes(bytes))
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
    /// `stores.last_push`: what this instance remembers holds if it set it.
    last_push: i64,
    /// `stores.versions_at`.
    versions_at: u64,
    /// `stores.refusals` and `stores.ends`: whether the store ever had any.
    any_refusals: bool,
    any_ends: bool,
    /// Every pushed stream's version once [`Memory::settle`] ran (0: no events yet).
    versions: Map<String, u64>,
    /// The pushed ids already stored (looked up only when the attempt says so).
    existing: HashMap<EventId, Stored>,
    /// The refusals remembered for the pushed ids.
    refused: HashMap<EventId, Vec<Refusal>>,
    /// The pushed streams whose last event is a lifecycle event (all of them looked up
    /// when the store has any).
    ends: HashMap<String, StreamEnd>,
}

/// What this push makes of the stream versions the instance remembered.
struct Memory {
    /// Remembered versions of other streams, still current: kept for the next push (in a
    /// one-trip push, of the pushed streams too, as they were before it).
    rest: Map<String, u64>,
    /// Some pushed streams' versions come from memory, not from the database: a
    /// rejection reads them first.
    remembered: bool,
    /// Whether the next push may trust the memory (see [`Known::trusted`]).
    trusted: bool,
    /// The streams whose version moved since the store's `versions_at` (see
    /// [`Known::moved`]), when known.
    moved: Option<Set<String>>,
}

impl Memory {
    /// Fills in the versions of the `skipped` streams (not looked up in round trip 1):
    /// from memory if it is current, else with one more round trip. What is remembered
    /// holds while the store's `last_push` is the one this instance's last push set:
    /// every push that changes a stream's version sets a new one, under the lock.
    async fn settle(
        known: Option<Known>,
        locked: &mut Locked,
        skipped: &[&str],
        client: &Client,
        st: &Statements,
        store: &str,
    ) -> Result<Memory, Failed> {
        let had_known = known.is_some();
        let current = known.as_ref().is_some_and(|k| {
            k.store_id == locked.store_id
                && k.head == locked.head
                && k.last_push == locked.last_push
        });
        let (mut rest, mut moved) = match known {
            Some(k) if current => (k.versions, k.moved),
            _ => (Map::default(), None),
        };
        if locked.versions_at == locked.head {
            // Nothing after `versions_at`: no stream moved since.
            moved = Some(Set::default());
        }
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
            moved,
        })
    }

    /// The folding of the stream versions this push owes when the events after
    /// `versions_at` reach [`FLUSH_EVERY`]: from memory (the streams that moved, at their
    /// versions after `plan`) when it knows every one, else from the events.
    fn flush(&self, locked: &Locked, pushed: &Map<String, u64>, plan: &PushPlan) -> Option<Flush> {
        if plan.head.saturating_sub(locked.versions_at) < FLUSH_EVERY {
            return None;
        }
        let Some(moved) = &self.moved else {
            return Some(Flush::FromEvents);
        };
        let mut now: Map<&str, u64> = plan
            .stream_versions
            .iter()
            .map(|(s, v)| (s.as_str(), *v))
            .collect();
        for stream in moved {
            if now.contains_key(stream.as_str()) {
                continue;
            }
            let known = self.rest.get(stream).or_else(|| pushed.get(stream));
            match known {
                Some(version) => {
                    now.insert(stream, *version);
                }
                None => return Some(Flush::FromEvents),
            }
        }
        let (streams, versions) = now.into_iter().map(|(s, v)| (s.to_owned(), v)).unzip();
        Some(Flush::Versions { streams, versions })
    }

    /// The answer to a committed push (`versions`: the pushed streams' versions before it),
    /// and what the next push on this instance may skip looking up.
    fn answer(
        mut self,
        locked: Locked,
        mut versions: Map<String, u64>,
        plan: PushPlan,
        last_push: i64,
        any_ends: bool,
        flushed: bool,
    ) -> (PushResponse, Known) {
        if let Some(moved) = self.moved.as_mut() {
            // Most pushed streams moved already: no copy of their names for those.
            for (stream, _) in &plan.stream_versions {
                if !moved.contains(stream.as_str()) {
                    moved.insert(stream.clone());
                }
            }
        }
        versions.extend(plan.stream_versions);
        let known = self.into_known(&locked, versions, plan.head, last_push, any_ends, flushed);
        let response = PushResponse {
            results: plan.results,
            head: plan.head,
            epoch: locked.epoch,
        };
        (response, known)
    }

    /// What the next push on this instance may skip looking up.
    #[allow(clippy::too_many_arguments)]
    fn into_known(
        self,
        locked: &Locked,
        versions: Map<String, u64>,
        head: u64,
        last_push: i64,
        any_ends: bool,
        flushed: bool,
    ) -> Known {
        let mut moved = if flushed {
            Some(Set::default())
        } else {
            self.moved
        };
        // `rest` may hold some of `versions`' streams already (a one-trip push's): count
        // them once when the sum is over the limit.
        let fits = versions.len() + self.rest.len() <= MAX_KNOWN_STREAMS
            || versions
                .keys()
                .filter(|s| !self.rest.contains_key(*s))
                .count()
                + self.rest.len()
                <= MAX_KNOWN_STREAMS;
        let versions = if fits {
            let mut all = self.rest;
            all.extend(versions);
            all
        } else {
            // The streams that moved are no longer all remembered.
            moved = None;
            versions
        };
        Known {
            store_id: locked.store_id,
            head,
            last_push,
            epoch: locked.epoch.clone(),
            versions_at: if flushed { head } else { locked.versions_at },
            trusted: self.trusted,
            any_refusals: locked.any_refusals,
            any_ends,
            versions,
            moved,
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
            let known = self.known.take(store);
            match self
                .push_once(conn, store, client_id, events, attempt, known)
                .await
            {
                Ok((response, mut known)) => {
                    if !attempt.one_trip {
                        // Another instance pushes to this store too: the next push looks
                        // its streams up with the lock rather than try one trip first.
                        known.trusted = false;
                    }
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
        let known = match known {
            Some(k) if attempt.one_trip && !attempt.look_up_ids => {
                match self.plan_from_memory(&k, events, &streams) {
                    Some(plan) => {
                        return one_trip(client, st, store, client_id, events, plan, k).await;
                    }
                    None => Some(k),
                }
            }
            other => other,
        };
        // The streams whose versions this instance remembers are not looked up, unless the
        // last push found its memory of this store out of date.
        let (skipped, looked_up): (Vec<&str>, Vec<&str>) = match &known {
            Some(k) if k.trusted => streams.iter().partition(|s| k.versions.contains_key(**s)),
            _ => (Vec::new(), streams.clone()),
        };
        // Refusals and lifecycle ends are looked up unless this instance last saw the store
        // without any; the store's row tells (below) whether that still holds.
        let look_up = LookUp {
            ids: attempt.look_up_ids,
            refusals: known.as_ref().is_none_or(|k| k.any_refusals),
            ends: known.as_ref().is_none_or(|k| k.any_ends),
        };
        let mut locked =
            lock_and_look_up(client, st, store, &looked_up, &streams, &ids, look_up).await?;
        if locked.any_refusals && !look_up.refusals {
            locked.refused = refused_ids(client, st, store, &ids).await?;
        }
        if locked.any_ends && !look_up.ends {
            locked.ends = stream_ends(client, store, &streams).await?;
        }
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
        let versions = std::mem::take(&mut locked.versions);
        if plan.inserts.is_empty() {
            client
                .batch_execute("COMMIT")
                .await
                .map_err(commit_failed)?;
            let known = memory.into_known(
                &locked,
                versions,
                plan.head,
                locked.last_push,
                locked.any_ends,
                false,
            );
            return Ok((
                PushResponse {
                    results: plan.results,
                    head: plan.head,
                    epoch: locked.epoch,
                },
                known,
            ));
        }
        let last_push = new_push_mark()?;
        let any_ends = locked.any_ends || !plan.stream_ends.is_empty();
        let flush = memory.flush(&locked, &versions, &plan);
        write_and_commit(
            client,
            st,
            store,
            client_id,
            events,
            &plan,
            &locked,
            Written {
                last_push,
                any_ends,
                flush: flush.as_ref(),
            },
        )
        .await?;
        Ok(memory.answer(locked, versions, plan, last_push, any_ends, flush.is_some()))
    }

    /// The plan of a one-trip push (see [`one_trip`]): when this instance's memory of the
    /// store is trusted, the store had no refusal and no lifecycle end, memory holds every
    /// pushed stream, no authority claims one, and the plan accepts at least one event and
    /// rejects none (a rejection is an answer, so it comes from the stored state).
    fn plan_from_memory(
        &self,
        known: &Known,
        events: &[PushEvent],
        streams: &[&str],
    ) -> Option<PushPlan> {
        if !known.trusted || known.any_refusals || known.any_ends {
            return None;
        }
        if !self.authorities.claimed_streams(events).is_empty() {
            return None;
        }
        if !streams.iter().all(|s| known.versions.contains_key(*s)) {
            return None;
        }
        // The rules look up only the pushed streams: memory serves as it is.
        let plan = plan_push(
            known.head,
            events,
            &HashMap::new(),
            &HashMap::new(),
            &known.versions,
            &HashMap::new(),
            Some(&mut self.authorities.checker(HashMap::new())),
        );
        (!plan.rejects_any() && !plan.inserts.is_empty()).then_some(plan)
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
                    Ok(Map::default())
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
            // one more round trip, only for pushes with refusals); the store's row says
            // it has some from now on.
            remember_refusals(client, st, locked.store_id, events, &plan).await?;
            locked.any_refusals = true;
        }
        Ok(plan)
    }
}

/// A push planned from memory ([`PgStore::plan_from_memory`]) in one round trip: `BEGIN`,
/// the store's lock, a guard that fails the transaction unless the store's row still shows
/// the head and `last_push` this instance's last push left (and no refusal or lifecycle
/// end), the writes and `COMMIT`. Statements run in order, so the guard sees the state
/// after the lock, and after a failed statement the server refuses the rest and turns
/// `COMMIT` into a rollback: nothing is written unless the memory held. Should the guard
/// fail, the push is planned again from the database ([`Retry::Moved`]).
#[allow(clippy::too_many_arguments)]
async fn one_trip(
    client: &Client,
    st: &Statements,
    store: &str,
    client_id: &str,
    events: &[PushEvent],
    plan: PushPlan,
    known: Known,
) -> Result<(PushResponse, Known), Failed> {
    // Memory keeps the pushed streams at their versions before the push (see
    // [`Memory::rest`]): the plan's replace them in [`Memory::answer`].
    let Known {
        store_id,
        head,
        last_push: remembered_push,
        epoch,
        versions_at,
        versions: rest,
        moved,
        ..
    } = known;
    let locked = Locked {
        store_id,
        head,
        epoch,
        last_push: remembered_push,
        versions_at,
        any_refusals: false,
        any_ends: false,
        versions: Map::default(),
        existing: HashMap::new(),
        refused: HashMap::new(),
        ends: HashMap::new(),
    };
    let memory = Memory {
        rest,
        remembered: true,
        trusted: true,
        moved: if versions_at == head {
            Some(Set::default())
        } else {
            moved
        },
    };
    let last_push = new_push_mark()?;
    let any_ends = !plan.stream_ends.is_empty();
    let flush = memory.flush(&locked, &Map::default(), &plan);
    let remembered_head = to_i64(head, "head")?;
    let store_params: [&(dyn ToSql + Sync); 1] = [&store];
    let guard_params: [&(dyn ToSql + Sync); 3] = [&store_id, &remembered_head, &remembered_push];
    let (begun, lock, guard, written) = tokio::join!(
        client.batch_execute(BEGIN),
        client.query_opt(&st.lock_store, &store_params),
        client.query_one(&st.guard_store, &guard_params),
        write_and_commit(
            client,
            st,
            store,
            client_id,
            events,
            &plan,
            &locked,
            Written {
                last_push,
                any_ends,
                flush: flush.as_ref(),
            },
        ),
    );
    if let Err(e) = &guard {
        if e.code() == Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO) {
            return Err(Failed {
                error: StoreError::Corrupt(
                    "the store moved since this instance's last push".into(),
                ),
                transaction: match &written {
                    Err(failed) => failed.transaction,
                    Ok(()) => Transaction::Over,
                },
                retry: Some(Retry::Moved),
            });
        }
    }
    written?;
    begun.map_err(commit_failed)?;
    lock.map_err(commit_failed)?;
    guard.map_err(commit_failed)?;
    Ok(memory.answer(
        locked,
        Map::default(),
        plan,
        last_push,
        any_ends,
        flush.is_some(),
    ))
}

/// How a push folds the stream versions into `stream_versions` (see [`FLUSH_EVERY`]).
enum Flush {
    /// These streams' versions (every stream that moved since `versions_at`, as this
    /// instance knows).
    Versions {
        streams: Vec<String>,
        versions: Vec<u64>,
    },
    /// Read from the events after `versions_at` (this instance does not know them all).
    FromEvents,
}

/// What round trip 2 sets beside the events.
struct Written<'a> {
    /// The new `stores.last_push`.
    last_push: i64,
    /// The new `stores.ends`.
    any_ends: bool,
    /// The stream versions to fold, if due.
    flush: Option<&'a Flush>,
}

/// Which lookups round trip 1 sends.
#[derive(Debug, Clone, Copy)]
struct LookUp {
    /// The stored events among the pushed ids.
    ids: bool,
    /// The refusals remembered for the pushed ids.
    refusals: bool,
    /// The lifecycle ends of the pushed streams.
    ends: bool,
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
    look_up: LookUp,
) -> Result<Locked, Failed> {
    let store_params: [&(dyn ToSql + Sync); 1] = [&store];
    let lookups = move || async move {
        tokio::try_join!(
            stream_versions(client, st, store, looked_up),
            async move {
                if look_up.ids {
                    existing_ids(client, st, store, ids).await
                } else {
                    Ok(Vec::new())
                }
            },
            async move {
                if look_up.refusals {
                    refused_ids(client, st, store, ids).await
                } else {
                    Ok(HashMap::new())
                }
            },
            async move {
                if look_up.ends {
                    stream_ends(client, store, streams).await
                } else {
                    Ok(HashMap::new())
                }
            },
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
        last_push: row.try_get(3)?,
        versions_at: stored_u64(row.try_get(4)?, "versions_at")?,
        any_refusals: row.try_get(5)?,
        any_ends: row.try_get(6)?,
        versions,
        existing: placed_ids(&id_rows)?,
        refused,
        ends,
    })
}

/// Round trip 2: the events, the store's row (head, `last_push`, flags), every
/// [`FLUSH_EVERY`] events the fold of the stream versions, the `NOTIFY`, and `COMMIT` with
/// them: after a failed statement the server refuses the rest and turns `COMMIT` into a
/// rollback, so success means every statement succeeded and the transaction is committed
/// (and flushed).
#[allow(clippy::too_many_arguments)]
async fn write_and_commit(
    client: &Client,
    st: &Statements,
    store: &str,
    client_id: &str,
    events: &[PushEvent],
    plan: &PushPlan,
    locked: &Locked,
    written: Written<'_>,
) -> Result<(), Failed> {
    let Written {
        last_push,
        any_ends,
        flush,
    } = written;
    let store_id = locked.store_id;
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
    let new_head = to_i64(plan.head, "head")?;
    let versions_at = to_i64(locked.versions_at, "versions_at")?;
    // The stream versions are folded into `stream_versions` once the events after
    // `versions_at` reach FLUSH_EVERY, this push's included.
    let new_versions_at = if flush.is_some() {
        new_head
    } else {
        versions_at
    };
    let (flush_streams, flush_versions) = match flush {
        Some(Flush::Versions { streams, versions }) => (
            streams.iter().map(String::as_str).collect::<Vec<&str>>(),
            versions
                .iter()
                .map(|v| to_i64(*v, "version"))
                .collect::<Result<Vec<i64>, StoreError>>()?,
        ),
        _ => (Vec::new(), Vec::new()),
    };
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
    let head_params: [&(dyn ToSql + Sync); 5] = [
        &store_id,
        &new_head,
        &last_push,
        &new_versions_at,
        &any_ends,
    ];
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
    let (inserted, folded, moved, notified, ended, erasing, committed) = tokio::join!(
        client.execute(&st.insert_events, &insert_params),
        async {
            match flush {
                None => Ok(0),
                Some(Flush::Versions { .. }) => {
                    client
                        .execute_typed(
                            UPSERT_STREAM_VERSIONS,
                            &[
                                (&store_id, Type::INT8),
                                (&flush_streams, Type::TEXT_ARRAY),
                                (&flush_versions, Type::INT8_ARRAY),
                            ],
                        )
                        .await
                }
                // After the inserts (statements run in order).
                Some(Flush::FromEvents) => {
                    client
                        .execute_typed(
                            FLUSH_STREAM_VERSIONS,
                            &[
                                (&store_id, Type::INT8),
                                (&versions_at, Type::INT8),
                                (&new_head, Type::INT8),
                            ],
                        )
                        .await
                }
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
            // After the inserts: the push's own events of an erased stream are erased too.
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
        client.batch_execute("COMMIT"),
    );
    let transaction = if committed.is_ok() {
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
    folded.map_err(|e| fail(e, None))?;
    moved.map_err(|e| fail(e, None))?;
    notified.map_err(|e| fail(e, None))?;
    ended.map_err(|e| fail(e, None))?;
    erasing.map_err(|e| fail(e, None))?;
    committed.map_err(|e| fail(e, None))?;
    Ok(())
}
