package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/backfill"
	"github.com/eventcdc/cdc/config"
	"github.com/eventcdc/cdc/deadletter"
	"github.com/eventcdc/cdc/retention"
	"github.com/eventcdc/cdc/sink"
)

const sinceHelp = "an RFC 3339 time, e.g. 2026-03-01T00:00:00Z, or -infinity"

// parseFlags parses args with fs and refuses stray arguments; every problem
// is a usage error (exit 2). -h or --help asks for the flags: a
// *helpRequest carries them (exit 0).
func parseFlags(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			var b strings.Builder
			fmt.Fprintf(&b, "usage: cdc %s [flags]\n", fs.Name())
			fs.SetOutput(&b)
			fs.PrintDefaults()
			if !hasFlags(fs) {
				fmt.Fprintln(&b, "  (no flags: configured by CDC_* environment variables, see README.md)")
			}
			return &helpRequest{text: b.String()}
		}
		return usageErr("%v", err)
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

func hasFlags(fs *flag.FlagSet) bool {
	has := false
	fs.VisitAll(func(*flag.Flag) { has = true })
	return has
}

// wantsHelp reports whether args ask for a command's help.
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "-h", "-help", "--help", "--h":
			return true
		}
	}
	return false
}

func parseSince(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, usageErr("--since is required: %s", sinceHelp)
	}
	// Rows dated '-infinity' precede every RFC 3339 time; the zero time is
	// the scanner's "no lower bound", which reaches them.
	if s == "-infinity" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, usageErr("--since %q is not %s", s, sinceHelp)
	}
	return t, nil
}

// parseUntil reads backfill's optional --until, an exclusive upper bound:
// empty is none (the zero time). It must lie after since, or the backfill
// would read nothing and say it succeeded.
func parseUntil(s string, since time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, usageErr("--until %q is not an RFC 3339 time, e.g. 2026-03-01T00:00:00Z", s)
	}
	if t.IsZero() {
		// The zero time is the scanner's "no upper bound".
		return time.Time{}, usageErr("--until %s is the earliest time RFC 3339 writes: give a later one", s)
	}
	if !since.IsZero() && !t.After(since) {
		return time.Time{}, usageErr("--until %s is not after --since %s: no row lies between them", formatSince(t), formatSince(since))
	}
	// PostgreSQL keeps microseconds, and the driver cuts a bound finer
	// than that down: a row in the bound's own microsecond, before it,
	// would be left out. The next microsecond up leaves out none of them
	// and takes no row at or past the bound.
	if us := t.Truncate(time.Microsecond); !us.Equal(t) {
		t = us.Add(time.Microsecond)
	}
	return t, nil
}

// resumeSince is the --since that ships what a failed backfill left, from
// the first row it did not store; false when that row is dated infinity,
// which no --since names (docs/operations.md, Rows dated infinity). A
// row past year 9999 or before year 1, which RFC 3339 cannot write, is
// reached from the last instant it can, or from -infinity: the rows
// shipped again before it are stored once, by their event ids.
func resumeSince(t pgtype.Timestamptz) (string, bool) {
	switch {
	case !t.Valid || t.InfinityModifier == pgtype.Infinity:
		return "", false
	case t.InfinityModifier == pgtype.NegativeInfinity:
		return "-infinity", true
	}
	switch u := t.Time.UTC(); {
	case u.Year() > 9999:
		return "9999-12-31T23:59:59.999999999Z", true
	case u.Year() < 1:
		return "-infinity", true
	default:
		return u.Format(time.RFC3339Nano), true
	}
}

// resumeHint tells the operator how to ship what a failed backfill left:
// from its resume point, within the same --until.
func resumeHint(resume pgtype.Timestamptz, until time.Time) (string, bool) {
	from, ok := resumeSince(resume)
	if !ok {
		return "", false
	}
	cmd := "cdc backfill --since " + from
	if !until.IsZero() {
		cmd += " --until " + formatSince(until)
	}
	return fmt.Sprintf("every row before %s is stored; to go on from there: %s", from, cmd), true
}

// formatSince prints a --since as given: the zero time is -infinity.
func formatSince(t time.Time) string {
	if t.IsZero() {
		return "-infinity"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// openBoth opens PostgreSQL and ClickHouse for a command that needs both.
func openBoth(ctx context.Context, cfg config.Config, log *zap.Logger) (*pgxpool.Pool, *sink.ClickHouse, func(), error) {
	pool, err := openOperatorPool(ctx, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	ch, err := openSink(cfg, log)
	if err != nil {
		pool.Close()
		return nil, nil, nil, err
	}
	return pool, ch, func() { ch.Close(); pool.Close() }, nil
}

func openSink(cfg config.Config, log *zap.Logger) (*sink.ClickHouse, error) {
	ch, err := sink.Open(cfg.ClickHouseDSN, log.Named("sink"))
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("CDC_CLICKHOUSE_DSN: %w", err)}
	}
	return ch, nil
}

// runVerify compares the outbox with event_log by event id. It fails (exit
// 1) only for events missing from event_log: events whose outbox row is gone
// are expected, retention and applications delete outbox rows.
//
// --grace skips outbox rows whose event_date_time is within the last grace
// period of PostgreSQL's clock: they may be committed and not shipped yet.
// event_date_time is set by the application (default now() at insert), so
// an application writing times in the future or far in the past moves rows
// in or out of that window; the grace period is a heuristic, not a fence.
func runVerify(ctx context.Context, cfg config.Config, args []string, stdout io.Writer, log *zap.Logger) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	sinceFlag := fs.String("since", "", "compare outbox rows with event_date_time >= TIME ("+sinceHelp+")")
	grace := fs.Duration("grace", 10*time.Second, "skip outbox rows newer than now minus this: they may still be on their way")
	show := fs.Int("limit", 20, "ids to list per kind")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	since, err := parseSince(*sinceFlag)
	if err != nil {
		return err
	}
	if *grace < 0 {
		return usageErr("--grace %s must not be negative", *grace)
	}
	if *show < 0 {
		return usageErr("--limit %d must not be negative", *show)
	}
	pool, ch, closeBoth, err := openBoth(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeBoth()

	var now time.Time
	if err := pool.QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
		return fmt.Errorf("read postgres clock: %w", err)
	}
	until := now.Add(-*grace)
	if !since.IsZero() && !since.Before(until) {
		// An empty window would pass, having checked nothing: a --since
		// in local time written with Z, a script checking too soon.
		return usageErr("--since %s is not before the server's time minus --grace (%s): no row would be checked", formatSince(since), formatSince(until.Truncate(time.Second)))
	}
	filter, err := rowFilter(ctx, pool, cfg, log, "verify compares only those")
	if err != nil {
		return err
	}
	rep, err := backfill.Verify(ctx, pool, ch.Conn(), backfill.VerifyOptions{Since: since, Until: until, Show: *show, RowFilter: filter, Slot: cfg.SlotName})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fmt.Errorf("print report: %w", err)
		}
	} else {
		printVerify(stdout, rep, *grace)
	}
	if rep.Missing > 0 {
		return &exitError{code: 1, err: fmt.Errorf("%d of %d outbox rows are missing from %s", rep.Missing, rep.OutboxRows, sink.Table)}
	}
	// What the hold waits for may be this: say how to lift it. Whether
	// --since reaches back to the gap only the operator knows.
	if name, err := retention.HeldAs(ctx, pool, cfg.SlotName); err == nil && name != "" {
		log.Info("outbox retention is held: if --since lies before the gap that made the hold, nothing of it is missing and the hold can be lifted",
			zap.String("hold", name), zap.String("lift", fmt.Sprintf("SELECT pg_drop_replication_slot('%s')", name)))
	}
	return nil
}

func printVerify(w io.Writer, r backfill.VerifyReport, grace time.Duration) {
	fmt.Fprintf(w, "outbox rows with event_date_time from %s to %s (--grace %s):\n",
		formatSince(r.Since), r.Until.UTC().Format(time.RFC3339Nano), grace)
	fmt.Fprintf(w, "outbox rows:       %d\n", r.OutboxRows)
	fmt.Fprintf(w, "in event_log:      %d\n", r.Found)
	fmt.Fprintf(w, "missing:           %d", r.Missing)
	if r.MissingDeadLettered > 0 {
		fmt.Fprintf(w, " (%d of them dead letters: cdc deadletter list)", r.MissingDeadLettered)
	}
	fmt.Fprintln(w)
	printIDs(w, r.MissingIDs, r.Missing)
	fmt.Fprintf(w, "not in outbox (deleted or retained away): %d of %d event_log rows\n", r.NotInOutbox, r.EventLogRows)
	printIDs(w, r.NotInOutboxIDs, r.NotInOutbox)
}

func printIDs(w io.Writer, ids []string, total int64) {
	for _, id := range ids {
		fmt.Fprintf(w, "  %s\n", id)
	}
	if more := total - int64(len(ids)); more > 0 {
		fmt.Fprintf(w, "  ... and %d more (--limit to list more)\n", more)
	}
}

// runBackfill re-ships outbox rows straight from the table, through the
// same sink as the connector: after a lost slot, or to import history.
// Exit 1 when rows were refused (they are dead letters now) or on failure.
func runBackfill(ctx context.Context, cfg config.Config, args []string, stdout io.Writer, log *zap.Logger) error {
	fs := flag.NewFlagSet("backfill", flag.ContinueOnError)
	sinceFlag := fs.String("since", "", "re-ship outbox rows with event_date_time >= TIME ("+sinceHelp+")")
	untilFlag := fs.String("until", "", "and event_date_time < TIME (an RFC 3339 time; default: no upper bound, rows inserted while the backfill runs included)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	since, err := parseSince(*sinceFlag)
	if err != nil {
		return err
	}
	until, err := parseUntil(*untilFlag, since)
	if err != nil {
		return err
	}
	setMemoryLimit(cfg)
	pool, ch, closeBoth, err := openBoth(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeBoth()
	// The retention of the cdc run that deletes is in its environment,
	// not this one's: a 0 here (retention off in an operator's shell)
	// says nothing of it, and the shortest it may be is taken instead.
	keep := cfg.OutboxRetention
	if keep <= 0 {
		keep = config.MinOutboxRetention
	}
	if horizon := time.Now().Add(-keep); since.Before(horizon) {
		// The gap a backfill repairs is older than the retention more
		// often than not (a lost slot's, or history from before cdc),
		// and safe from it only while retention is held.
		// Any role may read the hold (pg_replication_slots): an error is
		// the database's, which the backfill would meet next anyway.
		held, err := retention.Held(ctx, pool, cfg.SlotName)
		if err != nil {
			return err
		}
		if !held {
			log.Warn("a running cdc run deletes outbox rows older than CDC_OUTBOX_RETENTION, some of those this backfill is to ship among them; until it and `cdc verify` are done, run cdc run with CDC_OUTBOX_RETENTION=0 (docs/operations.md, Slot invalidated)",
				zap.Duration("retention", keep), zap.Time("older_than", horizon.UTC().Truncate(time.Second)))
		}
	}

	rel, err := backfill.LoadRelation(ctx, pool)
	if err != nil {
		return err
	}
	// What cdc run would have been sent: a column list keeps columns out
	// of ClickHouse, on purpose more often than not.
	rel, left, err := backfill.Published(ctx, pool, rel, cfg.Publication)
	if err != nil {
		return err
	}
	if len(left) > 0 {
		log.Info("the publication leaves columns of the outbox out (a column list): the backfill ships the others, as cdc run does, and event_log gives these their defaults",
			zap.Strings("columns_left_out", left), zap.String("publication", cfg.Publication))
	}
	// Nor rows a row filter keeps from it: one environment's events, say.
	filter, err := rowFilter(ctx, pool, cfg, log, "the backfill ships only those")
	if err != nil {
		return err
	}
	sc := backfill.NewScanner(pool, rel, since, until, cfg.BatchMaxRows, cfg.BatchMaxBytes, true).Filter(filter)
	res, err := backfill.Ship(ctx, sc, rel, ch, deadletter.New(pool, cfg.SlotName), cfg.BatchMaxBytes, func(r backfill.ShipResult) {
		log.Info("backfill batch stored", zap.Int("shipped", r.Shipped), zap.Int("dead_letters", r.DeadLetters))
	}, func(err error, wait time.Duration) {
		log.Warn("storing a backfill batch failed; retrying", zap.Error(err), zap.Duration("retry_in", wait))
	})
	window := formatSince(since)
	if !until.IsZero() {
		window += " until " + formatSince(until)
	}
	repaired := ""
	if res.Repaired > 0 {
		repaired = fmt.Sprintf(", %d refused but in %s already (not set aside)", res.Repaired, sink.Table)
	}
	fmt.Fprintf(stdout, "backfill since %s: %d outbox rows read, %d shipped to %s, %d refused (dead letters)%s\n",
		window, res.Read, res.Shipped, sink.Table, res.DeadLetters, repaired)
	if err != nil {
		if hint, ok := resumeHint(res.Resume, until); ok {
			fmt.Fprintln(stdout, hint)
		}
		return err
	}
	if res.DeadLetters > 0 {
		return &exitError{code: 1, err: fmt.Errorf("%d rows refused by ClickHouse and set aside: cdc deadletter list", res.DeadLetters)}
	}
	return nil
}

type letterJSON struct {
	ID        int64              `json:"id"`
	EventID   *string            `json:"event_id"`
	CommitLSN string             `json:"commit_lsn"`
	Seq       int64              `json:"seq"`
	RowData   map[string]*string `json:"row_data"`
	Error     string             `json:"error"`
	CreatedAt time.Time          `json:"created_at"`
}

func runDeadLetter(ctx context.Context, cfg config.Config, args []string, stdout io.Writer, log *zap.Logger) error {
	if len(args) == 0 {
		return usageErr("want a subcommand: list [--json] [--limit N] or replay [--id N]")
	}
	if wantsHelp(args[:1]) {
		return &helpRequest{text: "usage: cdc deadletter list|replay [flags]\n  cdc deadletter list -h and cdc deadletter replay -h list their flags\n"}
	}
	switch args[0] {
	case "list":
		return runDeadLetterList(ctx, cfg, args[1:], stdout)
	case "replay":
		return runDeadLetterReplay(ctx, cfg, args[1:], stdout, log)
	default:
		return usageErr("unknown subcommand %q: want list or replay", args[0])
	}
}

func runDeadLetterList(ctx context.Context, cfg config.Config, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("deadletter list", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	limit := fs.Int("limit", 100, "dead letters to show, oldest first")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *limit <= 0 {
		return usageErr("--limit %d must be positive", *limit)
	}
	pool, err := openOperatorPool(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	store := deadletter.New(pool, cfg.SlotName)
	if *asJSON {
		setMemoryLimit(cfg)
		return printLettersJSON(ctx, store, *limit, cfg, stdout)
	}
	letters, total, err := store.Listing(ctx, *limit)
	if err != nil {
		return err
	}
	return printLetters(stdout, letters, total)
}

// printLetters prints the letters as a table, and how many of total they
// are. An error's control characters (a tab, a newline, a carriage return)
// print as spaces: a tab is tabwriter's column break, and would shift the
// row's cells; a carriage return would print over the row.
func printLetters(stdout io.Writer, letters []deadletter.Letter, total int64) error {
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tEVENT ID\tPOSITION\tCREATED\tERROR")
	for _, l := range letters {
		eventID := "-"
		if l.EventID != nil {
			eventID = *l.EventID
		}
		fmt.Fprintf(tw, "%d\t%s\t%s#%d\t%s\t%s\n", l.ID, eventID, l.CommitLSN, l.Seq,
			l.CreatedAt.UTC().Format(time.RFC3339), strings.Map(func(r rune) rune {
				if unicode.IsControl(r) {
					return ' '
				}
				return r
			}, l.Error))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("print dead letters: %w", err)
	}
	if _, err := fmt.Fprintf(stdout, "%d of %d dead letters shown\n", len(letters), total); err != nil {
		return fmt.Errorf("print dead letters: %w", err)
	}
	return nil
}

// printLettersJSON prints up to limit letters with their values as one
// indented JSON array, reading and printing them a page at a time: letters
// may hold tens of MB each, and --limit 100 of them must not all be in
// memory at once (twice over, encoded). Pages are bounded like replay's,
// by CDC_BATCH_MAX_ROWS and CDC_BATCH_MAX_BYTES.
func printLettersJSON(ctx context.Context, store *deadletter.Store, limit int, cfg config.Config, stdout io.Writer) error {
	w := bufio.NewWriter(stdout)
	printed := 0
	var after int64
	for printed < limit {
		page, more, err := store.Page(ctx, after, math.MaxInt64, min(limit-printed, cfg.BatchMaxRows), cfg.BatchMaxBytes)
		if err != nil {
			// What was printed goes out, the array unclosed: JSON a
			// script cannot parse, not a shorter list that looks whole.
			_ = w.Flush()
			return err
		}
		for _, l := range page {
			// The array's elements as json.Encoder with SetIndent("",
			// "  ") prints them.
			// In UTC, as the text listing prints it: not in the zone of
			// whatever host or container runs the command.
			l.CreatedAt = l.CreatedAt.UTC()
			b, err := json.MarshalIndent(letterJSON(l), "  ", "  ")
			if err != nil {
				return fmt.Errorf("print dead letter %d: %w", l.ID, err)
			}
			sep := ",\n  "
			if printed == 0 {
				sep = "[\n  "
			}
			if _, err := w.WriteString(sep); err != nil {
				return fmt.Errorf("print dead letters: %w", err)
			}
			if _, err := w.Write(b); err != nil {
				return fmt.Errorf("print dead letters: %w", err)
			}
			printed++
			after = l.ID
		}
		if !more || len(page) == 0 {
			break
		}
	}
	end := "\n]\n"
	if printed == 0 {
		end = "[]\n"
	}
	if _, err := w.WriteString(end); err != nil {
		return fmt.Errorf("print dead letters: %w", err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("print dead letters: %w", err)
	}
	return nil
}

func runDeadLetterReplay(ctx context.Context, cfg config.Config, args []string, stdout io.Writer, log *zap.Logger) error {
	fs := flag.NewFlagSet("deadletter replay", flag.ContinueOnError)
	id := fs.Int64("id", 0, "replay only the dead letter with this id (default: all)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *id < 0 {
		return usageErr("--id %d must not be negative (0, the default, replays all)", *id)
	}
	setMemoryLimit(cfg)
	pool, ch, closeBoth, err := openBoth(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeBoth()

	store := deadletter.New(pool, cfg.SlotName)
	held, release, err := store.LockReplay(ctx)
	if errors.Is(err, deadletter.ErrReplayRunning) {
		return &exitError{code: 1, err: err}
	}
	if err != nil {
		return err
	}
	defer release()
	ctx = held
	// A step that failed because the lock was lost says so.
	lockLost := func(err error) error {
		if cause := context.Cause(held); errors.Is(cause, deadletter.ErrReplayLockLost) {
			return &exitError{code: 1, err: cause}
		}
		return err
	}
	// The outbox's column types, by name: a letter keeps its values as
	// text, and the sink reads some by type (a box[] is refused from an
	// Array column, not split at its commas).
	outbox, err := backfill.LoadRelation(ctx, pool)
	if err != nil {
		return lockLost(fmt.Errorf("read the outbox's column types for the replay: %w", err))
	}
	res, err := backfill.Replay(ctx, store, ch, outbox, *id, cfg.BatchMaxRows, cfg.BatchMaxBytes)
	if err != nil {
		// What was settled before the failure is said; the failure is
		// not a summary of a replay done.
		fmt.Fprintf(stdout, "replay failed after %d dead letters replayed into %s and %d refused again\n", res.Replayed, sink.Table, res.Refused)
		if res.Unsettled > 0 {
			// Their rows are in event_log: said, lest the operator
			// think them lost, or take the next replay's for new ones.
			fmt.Fprintf(stdout, "%d more were stored in %s but are still in cdc_dead_letter: the next replay stores them again (SELECT … FINAL shows each once)\n", res.Unsettled, sink.Table)
		}
		if errors.Is(err, backfill.ErrNoSuchLetter) {
			return &exitError{code: 1, err: err}
		}
		return lockLost(err)
	}
	fmt.Fprintf(stdout, "replayed %d dead letters into %s; %d refused again\n", res.Replayed, sink.Table, res.Refused)
	if res.Refused > 0 {
		return &exitError{code: 1, err: fmt.Errorf("%d dead letters refused again; they stay with the new error: cdc deadletter list", res.Refused)}
	}
	return nil
}

// rowFilter reads the row filter of cfg's publication (backfill.RowFilter)
// and, when there is one, logs it once, saying what the command does
// with it.
func rowFilter(ctx context.Context, pool backfill.Querier, cfg config.Config, log *zap.Logger, does string) (string, error) {
	filter, err := backfill.RowFilter(ctx, pool, cfg.Publication)
	if err == nil && filter != "" {
		log.Info("the publication sends cdc run only the outbox rows its row filter passes: "+does,
			zap.String("row_filter", filter), zap.String("publication", cfg.Publication))
	}
	return filter, err
}
