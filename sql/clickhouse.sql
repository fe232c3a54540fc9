-- ClickHouse side of cdc: the wide event table. Only SQL that both
-- ClickHouse 18.16 and 23.8+ accept (no DateTime64, TTL, CODEC,
-- LowCardinality or JSON type). Idempotent: `cdc migrate` runs it every deploy.
--
-- ReplacingMergeTree keyed by event_id: a redelivered event collapses into one
-- row, and `SELECT ... FINAL` shows each event once even before merges ran.
-- cdc_commit_lsn/cdc_seq record where in the WAL each row came from; on start
-- the connector reads the set of them past the slot's confirmed position to
-- skip the rows it already wrote (a set, not a maximum: an INSERT across
-- partitions is not atomic).
CREATE TABLE IF NOT EXISTS event_log (
    event_id         UUID,
    event_type       String,
    event_date_time  DateTime,
    environment      String,
    event_context    String,
    metadata_version UInt64,
    trace_id         String DEFAULT '',
    cdc_commit_lsn   UInt64 DEFAULT 0,
    cdc_seq          UInt64 DEFAULT 0
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(event_date_time)
ORDER BY (event_type, event_date_time, event_id)
