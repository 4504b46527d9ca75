//! PostgreSQL backend: the tables, and the migration every instance runs at startup.

use super::settings::{quote_ident, PgSettings};
use crate::server::store::StoreError;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stores (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    epoch      TEXT NOT NULL,
    head       BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS streams (
    store_id BIGINT NOT NULL,
    stream   TEXT NOT NULL,
    version  BIGINT NOT NULL,
    PRIMARY KEY (store_id, stream)
) WITH (fillfactor = 50);
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

/// Every push rewrites the version row of each stream it touches: with half of each page
/// left free, the new row versions fit beside the old ones (HOT updates, no index
/// writes). Databases created before this setting get it at startup; a fillfactor that
/// an operator chose is kept.
const STREAMS_FILLFACTOR: &str = "
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_class
        WHERE oid = to_regclass('streams')
          AND EXISTS (SELECT 1 FROM unnest(reloptions) o WHERE o LIKE 'fillfactor=%')
    ) THEN
        ALTER TABLE streams SET (fillfactor = 50);
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
    tx.batch_execute(STREAMS_FILLFACTOR).await?;
    tx.batch_execute(EVENTS_SCHEMA_VERSION).await?;
    tx.batch_execute(EVENTS_ERASED).await?;
    tx.commit().await?;
    Ok(())
}
