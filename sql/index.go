package sql

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// OutboxIndex is the index the outbox is read by: backfill and verify page
// it by keyset in (event_date_time, id) order, and retention deletes by
// event_date_time < cutoff, a range on its first column. With event_date_time
// alone, every page inside a group of rows sharing one timestamp (a bulk
// insert gets one now() for all its rows) read and sorted the whole group.
const OutboxIndex = "outbox_event_date_time_id_idx"

// OldOutboxIndex is the index on event_date_time alone that migrate created
// before OutboxIndex; OutboxIndex serves every query it served.
const OldOutboxIndex = "outbox_event_date_time_idx"

// outboxIndexDef is OutboxIndex's definition as pg_get_indexdef prints it
// after "USING".
const outboxIndexDef = "btree (event_date_time, id)"

// buildPoll is how often migrate looks whether another session's build of
// OutboxIndex has ended.
var buildPoll = time.Second

// indexState is what the catalog says of one index on the outbox.
type indexState struct {
	exists  bool
	valid   bool   // pg_index.indisvalid: false while built concurrently, and after such a build failed
	def     string // after "USING" in pg_get_indexdef
	builder int32  // pid of a session building it now, 0 if none (or not visible to this role)
}

func readIndex(ctx context.Context, conn pgQuerier, name string) (indexState, error) {
	// The index lives in the outbox's schema, whichever search_path picked
	// for the table: look it up by table, not by a bare name.
	// pg_stat_progress_create_index shows index_relid only for the sessions
	// of this role (or to pg_read_all_stats), which a migrate run as the
	// same admin is.
	st := indexState{exists: true}
	var def *string
	err := conn.QueryRow(ctx, `
		SELECT i.indisvalid,
		       substring(pg_get_indexdef(i.indexrelid) from ' USING (.*)$'),
		       coalesce((SELECT p.pid FROM pg_stat_progress_create_index p WHERE p.index_relid = i.indexrelid LIMIT 1), 0)
		FROM pg_index i
		JOIN pg_class c ON c.oid = i.indexrelid
		WHERE i.indrelid = to_regclass('outbox') AND c.relname = $1`, name).Scan(&st.valid, &def, &st.builder)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && def == nil || droppedMeanwhile(err) {
		// None; or one another session (a second migrate) dropped after
		// this look's snapshot was taken: pg_get_indexdef reads the
		// catalog as it is now, and finds nothing (NULL) or half of it.
		return indexState{}, nil
	}
	if err != nil {
		return indexState{}, fmt.Errorf("look up index %s: %w", name, err)
	}
	st.def = *def
	return st, nil
}

// servingIndex names a valid, non-partial index on the outbox, under a
// name other than OutboxIndex, defined as OutboxIndex is; "" if none.
func servingIndex(ctx context.Context, conn pgQuerier) (string, error) {
	var name string
	err := conn.QueryRow(ctx, `
		SELECT c.relname FROM pg_index i
		JOIN pg_class c ON c.oid = i.indexrelid
		WHERE i.indrelid = to_regclass('outbox') AND c.relname <> $1 AND i.indisvalid AND i.indpred IS NULL
		  AND substring(pg_get_indexdef(i.indexrelid) from ' USING (.*)$') = $2
		ORDER BY c.relname LIMIT 1`, OutboxIndex, outboxIndexDef).Scan(&name)
	if errors.Is(err, pgx.ErrNoRows) || droppedMeanwhile(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up an index on outbox (event_date_time, id): %w", err)
	}
	return name, nil
}

// droppedMeanwhile reports whether err is pg_get_indexdef failing on an
// index dropped as it read it: "cache lookup failed for …" (XX000).
func droppedMeanwhile(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "XX000" && strings.HasPrefix(pgErr.Message, "cache lookup failed")
}

// migrateOutboxIndex makes OutboxIndex exist and be valid, then drops
// OldOutboxIndex, reporting to w what it does. Everything goes CONCURRENTLY,
// which takes no lock that stops inserts: a plain CREATE INDEX, even one with
// IF NOT EXISTS that finds the index there, takes a SHARE lock on the table
// that waits for every open insert transaction and holds up the
// application's inserts queued behind it. Each statement runs on its own,
// as CONCURRENTLY cannot run in a transaction block. The builds wait for
// transactions that write to the outbox or hold old snapshots to end, so a
// long transaction holds migrate up (not the application).
func migrateOutboxIndex(ctx context.Context, conn pgQuerier, w io.Writer) error {
	built := false
	waited := int32(0)
	for {
		st, err := readIndex(ctx, conn, OutboxIndex)
		if err != nil {
			return err
		}
		switch {
		case st.exists && st.def != outboxIndexDef:
			return fmt.Errorf("index %s on outbox is %q, not %q: drop or rename it and run migrate again", OutboxIndex, st.def, outboxIndexDef)
		case st.exists && st.valid:
			return dropOldOutboxIndex(ctx, conn, w)
		case st.builder != 0:
			// Another migrate (a second replica's init container) is
			// building it: dropping it would wait for that build anyway,
			// then throw it away.
			if waited != st.builder {
				fmt.Fprintf(w, "waiting for session %d to finish building index %s\n", st.builder, OutboxIndex)
				waited = st.builder
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("wait for session %d to build index %s: %w", st.builder, OutboxIndex, ctx.Err())
			case <-time.After(buildPoll):
			}
			continue
		case !st.exists && !built:
			// An operator's rename, or an index made by hand: it serves
			// every query OutboxIndex would (the start's check counts it
			// so), and a second would double the outbox's index upkeep.
			other, err := servingIndex(ctx, conn)
			if err != nil {
				return err
			}
			if other != "" {
				fmt.Fprintf(w, "index %s on outbox (event_date_time, id) serves as %s: not building another\n", other, OutboxIndex)
				return dropOldOutboxIndex(ctx, conn, w)
			}
		case built:
			return fmt.Errorf("index %s is missing or invalid right after building it", OutboxIndex)
		case st.exists:
			// Invalid and no build under way: a build that failed or was
			// stopped. IF NOT EXISTS would keep it, and no query ever uses
			// an invalid index: build it again. (A build by a session this
			// role cannot see in pg_stat_progress_create_index looks the
			// same: the DROP waits for that build to end, then throws it
			// away.)
			dropped, err := dropIndex(ctx, conn, OutboxIndex)
			if err != nil {
				return fmt.Errorf("drop invalid index %s: %w", OutboxIndex, err)
			}
			if !dropped { // another session did
				continue
			}
			fmt.Fprintf(w, "dropped invalid index %s, left by a concurrent build that did not finish\n", OutboxIndex)
		}
		fmt.Fprintf(w, "building index %s on outbox (event_date_time, id) concurrently; inserts into outbox go on meanwhile\n", OutboxIndex)
		if _, err := conn.Exec(ctx, `CREATE INDEX CONCURRENTLY `+OutboxIndex+` ON outbox (event_date_time, id)`); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "42P07" {
				// Another session created it meanwhile, or the name is
				// another relation's in the outbox's schema: the index of
				// an outbox renamed aside for a new one. Looking again
				// would find nothing on outbox and build again, for ever.
				if again, err := readIndex(ctx, conn, OutboxIndex); err == nil && !again.exists {
					return fmt.Errorf("build index %s: the name is another relation's in the outbox's schema (the index of an outbox renamed aside?): rename that one and run migrate again", OutboxIndex)
				}
				continue
			}
			if errors.As(err, &pgErr) && pgErr.Code == "40P01" && ctx.Err() == nil {
				// Another migrate started its build at the same moment
				// (both found the index missing): the build holding the
				// table's lock waited for this one's transaction, which
				// waited for that lock, and PostgreSQL ended this one.
				// Look again: the other build is under way, or done.
				fmt.Fprintf(w, "another session's build of index %s started at the same moment; looking again\n", OutboxIndex)
				continue
			}
			return fmt.Errorf("build index %s concurrently (a failed build leaves it invalid; the next migrate drops and builds it again): %w", OutboxIndex, err)
		}
		fmt.Fprintf(w, "built index %s\n", OutboxIndex)
		built = true
	}
}

// dropOldOutboxIndex drops OldOutboxIndex, once OutboxIndex is valid and
// serves its queries.
func dropOldOutboxIndex(ctx context.Context, conn pgQuerier, w io.Writer) error {
	old, err := readIndex(ctx, conn, OldOutboxIndex)
	if err != nil || !old.exists {
		return err
	}
	dropped, err := dropIndex(ctx, conn, OldOutboxIndex)
	if err != nil {
		return fmt.Errorf("drop index %s: %w", OldOutboxIndex, err)
	}
	if dropped {
		fmt.Fprintf(w, "dropped index %s: %s serves its queries\n", OldOutboxIndex, OutboxIndex)
	}
	return nil
}

// dropIndex drops the index name concurrently and reports whether this
// session dropped it: not IF EXISTS, so that of two migrates dropping it at
// once only the one that did says so.
func dropIndex(ctx context.Context, conn pgQuerier, name string) (bool, error) {
	_, err := conn.Exec(ctx, `DROP INDEX CONCURRENTLY `+name)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42704" { // undefined_object: gone meanwhile
		return false, nil
	}
	return err == nil, err
}
