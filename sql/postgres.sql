-- PostgreSQL side of cdc: the outbox table applications insert into, and the
-- insert-only publication the connector's slot streams. Every statement is
-- idempotent and takes no lock on an existing outbox: `cdc migrate` runs this
-- on every deploy, while the application inserts.
-- {{.Publication}} is replaced by CDC_PUBLICATION (validated as an identifier).

-- Two migrates at once (two replicas' init containers on a new database)
-- would each find the table or the publication missing and both create
-- it, and the second fail on a duplicate key of the catalog: they take
-- turns. The lock is the script's transaction's, released at its end,
-- before the outbox's index is built.
SELECT pg_advisory_xact_lock(hashtext('cdc migrate'));

-- Created only where the search path finds no outbox, as every other
-- query of cdc (and the application's INSERT) finds it: IF NOT EXISTS
-- looks in the one schema it would create in, and with another schema put
-- first on the path since (ALTER DATABASE … SET search_path) it made a
-- second, empty outbox there, which the application then wrote to and no
-- publication sent.
DO $outbox$
BEGIN
    IF to_regclass('outbox') IS NULL THEN
        CREATE TABLE outbox (
            id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
            event_type       text        NOT NULL,
            event_date_time  timestamptz NOT NULL DEFAULT now(),
            environment      text        NOT NULL,
            event_context    json        NOT NULL,
            metadata_version bigint      NOT NULL DEFAULT 1,
            -- W3C trace context of the request that produced the event (optional).
            traceparent      text
        );
    END IF;
END
$outbox$;

-- The outbox's index, outbox_event_date_time_id_idx ON outbox
-- (event_date_time, id), is not here: `cdc migrate` builds it after this file,
-- CONCURRENTLY (sql/index.go). A CREATE INDEX here, even IF NOT EXISTS
-- finding it there, would lock out the application's inserts while it waits
-- for their open transactions, on every deploy.

-- Rows ClickHouse refused, set aside with the reason so an operator can see,
-- fix and replay them (`cdc deadletter replay`). Never written by applications.
-- Found, like the outbox, through the search path.
DO $dead$
BEGIN
    IF to_regclass('cdc_dead_letter') IS NULL THEN
        CREATE TABLE cdc_dead_letter (
            id          bigserial   PRIMARY KEY,
            event_id    uuid,
            commit_lsn  pg_lsn      NOT NULL,
            seq         bigint      NOT NULL,
            row_data    jsonb       NOT NULL,
            error       text        NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            slot_name   text
        );
    -- The slot whose pipeline set the letter aside (deadletter.Store): two
    -- pipelines of one database, each with its slot and its ClickHouse,
    -- share this table, and a row one ClickHouse refused is missing from
    -- that one only. NULL: set aside by an earlier build, every
    -- pipeline's. Added without a default, so no row is rewritten; looked
    -- up first, so that a migrate finding it takes no lock on the table.
    ELSIF NOT EXISTS (SELECT 1 FROM pg_attribute
            WHERE attrelid = to_regclass('cdc_dead_letter') AND attname = 'slot_name' AND NOT attisdropped) THEN
        ALTER TABLE cdc_dead_letter ADD COLUMN slot_name text;
    END IF;
END
$dead$;

-- A refused row is set aside once: the connector and `cdc backfill` look
-- an event up here before they add it again (deadletter.Put). Only cdc
-- writes this table, so a plain CREATE INDEX holds up nothing but cdc's
-- own dead letters, for as long as the build takes.
CREATE INDEX IF NOT EXISTS cdc_dead_letter_event_id ON cdc_dead_letter (event_id);

-- Each replication session's start reads the letters at positions past the
-- slot's (deadletter.Store.Written), a range that holds few or none: by
-- this index, not by a scan of every letter the table keeps, which could
-- outlast the session's set-up timeout and stop cdc from streaming at all.
CREATE INDEX IF NOT EXISTS cdc_dead_letter_position ON cdc_dead_letter (commit_lsn, seq);

-- Each pipeline counts its own letters (the cdc_dead_letters_waiting
-- gauge, once a minute; cdc status's count) by slot_name: by this index, not by a
-- scan of every letter another pipeline's outage set aside (51 ms a count
-- with 500,000 of them, 1 ms by the index).
CREATE INDEX IF NOT EXISTS cdc_dead_letter_slot ON cdc_dead_letter (slot_name);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = '{{.Publication}}') THEN
        CREATE PUBLICATION "{{.Publication}}" FOR TABLE outbox WITH (publish = 'insert');
    END IF;
END
$$;
