//! PostgreSQL backend: the tables, and the migration every instance runs at startup.

use super::settings::{quote_ident, PgSettings};
use crate::server::store::StoreError;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stores (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    epoch      TEXT NOT NULL,
    head       BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- `stream_versions` holds every stream's version as of this position; the events
    -- after it (up to the head) hold the later ones.
    versions_at BIGINT NOT NULL DEFAULT 0,
    -- A random number each push that writes events sets: an instance's memory of the
    -- store is current while it finds the number its own last push set.
    last_push  BIGINT NOT NULL DEFAULT 0,
    -- Whether `rejections` / `stream_ends` ever had a row for this store (never reset):
    -- a push of a store with none skips looking them up.
    refusals   BOOLEAN NOT NULL DEFAULT false,
    ends       BOOLEAN NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS events (
    store_id BIGINT NOT NULL,
    position BIGINT NOT NULL,
    id       BYTEA NOT NULL,
    stream   TEXT NOT NULL,
    version  BIGINT NOT NULL,
    type     TEXT NOT NULL,
    data     TEXT NOT NULL,
    meta     TEXT,
    time     BIGINT NOT NULL,
    origin   TEXT,
    schema_version BIGINT NOT NULL DEFAULT 1,
    -- Erased (its stream's $StreamErased came later): data 'null', meta NULL.
    erased   BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (store_id, position),
    UNIQUE (store_id, id)
);
-- Streams that ever had a lifecycle event, and what their last event did ('deleted',
-- 'closed', or 'open' again): the push rules refuse a closed stream and let `no_stream`
-- restart a deleted one.
CREATE TABLE IF NOT EXISTS stream_ends (
    store_id BIGINT NOT NULL,
    stream   TEXT NOT NULL,
    kind     TEXT NOT NULL,
    PRIMARY KEY (store_id, stream)
);
CREATE TABLE IF NOT EXISTS rejections (
    store_id       BIGINT NOT NULL,
    id             BYTEA NOT NULL,
    fingerprint    BIGINT NOT NULL,
    reason         TEXT NOT NULL,
    actual_version BIGINT,
    PRIMARY KEY (store_id, id, fingerprint)
);
";

/// Stores gained what lets a push skip work (see [`SCHEMA`]): columns added to tables
/// created before them, without rewriting rows.
const STORES_COLUMNS: &str = "
ALTER TABLE stores ADD COLUMN IF NOT EXISTS versions_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE stores ADD COLUMN IF NOT EXISTS last_push BIGINT NOT NULL DEFAULT 0;
ALTER TABLE stores ADD COLUMN IF NOT EXISTS refusals BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE stores ADD COLUMN IF NOT EXISTS ends BOOLEAN NOT NULL DEFAULT false;
";

/// Databases written before `stream_versions` kept every stream's version current in the
/// table `streams`, rewritten by every push. That table becomes `stream_versions`, current
/// at each store's head; the stores' flags say what they hold. The stores and the table
/// are locked first, so that no push of an instance still running the older build is
/// half way through.
const STREAMS_TO_STREAM_VERSIONS: &str = "
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass('streams') AND relkind = 'r') THEN
        LOCK TABLE stores, streams IN ACCESS EXCLUSIVE MODE;
        ALTER TABLE streams RENAME TO stream_versions;
        UPDATE stores s SET
            versions_at = s.head,
            refusals = EXISTS (SELECT 1 FROM rejections r WHERE r.store_id = s.id),
            ends = EXISTS (SELECT 1 FROM stream_ends e WHERE e.store_id = s.id);
    END IF;
END $$;
";

/// The stream versions as of `stores.versions_at` (see `FLUSH_EVERY` in `push.rs`): a
/// push writes none; every so many events one statement brings them up to the head.
///
/// `streams` is kept as a view that shows nothing and takes no writes, as a fence: a
/// server of an older build (which kept the table `streams` current on every push) fails
/// to start on this database, and one still running fails its pushes, rather than number
/// events from versions nobody updates any more.
const STREAM_VERSIONS: &str = "
CREATE TABLE IF NOT EXISTS stream_versions (
    store_id BIGINT NOT NULL,
    stream   TEXT NOT NULL,
    version  BIGINT NOT NULL,
    PRIMARY KEY (store_id, stream)
) WITH (fillfactor = 50);
CREATE OR REPLACE VIEW streams AS
    SELECT NULL::bigint AS store_id, NULL::text AS stream, NULL::bigint AS version WHERE false;
";

/// With half of each page of `stream_versions` left free, the rows that a flush rewrites
/// fit beside the old ones (HOT updates, no index writes). Databases created before this
/// setting get it at startup; a fillfactor that an operator chose is kept.
const STREAMS_FILLFACTOR: &str = "
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_class
        WHERE oid = to_regclass('stream_versions')
          AND EXISTS (SELECT 1 FROM unnest(reloptions) o WHERE o LIKE 'fillfactor=%')
    ) THEN
        ALTER TABLE stream_versions SET (fillfactor = 50);
    END IF;
END $$;
";

/// Events gained a schema version: tables created before it get the column, every event
/// stored then being at version 1 (the default). BIGINT, as schema versions go up to
/// 2^32 - 1. Adding a column with a constant default rewrites no rows (PostgreSQL 11+).
const EVENTS_SCHEMA_VERSION: &str =
    "ALTER TABLE events ADD COLUMN IF NOT EXISTS schema_version BIGINT NOT NULL DEFAULT 1";

/// Events gained an erased mark: tables created before it get the column (nothing stored
/// then was erased), without rewriting rows.
const EVENTS_ERASED: &str =
    "ALTER TABLE events ADD COLUMN IF NOT EXISTS erased BOOLEAN NOT NULL DEFAULT false";

/// Serialises schema creation between instances starting at the same time.
const MIGRATION_LOCK: i64 = 0x616e_6e61_6c73; // "annals"

/// Creates the schema (if `schema=` names one) and the tables, and brings older databases
/// up to date, under an advisory lock so that instances starting together take turns.
pub(super) async fn migrate(settings: &PgSettings) -> Result<(), StoreError> {
    let mut client = settings.connect().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    if let Some(schema) = &settings.schema {
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(schema)
        ))
        .await?;
    }
    tx.batch_execute(SCHEMA).await?;
    tx.batch_execute(STORES_COLUMNS).await?;
    tx.batch_execute(STREAMS_TO_STREAM_VERSIONS).await?;
    tx.batch_execute(STREAM_VERSIONS).await?;
    tx.batch_execute(STREAMS_FILLFACTOR).await?;
    tx.batch_execute(EVENTS_SCHEMA_VERSION).await?;
    tx.batch_execute(EVENTS_ERASED).await?;
    tx.commit().await?;
    Ok(())
}
