package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/eventcdc/cdc/backfill"
	"github.com/eventcdc/cdc/config"
	"github.com/eventcdc/cdc/deadletter"
	"github.com/eventcdc/cdc/retention"
	"github.com/eventcdc/cdc/sink"
	"github.com/eventcdc/cdc/status"
)

type statusReport struct {
	status.Slot
	LagSeconds *float64 `json:"lag_seconds"`
	// LagSecondsError says why LagSeconds is null: ClickHouse could not
	// be asked, or the slot does not exist or is invalidated.
	LagSecondsError string `json:"lag_seconds_error,omitempty"`
	// OutboxRows and OutboxRowsAtInfinity are null when the outbox could
	// not be counted in time (a lock, a slow server): OutboxRowsError says
	// why. OutboxRowsAtInfinity counts the rows dated 'infinity' or
	// '-infinity': dead letters, never lag.
	// OutboxRowsEstimated is set when OutboxRows is the planner's
	// estimate: more than statusExactRows rows.
	OutboxRows           *int64 `json:"outbox_rows"`
	OutboxRowsEstimated  bool   `json:"outbox_rows_estimated"`
	OutboxRowsAtInfinity *int64 `json:"outbox_rows_at_infinity"`
	OutboxRowsError      string `json:"outbox_rows_error,omitempty"`
	// DeadLetters is null when the table could not be counted in time:
	// DeadLettersError says why.
	DeadLetters      *int64 `json:"dead_letters"`
	DeadLettersError string `json:"dead_letters_error,omitempty"`
	// DeadLettersOfOtherSlots counts, by slot, the letters other slots
	// of this database set aside: another pipeline's (its own slot and
	// ClickHouse), or this one's under a slot name it no longer uses.
	// DeadLetters leaves them out; this pipeline neither skips nor
	// replays them.
	DeadLettersOfOtherSlots map[string]int64 `json:"dead_letters_of_other_slots,omitempty"`
	// RetentionHeld says whether the retention hold (RetentionHold, made
	// when a slot was created while the outbox held rows) keeps every cdc
	// run from deleting outbox rows; null when it could not be read:
	// RetentionHeldError says why.
	RetentionHeld      *bool  `json:"retention_held"`
	RetentionHold      string `json:"retention_hold"`
	RetentionHeldError string `json:"retention_held_error,omitempty"`
	// RetentionHeldFor is the other slot of this database whose hold
	// (RetentionHold) keeps retention from deleting, when this slot's own
	// does not: a second pipeline of the same outbox whose slot was made
	// anew (retention.HeldForOutbox).
	RetentionHeldFor string `json:"retention_held_for,omitempty"`
}

// Each part of the report has a bound of its own, so that one slow part —
// a table locked behind an ALTER, a slow ClickHouse — leaves
// the others to be reported (as unknown, saying why) rather than the
// whole report: status is for incidents. A lock is waited for at most
// statusLockTimeout, a query at most statusQueryTimeout; ClickHouse has
// statusLagTimeout for the lag in seconds.
const (
	statusQueryTimeout = 10 * time.Second
	statusLockTimeout  = "2s"
	statusLagTimeout   = 15 * time.Second
	// statusExactRows is as many outbox rows as status counts; past it
	// the count is the planner's estimate (status.CountOutbox). A million
	// rows are read in well under statusQueryTimeout.
	statusExactRows = 1_000_000
)

func runStatus(ctx context.Context, cfg config.Config, args []string, stdout io.Writer, log *zap.Logger) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	// A query waits for a table's lock (an ALTER TABLE queued behind a
	// long transaction) at most statusLockTimeout.
	pool, err := openPoolWith(cfg.PGDSN, map[string]string{"lock_timeout": statusLockTimeout})
	if err != nil {
		return err
	}
	defer pool.Close()
	// part runs one part of the report within its own bound. A signal
	// stops the command, like any other one-shot's, and a login refused
	// (ClickHouse's, asked for the lag) exits 2 as a bad setting does;
	// any other failure leaves that part unknown.
	part := func(timeout time.Duration, what string, read func(context.Context) error) (string, error) {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		err := read(pctx)
		switch {
		case err == nil:
			return "", nil
		case ctx.Err() != nil:
			return "", fmt.Errorf("%s: %w", what, ctx.Err())
		case loginRefused(err) != "":
			return "", fmt.Errorf("%s: %w", what, err)
		}
		log.Warn(what+" unknown", zap.Error(err))
		return err.Error(), nil
	}

	var r statusReport
	sctx, cancel := context.WithTimeout(ctx, statusQueryTimeout)
	r.Slot, err = status.ReadSlot(sctx, pool, cfg.SlotName)
	cancel()
	if err != nil {
		return err // the report's core: nothing to say without it
	}
	if r.OutboxRowsError, err = part(statusQueryTimeout, "outbox rows", func(ctx context.Context) error {
		o, err := status.CountOutbox(ctx, pool, statusExactRows)
		if err == nil {
			r.OutboxRows, r.OutboxRowsEstimated, r.OutboxRowsAtInfinity = &o.Rows, o.Estimated, &o.AtInfinity
		}
		return err
	}); err != nil {
		return err
	}
	if r.DeadLettersError, err = part(statusQueryTimeout, "dead letters", func(ctx context.Context) error {
		store := deadletter.New(pool, cfg.SlotName)
		n, err := store.Count(ctx)
		if err != nil {
			return err
		}
		others, err := store.Others(ctx)
		if err != nil {
			return err
		}
		r.DeadLetters, r.DeadLettersOfOtherSlots = &n, others
		return nil
	}); err != nil {
		return err
	}
	r.RetentionHold = retention.HoldName(cfg.SlotName)
	if r.RetentionHeldError, err = part(statusQueryTimeout, "retention hold", func(ctx context.Context) error {
		name, heldFor, err := retention.HeldForOutbox(ctx, pool, cfg.SlotName)
		if err == nil {
			held := name != ""
			r.RetentionHeld = &held
			if held {
				r.RetentionHold = name // an earlier cdc's name for it, perhaps
			}
			if held && heldFor != cfg.SlotName {
				r.RetentionHeldFor = heldFor
			}
		}
		return err
	}); err != nil {
		return err
	}
	if !r.Exists {
		// Not 0: with no slot nothing streams, and what commits now is
		// kept by no slot.
		r.LagSecondsError = "slot " + r.Name + " does not exist"
	} else if r.OtherDatabase != "" {
		r.LagSecondsError = "slot " + r.Name + " belongs to database " + r.OtherDatabase + ", not this one"
	} else if r.WALStatus == "lost" {
		// Not the age of the outbox rows past event_log's newest: the
		// events the slot lost may be older than that, and nothing
		// streams them now.
		r.LagSecondsError = "slot " + r.Name + " is invalidated: the events it had not delivered are in the outbox only, for cdc backfill"
	} else if r.LagSecondsError, err = part(statusLagTimeout, "lag in seconds", func(ctx context.Context) (err error) {
		r.LagSeconds, err = lagSeconds(ctx, pool, cfg, r.Slot, log)
		return err
	}); err != nil {
		return fmt.Errorf("ask clickhouse for the lag: %w", errors.Unwrap(err))
	}

	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	printStatus(stdout, r)
	return nil
}

// printStatus prints the report as docs/operations.md (cdc status) shows
// it.
func printStatus(stdout io.Writer, r statusReport) {
	if r.OtherDatabase != "" {
		// Nothing of it is this database's: its lag and WAL would read
		// as this outbox's.
		fmt.Fprintf(stdout, "slot:              %s belongs to database %s, not this one: set CDC_SLOT_NAME to a slot of this database's (cdc run and migrate refuse this one)\n", r.Name, r.OtherDatabase)
		printOutbox(stdout, r)
		return
	}
	fmt.Fprintf(stdout, "slot:              %s (exists: %v, active: %v", r.Name, r.Exists, r.Active)
	if r.ActivePID != 0 {
		fmt.Fprintf(stdout, ", pid %d", r.ActivePID)
	}
	fmt.Fprintln(stdout, ")")
	fmt.Fprintf(stdout, "confirmed lsn:     %s (server at %s)\n", orDash(r.ConfirmedLSN), r.CurrentLSN)
	switch {
	case !r.Exists:
		fmt.Fprintln(stdout, "lag:               - (no slot)")
	case r.WALStatus == "lost":
		fmt.Fprintf(stdout, "lag:               %d bytes, seconds unknown (the slot is invalidated)\n", r.LagBytes)
	case r.LagSeconds != nil:
		fmt.Fprintf(stdout, "lag:               %d bytes, %.1f s\n", r.LagBytes, *r.LagSeconds)
	default:
		fmt.Fprintf(stdout, "lag:               %d bytes, seconds unknown (see the warning)\n", r.LagBytes)
	}
	fmt.Fprintf(stdout, "wal retained:      %d bytes (wal_status %s)\n", r.RetainedWAL, orDash(r.WALStatus))
	if !r.Exists {
		fmt.Fprintln(stdout, "wal before invalidation: - (no slot)")
	} else if r.WALStatus == "lost" {
		fmt.Fprintln(stdout, "wal before invalidation: none: the slot IS invalidated (see docs/operations.md, Slot invalidated)")
	} else if r.SafeWALBytes != nil {
		fmt.Fprintf(stdout, "wal before invalidation: %d bytes\n", *r.SafeWALBytes)
	} else {
		fmt.Fprintln(stdout, "wal before invalidation: unlimited (max_slot_wal_keep_size = -1)")
	}
	printOutbox(stdout, r)
}

// printOutbox prints what the outbox, the dead letters and the retention
// hold say, whatever the slot.
func printOutbox(stdout io.Writer, r statusReport) {
	switch {
	case r.OutboxRows == nil:
		fmt.Fprint(stdout, "outbox rows:       unknown (see the warning)")
	case r.OutboxRowsEstimated && *r.OutboxRows <= statusExactRows+1:
		// The planner knows no more than the count (never analyzed).
		fmt.Fprintf(stdout, "outbox rows:       more than %d", statusExactRows)
		if *r.OutboxRowsAtInfinity > 0 {
			fmt.Fprintf(stdout, ", %d at infinity or -infinity", *r.OutboxRowsAtInfinity)
		}
	case r.OutboxRowsEstimated:
		fmt.Fprintf(stdout, "outbox rows:       about %d (the planner's estimate: more than %d to count)", *r.OutboxRows, statusExactRows)
		if *r.OutboxRowsAtInfinity > 0 {
			fmt.Fprintf(stdout, ", %d at infinity or -infinity", *r.OutboxRowsAtInfinity)
		}
	case *r.OutboxRowsAtInfinity > 0:
		// They stay (retention never deletes those at infinity) while the
		// lag reads 0: say why, or the count looks like a backlog.
		fmt.Fprintf(stdout, "outbox rows:       %d (%d at infinity or -infinity: dead letters, not lag)", *r.OutboxRows, *r.OutboxRowsAtInfinity)
	default:
		fmt.Fprintf(stdout, "outbox rows:       %d", *r.OutboxRows)
	}
	fmt.Fprintln(stdout)
	if r.DeadLetters == nil {
		fmt.Fprintln(stdout, "dead letters:      unknown (see the warning)")
	} else {
		fmt.Fprintf(stdout, "dead letters:      %d", *r.DeadLetters)
		if len(r.DeadLettersOfOtherSlots) > 0 {
			slots := slices.Sorted(maps.Keys(r.DeadLettersOfOtherSlots))
			var total int64
			parts := make([]string, len(slots))
			for i, slot := range slots {
				total += r.DeadLettersOfOtherSlots[slot]
				parts[i] = fmt.Sprintf("%d of slot %s", r.DeadLettersOfOtherSlots[slot], slot)
			}
			fmt.Fprintf(stdout, " (and %d set aside by other slots, not this pipeline's: %s)", total, strings.Join(parts, ", "))
		}
		fmt.Fprintln(stdout)
	}
	switch {
	case r.RetentionHeld == nil:
		fmt.Fprintln(stdout, "retention:         unknown (see the warning)")
	case *r.RetentionHeld && r.RetentionHeldFor != "":
		fmt.Fprintf(stdout, "retention:         HELD by %s, the hold of slot %s of this database, another pipeline's: no outbox row is deleted; once that pipeline's `cdc verify` finds nothing missing, lift it: SELECT pg_drop_replication_slot('%[1]s');\n", r.RetentionHold, r.RetentionHeldFor)
	case *r.RetentionHeld:
		fmt.Fprintf(stdout, "retention:         HELD by %s: no outbox row is deleted; once `cdc verify` finds nothing missing, lift it: SELECT pg_drop_replication_slot('%[1]s');\n", r.RetentionHold)
	default:
		fmt.Fprintln(stdout, "retention:         not held")
	}
}

// lagSeconds estimates how late ClickHouse is, from both ends: the age of
// the oldest outbox row whose event_date_time lies past the newest one in
// event_log; 0 when the outbox holds none (nil when unknown). Dead
// letters, and rows at ±infinity (always dead letters), never reach
// event_log and are left out, or one would stand pending for ever. The second
// after event_log's newest is where it starts looking, since event_log
// keeps whole seconds: rows of that same second may be missed, stored rows
// are never counted. WAL of other tables leaves the slot a few KB behind
// between acknowledgements on an idle outbox; that is not lag. The
// connector's metric, cdc_replication_lag_seconds, is exact.
func lagSeconds(ctx context.Context, pool status.Querier, cfg config.Config, s status.Slot, log *zap.Logger) (*float64, error) {
	zero := 0.0
	if s.LagBytes == 0 {
		return &zero, nil
	}
	ch, err := sink.Open(cfg.ClickHouseDSN, log)
	if err != nil {
		return nil, fmt.Errorf("open clickhouse (CDC_CLICKHOUSE_DSN): %w", err)
	}
	defer ch.Close()
	// Up to now: one event dated in the future (an application's clock
	// ahead, or a date it sets) would otherwise hide every pending one
	// behind it.
	// The last day first: event_log is partitioned by month, so that
	// reads one or two partitions' column, not the whole table's, which
	// on billions of rows can take longer than statusLagTimeout. Only a
	// table with nothing that recent is read whole. Unix seconds, not
	// times, are compared: a time constant can be taken through the
	// partition key's month in a session_timezone other than the
	// column's and a part holding the newest event skipped (ClickHouse
	// issue 86654).
	var newest time.Time
	for _, from := range []string{"toUInt32(now()) - 86400", "0"} {
		if err := ch.Conn().QueryRow(ctx, "SELECT max(event_date_time) FROM "+sink.Table+" WHERE toUInt32(event_date_time) > "+from+" AND toUInt32(event_date_time) <= toUInt32(now())").Scan(&newest); err != nil {
			return nil, fmt.Errorf("read the newest event in clickhouse: %w", err)
		}
		if newest.Unix() > 0 {
			break
		}
	}
	// Not the rows the publication's row filter keeps from cdc run: they
	// never reach event_log.
	filter, err := backfill.RowFilter(ctx, pool, cfg.Publication)
	if err != nil {
		return nil, err
	}
	oldest, err := status.OldestPending(ctx, pool, newest.Truncate(time.Second).Add(time.Second), filter, cfg.SlotName)
	if err != nil {
		return nil, fmt.Errorf("read the oldest pending outbox row: %w", err)
	}
	if oldest == nil {
		return &zero, nil
	}
	lag := max(time.Since(*oldest).Seconds(), 0)
	return &lag, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
