//! PostgreSQL backend: all the SQL that runs per request, the statements each pooled
//! connection prepares once, the lookups and writes built on them, and the decoding of
//! their rows.

use std::collections::HashMap;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row, Statement};

use super::versions::Map;
use crate::event::{Event, EventId, StreamEnd};
use crate::protocol::PushEvent;
use crate::push::rules::{Placed, PushPlan, Refusal, Stored};
use crate::server::sqlite::raw_json;
use crate::server::store::{
    stored_id, stored_schema_version, stored_u64, stream_end_from, to_i64, StoreError,
};

/// Starts a push transaction. Explicitly READ COMMITTED: the lookups pipelined behind the
/// lock rely on each statement taking a new snapshot.
pub(super) const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";

/// Brings `stream_versions` of store `$1` up to position `$3` from the events after `$2`
/// (its `versions_at`): one row per stream those events touched. Run after the push's
/// events are inserted, with `versions_at` set to `$3` in the same transaction.
pub(super) const FLUSH_STREAM_VERSIONS: &str = "
INSERT INTO stream_versions (store_id, stream, version)
SELECT $1, e.stream, max(e.version) FROM events e
WHERE e.store_id = $1 AND e.position > $2 AND e.position <= $3
GROUP BY e.stream
ON CONFLICT (store_id, stream) DO UPDATE SET version = GREATEST(stream_versions.version, excluded.version)";

/// Sets the versions of the streams `$2` of store `$1` to `$3` (what this instance knows
/// they are, under the lock): the fold of [`FLUSH_STREAM_VERSIONS`] without reading the
/// events. Planned for the keys at hand (an unnamed statement), once per so many events.
pub(super) const UPSERT_STREAM_VERSIONS: &str = "
INSERT INTO stream_versions (store_id, stream, version)
SELECT $1, t.stream, t.version FROM UNNEST($2::text[], $3::bigint[]) AS t(stream, version)
ON CONFLICT (store_id, stream) DO UPDATE SET version = GREATEST(stream_versions.version, excluded.version)";

/// The statements every pooled connection prepares once.
pub(super) struct Statements {
    pub(super) lock_store: Statement,
    pub(super) guard_store: Statement,
    pub(super) read_store: Statement,
    pub(super) create_store: Statement,
    pub(super) existing_ids: Statement,
    pub(super) refused_ids: Statement,
    pub(super) insert_rejections: Statement,
    pub(super) stream_versions: Statement,
    pub(super) tail_versions: Statement,
    pub(super) insert_events: Statement,
    pub(super) update_head: Statement,
    pub(super) mark_refusals: Statement,
    pub(super) notify: Statement,
    pub(super) read_events: Statement,
    pub(super) stream_events: Statement,
}

impl Statements {
    pub(super) async fn prepare(client: &Client) -> Result<Self, StoreError> {
        let (
            lock_store,
            guard_store,
            read_store,
            create_store,
            existing_ids,
            refused_ids,
            insert_rejections,
            stream_versions,
            tail_versions,
            insert_events,
            update_head,
            mark_refusals,
            notify,
            read_events,
            stream_events,
        ) = tokio::try_join!(
            client.prepare(
                "SELECT id, head, epoch, last_push, versions_at, refusals, ends
                 FROM stores WHERE name = $1 FOR UPDATE"
            ),
            // Sent after the lock: fails (division by zero) unless store $1 is at head $2
            // with `last_push` $3 and has no refusal and no lifecycle end.
            client.prepare(
                "SELECT 1 / count(*)::int FROM stores
                 WHERE id = $1 AND head = $2 AND last_push = $3 AND NOT refusals AND NOT ends"
            ),
            client.prepare("SELECT id, head, epoch FROM stores WHERE name = $1"),
            client.prepare(
                "INSERT INTO stores (name, epoch) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING"
            ),
            // Both lookups take the store by name, so that they can be sent with the lock.
            // One index probe per key (LATERAL ... LIMIT 1 cannot become a join that reads
            // the whole store): neither `= ANY($2)` nor a plain join with UNNEST is safe
            // from a generic plan cached while the table was small, which filters or
            // hashes every row of the store.
            client.prepare(
                "SELECT e.id, e.position, e.version, e.stream, e.type, e.schema_version, e.data, e.meta, e.erased
                 FROM UNNEST($2::bytea[]) AS k(id)
                 CROSS JOIN LATERAL (
                     SELECT e.id, e.position, e.version, e.stream, e.type, e.schema_version, e.data, e.meta, e.erased
                     FROM events e
                     WHERE e.store_id = (SELECT id FROM stores WHERE name = $1) AND e.id = k.id
                     LIMIT 1
                 ) e"
            ),
            // Refusals remembered for the pushed ids (usually none: one probe per key).
            client.prepare(
                "SELECT r.id, r.fingerprint, r.reason, r.actual_version
                 FROM UNNEST($2::bytea[]) AS k(id)
                 CROSS JOIN LATERAL (
                     SELECT r.id, r.fingerprint, r.reason, r.actual_version FROM rejections r
                     WHERE r.store_id = (SELECT id FROM stores WHERE name = $1) AND r.id = k.id
                 ) r"
            ),
            client.prepare(
                "INSERT INTO rejections (store_id, id, fingerprint, reason, actual_version)
                 SELECT $1, t.id, t.fingerprint, t.reason, t.actual_version
                 FROM UNNEST($2::bytea[], $3::bigint[], $4::text[], $5::bigint[])
                      AS t(id, fingerprint, reason, actual_version)
                 ON CONFLICT DO NOTHING"
            ),
            client.prepare(
                "SELECT k.stream, s.version
                 FROM UNNEST($2::text[]) AS k(stream)
                 CROSS JOIN LATERAL (
                     SELECT s.version FROM stream_versions s
                     WHERE s.store_id = (SELECT id FROM stores WHERE name = $1) AND s.stream = k.stream
                     LIMIT 1
                 ) s"
            ),
            // The versions the events after `versions_at` reached, per stream: a range of
            // the primary key (at most `FLUSH_EVERY` events and one push), whatever the
            // statistics, as the store's row is one row.
            client.prepare(
                "SELECT e.stream, max(e.version)
                 FROM stores s
                 CROSS JOIN LATERAL (
                     SELECT e.stream, e.version FROM events e
                     WHERE e.store_id = s.id AND e.position > s.versions_at AND e.position <= s.head
                 ) e
                 WHERE s.name = $1
                 GROUP BY e.stream"
            ),
            client.prepare(
                "INSERT INTO events (store_id, position, id, stream, version, type, data, meta, time, origin, schema_version, erased)
                 SELECT $1, t.position, t.id, t.stream, t.version, t.type, t.data, t.meta, t.time, $10, t.schema_version, t.erased
                 FROM UNNEST($2::bigint[], $3::bytea[], $4::text[], $5::bigint[], $6::text[],
                             $7::text[], $8::text[], $9::bigint[], $11::bigint[], $12::boolean[])
                      AS t(position, id, stream, version, type, data, meta, time, schema_version, erased)"
            ),
            client.prepare(
                "UPDATE stores SET head = $2, last_push = $3, versions_at = $4, ends = ends OR $5
                 WHERE id = $1"
            ),
            client.prepare("UPDATE stores SET refusals = true WHERE id = $1 AND NOT refusals"),
            client.prepare("SELECT pg_notify($1, $2)"),
            client.prepare(
                "SELECT id, position, stream, version, type, data, meta, time, origin, schema_version, erased
                 FROM events WHERE store_id = $1 AND position > $2 AND position <= $3
                 ORDER BY position LIMIT $4"
            ),
            client.prepare(
                "SELECT id, position, stream, version, type, data, meta, time, origin, schema_version, erased
                 FROM events WHERE store_id = $1 AND stream = ANY($2::text[])
                 ORDER BY position"
            ),
        )?;
        Ok(Statements {
            lock_store,
            guard_store,
            read_store,
            create_store,
            existing_ids,
            refused_ids,
            insert_rejections,
            stream_versions,
            tail_versions,
            insert_events,
            update_head,
            mark_refusals,
            notify,
            read_events,
            stream_events,
        })
    }
}

/// The current versions of `streams` (0 for a stream without events): each one's row in
/// `stream_versions` (one index probe each), raised by the events after the store's
/// `versions_at`. Both statements are sent at once; each sees the state after the lock.
pub(super) async fn stream_versions(
    client: &Client,
    st: &Statements,
    store: &str,
    streams: &[&str],
) -> Result<Map<String, u64>, StoreError> {
    let mut versions: Map<String, u64> = streams.iter().map(|s| ((*s).to_owned(), 0)).collect();
    if streams.is_empty() {
        return Ok(versions);
    }
    let by_row: [&(dyn ToSql + Sync); 2] = [&store, &streams];
    let by_store: [&(dyn ToSql + Sync); 1] = [&store];
    let (rows, tail) = tokio::try_join!(
        client.query(&st.stream_versions, &by_row),
        client.query(&st.tail_versions, &by_store),
    )?;
    for row in rows.iter().chain(&tail) {
        let version = stored_u64(row.try_get(1)?, "version")?;
        if let Some(v) = versions.get_mut(row.try_get::<_, &str>(0)?) {
            *v = (*v).max(version);
        }
    }
    Ok(versions)
}

/// The pushed streams whose last event is a lifecycle event (deleted, closed).
pub(super) async fn stream_ends(
    client: &Client,
    store: &str,
    streams: &[&str],
) -> Result<HashMap<String, StreamEnd>, StoreError> {
    let mut ends = HashMap::new();
    if streams.is_empty() {
        return Ok(ends);
    }
    // An unnamed statement, planned for the keys at hand: most stores have no rows.
    let rows = client
        .query_typed(
            "SELECT e.stream, e.kind FROM stream_ends e
             WHERE e.store_id = (SELECT id FROM stores WHERE name = $1)
               AND e.stream = ANY($2)",
            &[(&store, Type::TEXT), (&streams, Type::TEXT_ARRAY)],
        )
        .await?;
    for row in rows {
        if let Some(end) = stream_end_from(row.try_get(1)?)? {
            ends.insert(row.try_get::<_, String>(0)?, end);
        }
    }
    Ok(ends)
}

/// Erases the events of the streams `$2` below the versions `$3` (see [`crate::erasure`]).
pub(super) const ERASE_EVENTS: &str = "
    UPDATE events e SET data = 'null', meta = NULL, erased = true
    FROM UNNEST($2::text[], $3::bigint[]) AS t(stream, before)
    WHERE e.store_id = $1 AND e.stream = t.stream AND e.version < t.before AND NOT e.erased";

/// Stores what the push's streams' last events now do (see [`PushPlan::stream_ends`]).
pub(super) const UPSERT_STREAM_ENDS: &str = "
    INSERT INTO stream_ends (store_id, stream, kind)
    SELECT $1, t.stream, t.kind FROM UNNEST($2::text[], $3::text[]) AS t(stream, kind)
    ON CONFLICT (store_id, stream) DO UPDATE SET kind = excluded.kind";

/// The stored events among `ids`.
pub(super) async fn existing_ids(
    client: &Client,
    st: &Statements,
    store: &str,
    ids: &[&[u8]],
) -> Result<Vec<Row>, StoreError> {
    Ok(client.query(&st.existing_ids, &[&store, &ids]).await?)
}

/// The refusals remembered for `ids`, by id.
pub(super) async fn refused_ids(
    client: &Client,
    st: &Statements,
    store: &str,
    ids: &[&[u8]],
) -> Result<HashMap<EventId, Vec<Refusal>>, StoreError> {
    let mut refused: HashMap<EventId, Vec<Refusal>> = HashMap::new();
    for row in client.query(&st.refused_ids, &[&store, &ids]).await? {
        let actual: Option<i64> = row.try_get(3)?;
        refused
            .entry(stored_id(row.try_get::<_, &[u8]>(0)?)?)
            .or_default()
            .push(Refusal {
                // Stored as the same 64 bits, signed.
                fingerprint: row.try_get::<_, i64>(1)? as u64,
                reason: row.try_get(2)?,
                actual_version: actual
                    .map(|v| stored_u64(v, "actual_version"))
                    .transpose()?,
            });
    }
    Ok(refused)
}

/// Stores the refusals of `plan` (inside the push transaction).
pub(super) async fn remember_refusals(
    client: &Client,
    st: &Statements,
    store_id: i64,
    events: &[PushEvent],
    plan: &PushPlan,
) -> Result<(), StoreError> {
    let n = plan.refusals.len();
    let mut ids = Vec::with_capacity(n);
    let mut fingerprints = Vec::with_capacity(n);
    let mut reasons = Vec::with_capacity(n);
    let mut actuals = Vec::with_capacity(n);
    for (index, refusal) in &plan.refusals {
        let event = events
            .get(*index)
            .ok_or_else(|| StoreError::Task("push plan out of range".into()))?;
        ids.push(&event.id.0[..]);
        fingerprints.push(refusal.fingerprint as i64);
        reasons.push(refusal.reason.as_str());
        actuals.push(
            refusal
                .actual_version
                .map(|v| to_i64(v, "actual_version"))
                .transpose()?,
        );
    }
    let params: [&(dyn ToSql + Sync); 5] = [&store_id, &ids, &fingerprints, &reasons, &actuals];
    let mark: [&(dyn ToSql + Sync); 1] = [&store_id];
    tokio::try_join!(
        client.execute(&st.insert_rejections, &params),
        client.execute(&st.mark_refusals, &mark),
    )?;
    Ok(())
}

/// Stored events by id, from the `existing_ids` lookup: where each is and the digest of
/// its content (a retry repeats it; a reused id does not).
pub(super) fn placed_ids(rows: &[Row]) -> Result<HashMap<EventId, Stored>, StoreError> {
    let mut placed = HashMap::with_capacity(rows.len());
    for row in rows {
        placed.insert(
            stored_id(row.try_get::<_, &[u8]>(0)?)?,
            Stored::of(
                Placed {
                    position: stored_u64(row.try_get(1)?, "position")?,
                    version: stored_u64(row.try_get(2)?, "version")?,
                },
                row.try_get(3)?,
                row.try_get(4)?,
                stored_schema_version(row.try_get(5)?)?,
                row.try_get(6)?,
                row.try_get(7)?,
                row.try_get(8)?,
            ),
        );
    }
    Ok(placed)
}

pub(super) fn store_row(row: &Row) -> Result<(i64, u64, String), StoreError> {
    Ok((
        row.try_get(0)?,
        stored_u64(row.try_get(1)?, "head")?,
        row.try_get(2)?,
    ))
}

pub(super) fn event_from_row(row: &Row) -> Result<Event, StoreError> {
    Ok(Event {
        id: stored_id(row.try_get::<_, &[u8]>(0)?)?,
        position: stored_u64(row.try_get(1)?, "position")?,
        stream: row.try_get(2)?,
        version: stored_u64(row.try_get(3)?, "version")?,
        event_type: row.try_get(4)?,
        data: raw_json(row.try_get(5)?)?,
        meta: row
            .try_get::<_, Option<String>>(6)?
            .map(raw_json)
            .transpose()?,
        time: stored_u64(row.try_get(7)?, "time")?,
        origin: row.try_get(8)?,
        schema_version: stored_schema_version(row.try_get(9)?)?,
        pending: false,
        erased: row.try_get(10)?,
    })
}
