// Package sql holds the DDL that `cdc migrate` applies: the outbox table and
// publication in PostgreSQL and the event_log table in ClickHouse. Import it
// under an alias (ddl) where it meets database/sql.
package sql

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

//go:embed postgres.sql
var postgresDDL string

//go:embed clickhouse.sql
var clickhouseDDL string

// OutboxTable is the table applications insert their events into, found
// on the search path. The publication migrate creates publishes it alone:
// cdc ships every row its publication sends into event_log.
const OutboxTable = "outbox"

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// ValidIdentifier reports whether name is safe to splice into DDL as a slot
// or publication name: lowercase letters, digits and underscores.
func ValidIdentifier(name string) bool { return identRE.MatchString(name) }

// Postgres returns the PostgreSQL migration for the given publication name.
func Postgres(publication string) (string, error) {
	if !ValidIdentifier(publication) {
		return "", fmt.Errorf("publication name %q: want lowercase letters, digits and _", publication)
	}
	return strings.ReplaceAll(postgresDDL, "{{.Publication}}", publication), nil
}

// ClickHouse returns the ClickHouse statements, one per element: the native
// protocol takes a single statement per query.
func ClickHouse() []string {
	var out []string
	// Comments go first: they may hold semicolons.
	for _, stmt := range strings.Split(stripComments(clickhouseDDL), ";") {
		if stmt = strings.TrimSpace(stmt); stmt != "" {
			out = append(out, stmt)
		}
	}
	return out
}

func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// pgExecer is what MigratePostgres needs of a PostgreSQL connection.
type pgExecer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// MigratePostgres creates the outbox table, the dead-letter table and the
// publication if they are missing, then builds the outbox's index (and
// drops the one it replaces) without stopping inserts, reporting to w each
// index it builds or drops. Safe to run any number of times, on a live
// database.
func MigratePostgres(ctx context.Context, conn pgQuerier, publication string, w io.Writer) error {
	ddl, err := Postgres(publication)
	if err != nil {
		return err
	}
	if err := checkOutbox(ctx, conn); err != nil {
		return fmt.Errorf("migrate postgres: %w", err)
	}
	// One multi-statement query, so one implicit transaction: it creates
	// what is missing and takes no lock on an existing outbox.
	if _, err := conn.Exec(ctx, ddl); err != nil {
		return fmt.Errorf("migrate postgres: %w", err)
	}
	if err := checkPublication(ctx, conn, publication); err != nil {
		return fmt.Errorf("migrate postgres: %w", err)
	}
	if err := migrateOutboxIndex(ctx, conn, w); err != nil {
		return fmt.Errorf("migrate postgres: %w", err)
	}
	return nil
}

// outboxColumns are the outbox columns cdc's own statements name: its
// index, the keyset pages of backfill and verify, retention's deletes.
var outboxColumns = []string{"id", "event_date_time"}

// checkOutbox refuses an outbox the search path finds that lacks
// outboxColumns: not cdc's, but an application's table of that name from
// before cdc (another outbox pattern's). Before anything is made: the
// publication would publish that table, and the index build failed on it,
// saying the next migrate would build it again. Columns added to cdc's
// outbox (docs/publishing.md) are no matter.
func checkOutbox(ctx context.Context, conn pgQuerier) error {
	var table string
	var missing []string
	err := conn.QueryRow(ctx, `SELECT format('%I.%I', n.nspname, c.relname),
			array(SELECT w FROM unnest($1::text[]) WITH ORDINALITY AS u(w, i)
				WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a
					WHERE a.attrelid = c.oid AND a.attname = w AND a.attnum > 0 AND NOT a.attisdropped)
				ORDER BY i)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = to_regclass($2)`, outboxColumns, OutboxTable).Scan(&table, &missing)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil // migrate creates it
	case err != nil:
		return fmt.Errorf("look up the columns of %s: %w", OutboxTable, err)
	case len(missing) > 0:
		return fmt.Errorf("table %s has no column %s: it is not the outbox cdc reads (docs/publishing.md, The outbox row), but a table of that name from before cdc: "+
			"rename it, or give cdc's outbox a schema of its own, first on the search_path of cdc's roles and of the application's inserts; then run cdc migrate again",
			table, strings.Join(missing, ", "))
	}
	return nil
}

// checkPublication refuses a publication that already existed in a shape
// `cdc run` refuses at every start, so that migrate does not say
// "migrated" and create a slot for it: one that does not publish inserts,
// or does not publish one table named outbox alone (FOR ALL TABLES, or
// tables added since). The rules are run's (replication's
// prepareSlot and checkPublicationTables); migrate leaves the publication
// as it is, since another may have made it so on purpose.
func checkPublication(ctx context.Context, conn pgQuerier, publication string) error {
	var inserts bool
	var tables []string
	var outbox int
	err := conn.QueryRow(ctx, `SELECT p.pubinsert,
			ARRAY(SELECT format('%I.%I', t.schemaname, t.tablename) FROM pg_publication_tables t
				WHERE t.pubname = p.pubname
				ORDER BY t.tablename <> $2, array_position(current_schemas(false), t.schemaname::text) NULLS LAST, 1 LIMIT 6),
			(SELECT count(*) FROM pg_publication_tables t WHERE t.pubname = p.pubname AND t.tablename = $2)
		FROM pg_publication p WHERE p.pubname = $1`, publication, OutboxTable).Scan(&inserts, &tables, &outbox)
	if err != nil {
		return fmt.Errorf("look up publication %s: %w", publication, err)
	}
	if !inserts {
		return fmt.Errorf("publication %s exists and does not publish inserts, the only changes cdc ships: make it publish them (ALTER PUBLICATION %s SET (publish = 'insert')), or set CDC_PUBLICATION to another name", publication, publication)
	}
	switch {
	case outbox == 0:
		return fmt.Errorf("publication %s exists and does not publish the %s table: set CDC_PUBLICATION to a publication of the outbox alone, or to a new name for migrate to create one", publication, OutboxTable)
	case len(tables) > 1:
		// The outbox first, of several the one the search path finds,
		// as run names them.
		others := tables[1:]
		if len(others) > 4 {
			others = append(others[:4:4], "…")
		}
		return fmt.Errorf("publication %s exists and publishes %s besides %s, and cdc ships every row its publication sends into event_log: drop them from it (ALTER PUBLICATION %s DROP TABLE …; not possible FOR ALL TABLES), or set CDC_PUBLICATION to a new name for migrate to create a publication of the outbox alone", publication, strings.Join(others, ", "), tables[0], publication)
	}
	return nil
}

// MigrateClickHouse creates the event_log table if it is missing.
func MigrateClickHouse(ctx context.Context, conn driver.Conn) error {
	for _, stmt := range ClickHouse() {
		if err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("migrate clickhouse: %w", err)
		}
	}
	return nil
}

// CreateSlot creates the logical replication slot if it is missing. Migrate
// creates it, not only `cdc run`: a slot sees only changes made after it
// exists, so events published between the deploy and the connector's first
// start would otherwise never be streamed.
func CreateSlot(ctx context.Context, conn pgQuerier, slot string) (created bool, err error) {
	if !ValidIdentifier(slot) {
		return false, fmt.Errorf("slot name %q: want lowercase letters, digits and _", slot)
	}
	// Slot names are cluster-wide: a slot of that name in another database
	// is not ours and cannot stream this one.
	// One of another plugin (test_decoding, wal2json) is not cdc's either:
	// cdc run refuses it at every start.
	// One PostgreSQL invalidated (max_slot_wal_keep_size exceeded while
	// nothing read it: a deployment removed and its slot left, an outage)
	// cannot be streamed from either: cdc run exits 1 at every start.
	var db, ours, plugin, walStatus string
	for deadline := time.Now().Add(slotMadeWithin); ; {
		err = conn.QueryRow(ctx, `SELECT coalesce(s.database, ''), current_database(), coalesce(s.plugin, ''), coalesce(s.wal_status, '') FROM pg_replication_slots s WHERE s.slot_name = $1`, slot).Scan(&db, &ours, &plugin, &walStatus)
		// A logical slot of this database whose plugin is not named yet
		// is being made by another session (a second migrate, an init
		// container per replica; a cdc run): PostgreSQL names it a moment
		// after the slot appears. Taken for another plugin's slot, it
		// failed the second of two migrates at once.
		if err != nil || db != ours || plugin != "" || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("look up slot %s: %w", slot, ctx.Err())
		case <-time.After(slotMadeEvery):
		}
	}
	switch {
	case err == nil && db == ours && plugin != "pgoutput":
		return false, fmt.Errorf("replication slot %s exists with the plugin %q, and cdc reads pgoutput: drop it if nothing else reads it, or set another CDC_SLOT_NAME", slot, plugin)
	case err == nil && db == ours && walStatus == "lost":
		return false, fmt.Errorf("replication slot %s was invalidated (wal_status lost): PostgreSQL removed WAL it had not streamed, and cdc run cannot stream from it: "+
			"stop every cdc run for it, drop it (SELECT pg_drop_replication_slot('%s')) and run cdc migrate again, which makes it anew and names the events to ship with cdc backfill (docs/operations.md, Slot invalidated)", slot, slot)
	case err == nil && db == ours:
		return false, nil
	case err == nil && db == "":
		// A physical slot has no database: a standby's or a backup's.
		return false, fmt.Errorf("slot %s already exists as a physical replication slot (a standby's or a base backup's), not a logical one of this database: choose another CDC_SLOT_NAME", slot)
	case err == nil:
		return false, fmt.Errorf("slot %s already exists for database %q, not this one (%q): choose another CDC_SLOT_NAME", slot, db, ours)
	case !errors.Is(err, pgx.ErrNoRows):
		return false, fmt.Errorf("look up slot %s: %w", slot, err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42710" { // created concurrently
			return false, nil
		}
		return false, fmt.Errorf("create slot %s: %w", slot, err)
	}
	return true, nil
}

// How long CreateSlot waits, and how often it looks, for another
// session's slot to be made: the plugin is named within a moment, not
// after the transactions in progress end.
const (
	slotMadeWithin = 10 * time.Second
	slotMadeEvery  = 50 * time.Millisecond
)

// pgQuerier is what CreateSlot needs of a PostgreSQL connection.
type pgQuerier interface {
	pgExecer
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}
