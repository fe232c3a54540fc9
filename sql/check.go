package sql

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// ErrNotMigrated is a schema that lacks what `cdc run` cannot work
// without: `cdc migrate` makes it.
var ErrNotMigrated = errors.New("run `cdc migrate` as the admin")

// ErrNotGranted is a role that lacks a privilege `cdc run` cannot work
// without: an admin grants it (migrate does not: it runs as another role).
var ErrNotGranted = errors.New("grant, as the admin, what the role cdc connects as lacks (docs/operations.md, Grants)")

// ErrReadOnly is a role whose transactions are read-only by default: no
// privilege the admin could grant, but a setting to lift where it is
// made, which the lack's Grant names along with who may (the admin of
// docs/operations.md may not alter a role).
var ErrReadOnly = errors.New("lift the setting that makes the role cdc connects as read-only (docs/operations.md, Grants)")

// ErrClickHouseReadOnly is a ClickHouse user whose profile or DSN sets
// readonly: no grant, and no PostgreSQL role, but a setting of the user's
// to change, which the lack's Grant names.
var ErrClickHouseReadOnly = errors.New("make the ClickHouse user cdc connects as writable (docs/operations.md, Grants)")

// Lack is something `cdc migrate` makes that a schema lacks: never
// migrated, or migrated by an earlier build and not since. `cdc run` looks
// once at its start (CheckPostgres, CheckClickHouse): a Fatal lack stops
// it, the others it names in a warning and works without.
type Lack struct {
	What   string // what is missing, as migrate would make it
	Effect string // what cdc run does without it
	Fatal  bool   // cdc run cannot work without it
	// Grant is, for a privilege the role cdc connects as lacks, the
	// statement an admin runs to give it; "" for what migrate makes.
	Grant string
	// ReadOnly is a read-only default rather than a privilege: Grant
	// lifts it, and says who may.
	ReadOnly bool
	// Err is what a fatal lack's error wraps when none of Fatal's kinds
	// says what to do about it.
	Err error
}

// Fatal is the error for the fatal lacks among lacks, wrapping
// ErrNotMigrated for what migrate makes, ErrNotGranted for a missing
// privilege, ErrReadOnly for a read-only role, and a lack's own Err; nil
// when there are none.
func Fatal(lacks []Lack) error {
	var migrate, grant, readOnly, own []string
	var ownErr error
	for _, l := range lacks {
		switch {
		case !l.Fatal:
		case l.Err != nil:
			// One such lack at most (CheckClickHouse's read-only user).
			own, ownErr = append(own, l.What+": "+l.Effect+": "+l.Grant), l.Err
		case l.ReadOnly:
			readOnly = append(readOnly, l.What+": "+l.Effect+": "+l.Grant)
		case l.Grant != "":
			grant = append(grant, l.What+": "+l.Effect+": "+l.Grant)
		default:
			migrate = append(migrate, l.What+": "+l.Effect)
		}
	}
	var errs []error
	for _, g := range []struct {
		lines []string
		err   error
	}{{migrate, ErrNotMigrated}, {readOnly, ErrReadOnly}, {grant, ErrNotGranted}, {own, ownErr}} {
		if len(g.lines) > 0 {
			errs = append(errs, fmt.Errorf("%s: %w", strings.Join(g.lines, "; "), g.err))
		}
	}
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	// One line, as every other error cdc run logs.
	format := strings.TrimSuffix(strings.Repeat("%w; ", len(errs)), "; ")
	args := make([]any, len(errs))
	for i, err := range errs {
		args[i] = err
	}
	return fmt.Errorf(format, args...)
}

// checkPostgresQuery reads, from the catalogs alone, what of migrate's
// PostgreSQL schema there is. An index counts by its leading columns and
// not by its name (one an operator made under another name serves the
// same queries), and only when valid and not partial: PostgreSQL reads no
// invalid index, a CONCURRENTLY build's leftover; only a btree's key
// columns count: a hash or BRIN index serves no keyset page nor range,
// and a column an index only INCLUDEs orders nothing. The tables are found as
// every other query of cdc finds them, through the search path.
const checkPostgresQuery = `
WITH t AS (SELECT to_regclass('cdc_dead_letter') AS dead, to_regclass('outbox') AS outbox),
ix AS (
	SELECT i.indrelid, a0.attname AS first, a1.attname AS second
	FROM pg_index i
	JOIN t ON i.indrelid IN (t.dead, t.outbox)
	JOIN pg_attribute a0 ON a0.attrelid = i.indrelid AND a0.attnum = i.indkey[0]
	LEFT JOIN pg_attribute a1 ON a1.attrelid = i.indrelid AND a1.attnum = i.indkey[1] AND i.indnkeyatts >= 2
	JOIN pg_class ic ON ic.oid = i.indexrelid
	JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'btree'
	WHERE i.indisvalid AND i.indpred IS NULL)
SELECT t.dead IS NOT NULL,
	EXISTS (SELECT 1 FROM ix WHERE ix.indrelid = t.dead AND ix.first = 'event_id'),
	EXISTS (SELECT 1 FROM ix WHERE ix.indrelid = t.dead AND ix.first = 'commit_lsn'),
	t.outbox IS NOT NULL,
	EXISTS (SELECT 1 FROM ix WHERE ix.indrelid = t.outbox AND ix.first = 'event_date_time'),
	EXISTS (SELECT 1 FROM ix WHERE ix.indrelid = t.outbox AND ix.first = 'event_date_time' AND ix.second = 'id'),
	quote_ident(current_user),
	coalesce(has_table_privilege(t.dead, 'SELECT'), true),
	coalesce(has_table_privilege(t.dead, 'INSERT'), true),
	coalesce(seq.name, ''),
	coalesce(has_sequence_privilege(seq.name, 'USAGE, UPDATE'), true),
	coalesce(has_table_privilege(t.outbox, 'SELECT'), true),
	coalesce(has_table_privilege(t.outbox, 'DELETE'), true),
	-- The search path skips a schema the role may not use: its tables
	-- look missing.
	coalesce((SELECT string_agg(quote_ident(n.nspname), ', ' ORDER BY n.nspname)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relname = 'cdc_dead_letter' AND c.relkind IN ('r', 'p') AND NOT has_schema_privilege(n.oid, 'USAGE')), ''),
	-- A role, database or DSN that makes transactions read-only by
	-- default: no grant is missing, yet every write of cdc's fails.
	current_setting('default_transaction_read_only')::bool,
	(SELECT source FROM pg_settings WHERE name = 'default_transaction_read_only'),
	quote_ident(current_database()),
	EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = t.dead AND attname = 'slot_name' AND NOT attisdropped),
	EXISTS (SELECT 1 FROM ix WHERE ix.indrelid = t.dead AND ix.first = 'slot_name')
FROM t
LEFT JOIN LATERAL (
	-- nextval() for the id's default needs USAGE (or UPDATE) on its
	-- sequence; an identity column's INSERT needs none.
	SELECT pg_get_serial_sequence(t.dead::text, 'id') AS name
	FROM pg_attribute a
	WHERE a.attrelid = t.dead AND a.attname = 'id' AND a.attidentity = ''
) seq ON true`

// CheckPostgres reports what `cdc run` would lack of migrate's PostgreSQL
// schema: cdc_dead_letter (fatal: each replication session's start reads
// it), its indexes, and, when retention deletes (retention), the
// outbox's index. The publication and the slot are looked at by each
// session (package replication), and the outbox's absence there too (its
// publication cannot publish it). One query of the catalogs: cheap on any
// database.
//
// It also names the privileges on those tables that the role it connects
// as lacks of what docs/operations.md grants the runner: those on
// cdc_dead_letter are fatal (without them cdc would reconnect for ever, or
// stall at the first refused row, a permission error away from saying
// why), those retention needs on the outbox are not. A role whose
// transactions are read-only by default is as fatal (readOnlyLack).
func CheckPostgres(ctx context.Context, conn pgQuerier, retention bool) ([]Lack, error) {
	var dead, deadByEvent, deadByPosition, outbox, outboxByTime, outboxByTimeID bool
	var role, seq string
	var deadSelect, deadInsert, seqUsage, outboxSelect, outboxDelete bool
	var unusable string // schemas holding a cdc_dead_letter the role may not use
	var readOnly bool
	var readOnlySource, database string
	var deadBySlot, deadSlotIndexed bool
	if err := conn.QueryRow(ctx, checkPostgresQuery).Scan(&dead, &deadByEvent, &deadByPosition, &outbox, &outboxByTime, &outboxByTimeID,
		&role, &deadSelect, &deadInsert, &seq, &seqUsage, &outboxSelect, &outboxDelete, &unusable,
		&readOnly, &readOnlySource, &database, &deadBySlot, &deadSlotIndexed); err != nil {
		return nil, fmt.Errorf("look up cdc's tables and indexes in postgres: %w", err)
	}
	var lacks []Lack
	if !dead && unusable != "" {
		// Not a migrate to run: migrate, as the admin, finds the table.
		return append(lacks, Lack{
			What:   "role " + role + " has no USAGE on schema " + unusable + ", which holds cdc_dead_letter (and, likely, outbox)",
			Effect: "its search path skips that schema, so cdc finds none of its tables: every replication session's start reads cdc_dead_letter, so cdc would never stream",
			Fatal:  true,
			Grant:  "GRANT USAGE ON SCHEMA " + unusable + " TO " + role,
		}), nil
	}
	if !dead {
		return append(lacks, Lack{
			What:   "table cdc_dead_letter does not exist",
			Effect: "every replication session's start reads it, and the rows ClickHouse refuses are set aside in it, so cdc would never stream",
			Fatal:  true,
		}), nil
	}
	if readOnly {
		lacks = append(lacks, readOnlyLack(role, database, readOnlySource, retention && outbox))
	}
	lacks = append(lacks, grantLacks(role, seq, deadSelect, deadInsert, seqUsage, retention && outbox, outboxSelect, outboxDelete)...)
	if !deadByPosition {
		lacks = append(lacks, Lack{
			What:   "cdc_dead_letter has no index on (commit_lsn, seq) (cdc_dead_letter_position)",
			Effect: "each replication session's start reads every dead letter the table keeps to find those past the slot; with many letters that outlasts the session's 30 s set-up and cdc stops streaming",
		})
	}
	if !deadBySlot {
		lacks = append(lacks, Lack{
			What:   "cdc_dead_letter has no slot_name column",
			Effect: "its letters are every pipeline's, as with earlier builds: where two pipelines (two slots) share this database, a row one pipeline's ClickHouse refused is taken as stored by the other, and replayed into one ClickHouse only",
		})
	} else if !deadSlotIndexed {
		lacks = append(lacks, Lack{
			What:   "cdc_dead_letter has no index on slot_name (cdc_dead_letter_slot)",
			Effect: "each count of this pipeline's dead letters (cdc_dead_letters_waiting, once a minute, and cdc status's) reads every letter the table keeps, other pipelines' too",
		})
	}
	if !deadByEvent {
		lacks = append(lacks, Lack{
			What:   "cdc_dead_letter has no index on event_id (cdc_dead_letter_event_id)",
			Effect: "each row ClickHouse refuses reads every dead letter the table keeps to find an earlier letter of its event, while its batch waits to be acknowledged",
		})
	}
	switch {
	case !retention || !outbox || outboxByTimeID:
	case outboxByTime:
		lacks = append(lacks, Lack{
			What:   "outbox has the index an earlier migrate made, on event_date_time alone, not outbox_event_date_time_id_idx on (event_date_time, id)",
			Effect: "each retention batch inside a group of rows sharing one event_date_time (a bulk insert) reads and sorts the rest of the group",
		})
	default:
		lacks = append(lacks, Lack{
			What:   "outbox has no index on event_date_time (outbox_event_date_time_id_idx)",
			Effect: "each retention batch (CDC_OUTBOX_RETENTION) reads and sorts the whole outbox",
		})
	}
	return lacks, nil
}

// grantLacks names the privileges role lacks of those cdc run uses.
// Retention needs both SELECT and DELETE on the outbox (one statement
// selects a batch and deletes it), so they are named together.
func grantLacks(role, seq string, deadSelect, deadInsert, seqUsage, retention, outboxSelect, outboxDelete bool) []Lack {
	var lacks []Lack
	if !deadSelect {
		lacks = append(lacks, Lack{
			What:   "role " + role + " has no SELECT on cdc_dead_letter",
			Effect: "every replication session's start reads the rows set aside in it, so cdc would never stream",
			Fatal:  true,
			Grant:  "GRANT SELECT ON cdc_dead_letter TO " + role,
		})
	}
	if !deadInsert {
		lacks = append(lacks, Lack{
			What:   "role " + role + " has no INSERT on cdc_dead_letter",
			Effect: "the rows ClickHouse refuses are set aside in it, so at the first one cdc would stop acknowledging and retry for ever",
			Fatal:  true,
			Grant:  "GRANT INSERT ON cdc_dead_letter TO " + role,
		})
	}
	if seq != "" && !seqUsage {
		lacks = append(lacks, Lack{
			What:   "role " + role + " has no USAGE on sequence " + seq,
			Effect: "the rows ClickHouse refuses are set aside in cdc_dead_letter, whose ids it numbers, so at the first one cdc would stop acknowledging and retry for ever",
			Fatal:  true,
			Grant:  "GRANT USAGE ON SEQUENCE " + seq + " TO " + role,
		})
	}
	if retention && (!outboxSelect || !outboxDelete) {
		var missing []string
		if !outboxSelect {
			missing = append(missing, "SELECT")
		}
		if !outboxDelete {
			missing = append(missing, "DELETE")
		}
		lacks = append(lacks, Lack{
			What:   "role " + role + " has no " + strings.Join(missing, ", ") + " on outbox",
			Effect: "retention (CDC_OUTBOX_RETENTION) needs both to delete old outbox rows: each sweep fails, and the outbox keeps every row",
			Grant:  "GRANT SELECT, DELETE ON outbox TO " + role,
		})
	}
	return lacks
}

// readOnlyLack is the lack of a role whose transactions are read-only by
// default (default_transaction_read_only = on): it holds every grant, and
// PostgreSQL still refuses each INSERT into cdc_dead_letter (SQLSTATE
// 25006), so at the first row ClickHouse refuses cdc retried for ever,
// acknowledging nothing more, and each retention sweep failed. The
// statement that lifts it depends on where it is set (source, as
// pg_settings says): a role's setting for one database outranks the
// role's own, which outranks the database's and the server's; one the
// DSN sends (options, PGOPTIONS) outranks them all.
func readOnlyLack(role, database, source string, retention bool) Lack {
	effect := "PostgreSQL refuses every write of cdc's: the rows ClickHouse refuses are set aside in cdc_dead_letter, so at the first one cdc would stop acknowledging and retry for ever"
	if retention {
		effect += ", and each retention sweep (CDC_OUTBOX_RETENTION) fails"
	}
	// ALTER ROLE takes a superuser (PostgreSQL 15: or CREATEROLE): the
	// admin of docs/operations.md, the tables' owner, is refused it
	// ("permission denied"), so the fix says who runs it.
	const superuser = "as a superuser, "
	var where, fix string
	switch source {
	case "client":
		where = "by CDC_PG_DSN's options or PGOPTIONS"
		fix = "take default_transaction_read_only out of CDC_PG_DSN's options and PGOPTIONS"
	case "database user":
		where = "for the role in database " + database
		fix = superuser + "ALTER ROLE " + role + " IN DATABASE " + database + " SET default_transaction_read_only = off"
	case "user":
		where = "for the role"
		fix = superuser + "ALTER ROLE " + role + " SET default_transaction_read_only = off"
	case "database":
		where = "for database " + database
		fix = superuser + "ALTER ROLE " + role + " SET default_transaction_read_only = off"
	default:
		where = "in the server's configuration (" + source + ")"
		fix = superuser + "ALTER ROLE " + role + " SET default_transaction_read_only = off"
	}
	return Lack{
		What:     "role " + role + "'s transactions are read-only (default_transaction_read_only = on, set " + where + ")",
		Effect:   effect,
		Fatal:    true,
		Grant:    fix,
		ReadOnly: true,
	}
}

// CheckClickHouse reports what `cdc run` would lack of migrate's
// ClickHouse schema: event_log (fatal: nothing can be stored), and its
// engine. Its columns are the sink's to read (a missing
// cdc_commit_lsn/cdc_seq is warned of by each session's start). It also
// names a user that may not insert at all (checkReadonly, fatal).
func CheckClickHouse(ctx context.Context, conn driver.Conn) ([]Lack, error) {
	lacks, err := checkReadonly(ctx, conn)
	if err != nil || len(lacks) > 0 {
		// Read-only, nothing else matters, and a user refused its
		// settings is refused the next look too.
		return lacks, err
	}
	return checkEventLog(ctx, conn)
}

// checkReadonly names a ClickHouse user that may not insert at all: its
// profile, or the DSN, sets readonly (1, or 2: settings may change, data
// may not). It holds every other right, reads event_log at start, and
// then has every INSERT refused ("Cannot insert into table in readonly
// mode", code 164): cdc run retried its first batch for ever, never
// ready. The least-privilege user of docs/operations.md (Grants) forbids
// DDL with allow_ddl = 0 instead.
func checkReadonly(ctx context.Context, conn driver.Conn) ([]Lack, error) {
	var readonly string
	if err := conn.QueryRow(ctx, "SELECT toString(value) FROM system.settings WHERE name = 'readonly'").Scan(&readonly); err != nil {
		// A user whose profile sets readonly = 1 is refused every query
		// that sends a setting (code 164, READONLY: "Cannot modify '…'
		// setting in readonly mode"), as clickhouse-go sends the DSN's
		// with each one on newer servers: this look too, and every
		// INSERT after it.
		var ex *clickhouse.Exception
		if !errors.As(err, &ex) || ex.Code != 164 {
			return nil, fmt.Errorf("read the clickhouse user's readonly setting: %w", err)
		}
		readonly = "1, refusing the settings CDC_CLICKHOUSE_DSN sends: " + ex.Message
	}
	if readonly == "0" {
		return nil, nil
	}
	return []Lack{{
		What:   "the ClickHouse user of CDC_CLICKHOUSE_DSN is read-only (readonly = " + readonly + ")",
		Effect: "ClickHouse refuses every INSERT into event_log, so cdc would retry its first batch for ever",
		Fatal:  true,
		Grant:  "set readonly = 0 for that user (its profile in users.xml, or ALTER USER … SETTINGS readonly = 0 where SQL access control is on; allow_ddl = 0 still keeps it from DDL) and take readonly out of CDC_CLICKHOUSE_DSN",
		Err:    ErrClickHouseReadOnly,
	}}, nil
}

// checkEventLog names an event_log that is missing or of an engine that
// does not collapse an event stored twice.
func checkEventLog(ctx context.Context, conn driver.Conn) ([]Lack, error) {
	rows, err := conn.Query(ctx, "SELECT engine FROM system.tables WHERE database = currentDatabase() AND name = 'event_log'")
	if err != nil {
		return nil, fmt.Errorf("look up event_log in clickhouse: %w", err)
	}
	defer rows.Close()
	var engine string
	found := rows.Next()
	if found {
		if err := rows.Scan(&engine); err != nil {
			return nil, fmt.Errorf("look up event_log in clickhouse: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up event_log in clickhouse: %w", err)
	}
	switch {
	case !found:
		return []Lack{{
			What:   "table event_log does not exist in ClickHouse's database",
			Effect: "cdc has nowhere to store events and would retry its first batch for ever",
			Fatal:  true,
		}}, nil
	// ReplicatedReplacingMergeTree too. A Distributed table's engine says
	// nothing of the tables under it, which a look at start cannot judge.
	case strings.HasSuffix(engine, "ReplacingMergeTree") || engine == "Distributed":
		return nil, nil
	default:
		return []Lack{{
			What:   "event_log's engine is " + engine + ", not ReplacingMergeTree",
			Effect: "an event stored twice (a replay after a crash, cdc backfill or cdc deadletter replay over stored events) stays twice: SELECT … FINAL does not collapse it",
		}}, nil
	}
}
