package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/config"
	"github.com/eventcdc/cdc/replication"
	"github.com/eventcdc/cdc/retention"
	"github.com/eventcdc/cdc/sink"
	ddl "github.com/eventcdc/cdc/sql"
)

// runMigrate applies the DDL on both sides. It needs rights `cdc run` does
// not: run it with an admin DSN at deploy time.
func runMigrate(ctx context.Context, cfg config.Config, args []string, stdout io.Writer, log *zap.Logger) error {
	// No flags: configured by CDC_* variables. -h says so.
	if err := parseFlags(flag.NewFlagSet("migrate", flag.ContinueOnError), args); err != nil {
		return err
	}
	pcfg, err := pgx.ParseConfig(cfg.PGDSN)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("CDC_PG_DSN: %w", err)}
	}
	replication.ConnDefaults(&pcfg.Config)
	pg, err := pgx.ConnectConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	defer pg.Close(context.Background())
	// migrate may wait long, and rightly (a lock, a long transaction its
	// index build waits out, a build of an hour): it says what it waits
	// for, and gives up on a server that stops answering.
	ctx, stopWatch := watchMigrate(ctx, cfg.PGDSN, pg.PgConn().PID(), stdout)
	defer stopWatch()
	// Under the watch, as every statement. A standby takes no DDL: its
	// first statement failed with "cannot execute CREATE INDEX in a
	// read-only transaction", which read as a privilege to grant. Like a
	// DSN that leads to a pooler, one that leads to a standby is a
	// setting to fix (or a promotion to wait for). A role that may not
	// execute pg_is_in_recovery() (REVOKE … FROM PUBLIC) gets no answer,
	// and migrates as before the question: a standby refuses the DDL.
	var inRecovery bool
	if err := pg.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err != nil {
		if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			return frozenCause(ctx, fmt.Errorf("ask whether the server is in recovery: %w", err))
		}
	}
	if inRecovery {
		return &exitError{code: 2, err: errors.New("CDC_PG_DSN leads to a standby in recovery, which takes no DDL and no replication slot: run cdc migrate against the primary (after a failover, once the standby is promoted; a DSN that lists several hosts: add target_session_attrs=primary)")}
	}
	if err := ddl.MigratePostgres(ctx, pg, cfg.Publication, stdout); err != nil {
		return frozenCause(ctx, ownerHint(err, pg.Config().User))
	}
	// ClickHouse before the slot: a migrate that fails there (ClickHouse
	// down, a wrong DSN) leaves no slot behind to retain WAL while
	// nothing reads it.
	ch, err := sink.Open(cfg.ClickHouseDSN, log)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("CDC_CLICKHOUSE_DSN: %w", err)}
	}
	defer ch.Close()
	if err := ddl.MigrateClickHouse(ctx, ch.Conn()); err != nil {
		return frozenCause(ctx, err)
	}
	// Hold retention before the slot exists where the outbox has rows:
	// a migrate interrupted between creating the slot and holding would
	// leave the gap unheld, and the next one finds the slot and holds
	// nothing. A hold without a slot only pauses retention.
	var exists bool
	if err := pg.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, cfg.SlotName).Scan(&exists); err != nil {
		return frozenCause(ctx, fmt.Errorf("look up slot %s: %w", cfg.SlotName, err))
	}
	if !exists {
		// Tried again once the slot exists (noteOlderEvents), which says
		// what to do if that fails too.
		// A role that may not make replication slots makes neither: the
		// slot's failure below says what to change, and a warning that
		// the hold is tried again once the slot exists would be untrue.
		if _, err := retention.HoldAhead(ctx, pg, cfg.SlotName); err != nil && !slotsRefused(err) {
			log.Warn("could not hold outbox retention before creating the slot; trying again once it exists", zap.Error(err))
		}
	}
	created, err := ddl.CreateSlot(ctx, pg, cfg.SlotName)
	if slotsRefused(err) {
		// The admin of an application's database owns the outbox, as
		// migrate needs, but seldom has REPLICATION: a DSN for the wrong
		// role, as a refused login is (exit 2).
		return &exitError{code: 2, err: fmt.Errorf("CDC_PG_DSN: %w: creating the replication slot takes a role with REPLICATION, or a superuser: as a superuser, ALTER ROLE %s REPLICATION, or run cdc migrate as one; the rest is migrated, and the next cdc migrate creates the slot",
			err, pgx.Identifier{pg.Config().User}.Sanitize())}
	}
	if err != nil {
		return frozenCause(ctx, err)
	}
	if created {
		fmt.Fprintf(stdout, "created replication slot %s: events published from now on are kept until cdc run ships them\n", cfg.SlotName)
		// To its end even on a signal: the slot is made.
		nctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		err := noteOlderEvents(nctx, pg, cfg.SlotName, stdout)
		cancel()
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "migrated: postgres outbox, cdc_dead_letter, publication %s; clickhouse %s\n", cfg.Publication, sink.Table)
	return nil
}

// ownerHint names the way out of PostgreSQL's "must be owner of table …":
// migrate builds the outbox's indexes and its publication, which only the
// table's owner may, and the bare refusal did not say whom to run it as.
func ownerHint(err error, user string) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.HasPrefix(pgErr.Message, "must be owner of ") {
		return err
	}
	return fmt.Errorf("%w: cdc migrate builds indexes and a publication of cdc's tables, which only their owner may: run it as the owner of the table named (or a superuser), or, as that owner, ALTER TABLE … OWNER TO %s (docs/operations.md, Grants)",
		err, pgx.Identifier{user}.Sanitize())
}

// slotsRefused reports whether err is PostgreSQL refusing the role any
// replication slot ("must be superuser or replication role").
func slotsRefused(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42501"
}

// outboxSpan is what a new slot's gap holds, as noteOlderEvents and cdc
// run (noteGap) read it: the oldest finite event_date_time in the outbox
// in whole seconds cut down (a --since at or before it; nil when there is
// none), whether rows at -infinity or infinity are there, and the
// server's time.
type outboxSpan struct {
	oldest                  *string
	minusInfinity, infinity bool
	now                     string
}

// rowQuerier is a *pgx.Conn or a *pgxpool.Pool.
type rowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// readOutboxSpan reads outboxSpan. The index on event_date_time answers at
// once, however large the outbox.
func readOutboxSpan(ctx context.Context, pg rowQuerier) (outboxSpan, error) {
	// The oldest finite time, through the index on event_date_time; rows
	// at -infinity apart: `cdc backfill --since -infinity` sets them
	// aside (ClickHouse cannot store them), but `cdc verify` counts them
	// missing whatever is done, so its --since must be finite. Backfill
	// reads the rows at infinity whatever the --since.
	//
	// The time itself, printed here, not text PostgreSQL prints: a
	// zoneless event_date_time AT TIME ZONE 'UTC' is a timestamptz, which
	// to_char printed in the session's TimeZone, and the database's
	// Asia/Kolkata named a --since 5h30 after the oldest row. pgx reads a
	// timestamptz as its instant and a timestamp as its wall clock in UTC,
	// as cdc reads it everywhere.
	const oldestQuery = `SELECT
		(SELECT event_date_time FROM outbox
			WHERE event_date_time > '-infinity' AND event_date_time < 'infinity' ORDER BY event_date_time LIMIT 1),
		EXISTS (SELECT 1 FROM outbox WHERE event_date_time = '-infinity'),
		EXISTS (SELECT 1 FROM outbox WHERE event_date_time = 'infinity'),
		now()`
	var oldestAt *time.Time
	var span outboxSpan
	var nowAt time.Time
	if err := pg.QueryRow(ctx, oldestQuery).Scan(&oldestAt, &span.minusInfinity, &span.infinity, &nowAt); err != nil {
		return outboxSpan{}, fmt.Errorf("read the oldest outbox event: %w", err)
	}
	// Whole seconds, cut down: a --since at or before the oldest row.
	second := func(t time.Time) string { return t.UTC().Truncate(time.Second).Format("2006-01-02T15:04:05Z") }
	if oldestAt != nil {
		s := second(*oldestAt)
		span.oldest = &s
	}
	span.now = second(nowAt)
	return span, nil
}

// noteOlderEvents says, after a slot was created, whether the outbox holds
// events from before it: a new slot never streams them (a slot lost and
// recreated, or history imported before cdc), only `cdc backfill` ships
// them. It holds retention (retention.Hold) so that no `cdc run` deletes
// them meanwhile, and says how to lift the hold. The index on
// event_date_time answers at once, however large the outbox.
func noteOlderEvents(ctx context.Context, pg *pgx.Conn, slot string, stdout io.Writer) error {
	span, err := readOutboxSpan(ctx, pg)
	if err != nil {
		return err
	}
	oldest, minusInfinity, infinity, now := span.oldest, span.minusInfinity, span.infinity, span.now
	if oldest == nil && !minusInfinity {
		if infinity {
			// Nothing for retention to delete, nothing to hold: backfill
			// reads those rows whatever its --since, and sets them aside.
			fmt.Fprintf(stdout, "the outbox already holds events dated infinity, which this slot will not stream and ClickHouse cannot store: set them aside as dead letters with `cdc backfill --since %s`\n", now)
		}
		return nil
	}
	from, since := "-infinity", "-infinity"
	if oldest != nil {
		from = *oldest
		if !minusInfinity {
			since = *oldest
		}
	}
	fmt.Fprintf(stdout, "the outbox already holds events from %s on, which this slot will not stream: ship them with `cdc backfill --since %s`\n", from, since)
	check := "`cdc verify --since " + from + "` finds none missing"
	if oldest == nil {
		check = "that backfill has run" // rows at ±infinity only: nothing verify could find
	}
	created, err := retention.HoldIfOutboxHasRows(ctx, pg, slot)
	switch {
	case err != nil:
		// The slot is made: a failed hold must not fail the migration,
		// whose next run would not make the slot, nor the hold, again.
		fmt.Fprintf(stdout, "could not hold outbox retention (%v): start cdc run with CDC_OUTBOX_RETENTION=0 until %s (its retention deletes outbox rows older than CDC_OUTBOX_RETENTION)\n", err, check)
	case created:
		fmt.Fprintf(stdout, "outbox retention is held on every cdc run until %s; then lift the hold: SELECT pg_drop_replication_slot('%s');\n", check, retention.HoldName(slot))
	default:
		if name := holdName(ctx, pg, slot); name != "" {
			fmt.Fprintf(stdout, "outbox retention is held on every cdc run until %s; then lift the hold: SELECT pg_drop_replication_slot('%s');\n", check, name)
		}
	}
	return nil
}

// holdName is retention.HeldAs, "" when it cannot be read.
func holdName(ctx context.Context, pg *pgx.Conn, slot string) string {
	name, err := retention.HeldAs(ctx, pg, slot)
	if err != nil {
		return ""
	}
	return name
}

// How migrate watches its session: every migrateWatchEvery it asks, on a
// connection of its own, what that session waits for, and prints it when
// it changes. A server that answers neither within migrateSilence is taken
// as frozen, and migrate stops. Variables for the tests.
var (
	migrateWatchEvery = 5 * time.Second
	migrateSilence    = time.Minute
)

// errFrozen is migrate stopped by its watch.
var errFrozen = errors.New("postgres answered nothing")

// watchMigrate watches the session pid (see migrateWatchEvery) until stop
// is called; the context it returns ends with errFrozen as its cause when
// the server stopped answering.
func watchMigrate(ctx context.Context, dsn string, pid uint32, stdout io.Writer) (context.Context, func()) {
	wctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
		answered := time.Now()
		said, saidAt := "", time.Time{}
		t := time.NewTicker(migrateWatchEvery)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
			}
			waits, withAges, err := sessionWaits(wctx, dsn, &conn, pid)
			// An error the server sent is an answer all the same: a
			// second connection refused (the role's or the database's
			// CONNECTION LIMIT, max_connections reached while the
			// application is busy) says nothing of migrate's session, and
			// stopping migrate then would cancel what it does (a
			// CREATE INDEX CONCURRENTLY cancelled leaves an invalid index).
			switch {
			case wctx.Err() != nil:
				return
			case err != nil && lastAttemptAnswered(err):
				answered = time.Now()
			case err == nil:
				answered = time.Now()
				// Said when it changes, and again each minute it lasts.
				if waits != "" && (waits != said || time.Since(saidAt) >= time.Minute) {
					fmt.Fprintf(stdout, "waiting for %s\n", withAges)
					saidAt = time.Now()
				}
				said = waits
			case time.Since(answered) >= migrateSilence:
				cancel(fmt.Errorf("%w for %s to migrate's session or to a second one asking what it waits for (%v): stopped", errFrozen, migrateSilence, err))
				return
			}
		}
	}()
	return wctx, func() { cancel(nil); <-done }
}

// lastAttemptAnswered reports whether err ends in an error a server sent
// (a *pgconn.PgError), following the last of the errors pgx joins when it
// tried several hosts or TLS and then plain text: only the last attempt
// says whether the server it reached answers. A DSN's first host refusing
// (a standby starting up) says nothing of migrate's server, listed after
// it, which may be frozen.
func lastAttemptAnswered(err error) bool {
	for err != nil {
		if _, ok := err.(*pgconn.PgError); ok {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			errs := u.Unwrap()
			if len(errs) == 0 {
				return false
			}
			err = errs[len(errs)-1]
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		default:
			return false
		}
	}
	return false
}

// sessionWaits says what the session pid waits for, "" when nothing, and
// the same with how long the sessions it waits behind have been in their
// transactions; asking on *conn (connected first when nil, and closed and set to nil on
// a failure).
func sessionWaits(ctx context.Context, dsn string, conn **pgx.Conn, pid uint32) (what, withAges string, err error) {
	ctx, cancel := context.WithTimeout(ctx, min(migrateSilence, 10*time.Second))
	defer cancel()
	if *conn == nil {
		pcfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			return "", "", err
		}
		replication.ConnDefaults(&pcfg.Config)
		c, err := pgx.ConnectConfig(ctx, pcfg)
		if err != nil {
			return "", "", err
		}
		*conn = c
	}
	// A lock not granted, and the sessions it waits behind: holders, or
	// others queued ahead for a lock that conflicts. CREATE INDEX
	// CONCURRENTLY waits on the transactions (virtualxid) of sessions
	// that were running when it started.
	err = (*conn).QueryRow(ctx, `
		SELECT coalesce(string_agg(w.what, '; ' ORDER BY w.pid), ''),
		       coalesce(string_agg(w.what || w.age, '; ' ORDER BY w.pid), '')
		FROM (SELECT b.pid,
			CASE WHEN l.locktype = 'relation' THEN 'a lock on ' || l.relation::regclass::text || ' (' || l.mode || ')'
			     WHEN l.locktype IN ('virtualxid', 'transactionid') THEN 'a transaction to end'
			     ELSE 'a ' || l.locktype || ' lock (' || l.mode || ')' END
			|| ' held by pid ' || b.pid AS what,
			coalesce(' (' || a.state || ', its transaction open ' || extract(epoch FROM date_trunc('second', now() - a.xact_start))::bigint || 's)', '') AS age
			FROM pg_locks l
			CROSS JOIN LATERAL unnest(pg_blocking_pids(l.pid)) AS b(pid)
			LEFT JOIN pg_stat_activity a ON a.pid = b.pid
			WHERE l.pid = $1 AND NOT l.granted) AS w`, int32(pid)).Scan(&what, &withAges)
	if err != nil {
		(*conn).Close(context.Background())
		*conn = nil
		return "", "", err
	}
	return what, withAges, nil
}

// frozenCause is err, or err after why ctx ended when its watch stopped
// migrate.
func frozenCause(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, errFrozen) {
		return fmt.Errorf("%w: %w", cause, err)
	}
	return err
}
