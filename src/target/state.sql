-- The tool's own state in the target database. Written only by shadan, always in the
-- same transaction as the data it describes; ignored by the leak audit.
CREATE SCHEMA IF NOT EXISTS shadan;

-- One row per cutover or sync run; `manifest` is what `--json` prints.
CREATE TABLE IF NOT EXISTS shadan.runs (
    run_id          bigserial   PRIMARY KEY,
    command         text        NOT NULL,
    mapping_name    text        NOT NULL,
    mapping_blake3  text        NOT NULL,
    tool_version    text        NOT NULL,
    source_snapshot text,
    started_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at     timestamptz,
    status          text        NOT NULL DEFAULT 'running',
    manifest        jsonb
);

-- The pid of the session holding the writer lock for the run: checkpoints are written
-- only while that session still holds it.
ALTER TABLE shadan.runs ADD COLUMN IF NOT EXISTS lock_pid int;

-- The blake3 of the run's stored manifest (`manifest::text`), which itself carries the
-- blake3 of the manifest before it: a chain `shadan history --check` walks.
ALTER TABLE shadan.runs ADD COLUMN IF NOT EXISTS manifest_blake3 text;

-- The key-range batches of each target table, with the checkpoint of each: `rows` and
-- `lanes` (the batch's multiset digest) are set in the transaction that wrote its rows.
CREATE TABLE IF NOT EXISTS shadan.batches (
    target_table text        NOT NULL,
    batch_no     int         NOT NULL,
    lower_key    text[],                -- exclusive; NULL: from the start
    upper_key    text[],                -- inclusive; NULL: to the end
    rows         bigint,                -- NULL until the batch is written
    lanes        bytea,
    run_id       bigint      NOT NULL,
    written_at   timestamptz,
    PRIMARY KEY (target_table, batch_no)
);

-- How each layout's bounds order keys: 'bytes' (byte order on both servers, whatever
-- their collations); NULL for layouts cut by an older shadan under the servers' own
-- collations, valid only where those order by bytes anyway.
ALTER TABLE shadan.batches ADD COLUMN IF NOT EXISTS key_order text;

-- The blake3 of the projection (own_retailer, scope, owner, only, columns) the layout was
-- cut for: a cutover resumes only under the same projection.
ALTER TABLE shadan.batches ADD COLUMN IF NOT EXISTS projection text;

-- Indexes and key constraints a cutover set aside to load a table without them, with the
-- statements that recreate them; rows leave in the transaction that recreates them.
CREATE TABLE IF NOT EXISTS shadan.deferred_indexes (
    target_table text NOT NULL,
    position     int  NOT NULL,
    create_sql   text NOT NULL,
    unique_columns text[],               -- a primary key or unique constraint's columns
    PRIMARY KEY (target_table, position)
);

-- Foreign keys a cutover set aside to load tables in any order, with the statements that
-- recreate them; rows leave in the transaction that recreates them.
CREATE TABLE IF NOT EXISTS shadan.deferred_foreign_keys (
    target_table text NOT NULL,
    name         text NOT NULL,
    create_sql   text NOT NULL,
    PRIMARY KEY (target_table, name)
);

-- Change tracking (sync by xmin). `horizon` is the 64-bit xmin of a source snapshot at
-- which the batch's checkpoint was exact: every source row whose transaction ended before
-- it is in the target as projected. `basis` is the blake3 of the projection and of the
-- source columns' physical definitions it held under. A sync reads only rows written at
-- or after the horizon while the basis is unchanged; NULL: read the whole batch.
ALTER TABLE shadan.batches ADD COLUMN IF NOT EXISTS horizon bigint;
ALTER TABLE shadan.batches ADD COLUMN IF NOT EXISTS basis text;

-- The prints of the rows each checkpoint counts (`target/prints.rs`): 8 bytes a row,
-- sorted. Sync reads them in full every night, so that telling a non-public change from
-- a public one never asks the target about the keys concerned.
ALTER TABLE shadan.batches ADD COLUMN IF NOT EXISTS prints bytea;
