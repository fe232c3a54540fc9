package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventcdc/cdc/backfill"
	"github.com/eventcdc/cdc/config"
	"github.com/eventcdc/cdc/replication"
)

// The bounds of the PostgreSQL sessions of verify, backfill and deadletter
// list and replay: commands an operator runs by hand, and waits for. A
// table locked by another session (an ALTER TABLE, a LOCK TABLE in a
// transaction left open) held each of them for ever, and so did a server
// that stopped answering once connected. Each page they read or write is
// one short statement, so that a whole backfill may take hours while no
// statement comes near these, as long as its events are not of hundreds
// of MB: a page's time grows with its largest event
// (explainStatementTimeout). A DSN that sets lock_timeout or
// statement_timeout itself keeps its own (docs/operations.md, Bounds of
// the operator commands).
const (
	operatorLockTimeout      = 15 * time.Second
	operatorStatementTimeout = 45 * time.Second
	// operatorSilenceMargin is how long past statement_timeout a
	// statement may go without a byte from PostgreSQL before cdc gives
	// the server up as frozen: the server's own cancel comes first.
	operatorSilenceMargin = 15 * time.Second
)

// operatorBounds sets the operator commands' bounds on pcfg, parsed from
// dsn: lock_timeout and statement_timeout for each session, unless dsn
// sets them, and a bound on PostgreSQL's silence past the statement
// timeout in force. A DSN's statement_timeout of 0 (none) leaves silence
// unbounded too: a statement may then take as long as it does.
func operatorBounds(dsn string, pcfg *pgxpool.Config) error {
	params := pcfg.ConnConfig.RuntimeParams
	if setting(params, "lock_timeout") == "" {
		params["lock_timeout"] = strconv.FormatInt(operatorLockTimeout.Milliseconds(), 10)
	}
	stmt := operatorStatementTimeout
	if v := setting(params, "statement_timeout"); v != "" {
		d, err := pgDuration(v)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("CDC_PG_DSN: statement_timeout %q: %w", v, err)}
		}
		if d == 0 {
			return nil
		}
		stmt = d
	} else {
		params["statement_timeout"] = strconv.FormatInt(operatorStatementTimeout.Milliseconds(), 10)
	}
	replication.BoundSilence(&pcfg.ConnConfig.Config, stmt+operatorSilenceMargin)
	return nil
}

// setting is the value a session opened with params gets for a
// PostgreSQL setting, whose names are not case-sensitive: the setting
// named as a connection parameter, else the last -c name=value or
// --name=value in options (libpq's options, or PGOPTIONS, which pgx reads
// into it). PostgreSQL applies options first and the parameters after, so
// a parameter wins; cdc adding its own as a parameter would override what
// options said.
func setting(params map[string]string, name string) string {
	options := ""
	for k, v := range params {
		if strings.EqualFold(k, name) {
			return v
		}
		if strings.EqualFold(k, "options") {
			options = v
		}
	}
	value := ""
	words := splitOptions(options)
	for i := 0; i < len(words); i++ {
		w, ok := "", false
		switch {
		case words[i] == "-c" && i+1 < len(words):
			i++
			w, ok = words[i], true
		case strings.HasPrefix(words[i], "-c"):
			w, ok = words[i][2:], true
		case strings.HasPrefix(words[i], "--"):
			w, ok = words[i][2:], true
		}
		if !ok {
			continue
		}
		// PostgreSQL reads a dash in an option's name as an underscore.
		k, v, found := strings.Cut(w, "=")
		if found && strings.EqualFold(strings.ReplaceAll(k, "-", "_"), name) {
			value = v
		}
	}
	return value
}

// splitOptions splits options into words as PostgreSQL does
// (pg_split_opts): at whitespace, where a backslash makes the next
// character, a space included, part of the word.
func splitOptions(options string) []string {
	var words []string
	var w strings.Builder
	in, escaped := false, false
	for _, r := range options {
		switch {
		case escaped:
			w.WriteRune(r)
			escaped = false
		case r == '\\':
			escaped, in = true, true
		case unicode.IsSpace(r):
			if in {
				words = append(words, w.String())
				w.Reset()
				in = false
			}
		default:
			w.WriteRune(r)
			in = true
		}
	}
	if in {
		words = append(words, w.String())
	}
	return words
}

// An integer time setting's number as PostgreSQL reads it (parse_int):
// strtol's with base 0 (0x… hex, 0… octal), or strtod's where a '.' or an
// exponent follows.
var (
	pgInt   = regexp.MustCompile(`^[+-]?(0[xX][0-9a-fA-F]+|[0-9]+)`)
	pgFloat = regexp.MustCompile(`^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?`)
)

// pgDuration reads a time setting in milliseconds (statement_timeout) as
// PostgreSQL does: a number of milliseconds, or a number with one of its
// units, rounded to a whole millisecond, half to even. Under half a
// millisecond is 0, which PostgreSQL takes for no timeout.
func pgDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var n float64
	num := pgInt.FindString(s)
	if rest := s[len(num):]; num == "" || strings.HasPrefix(rest, ".") || strings.HasPrefix(rest, "e") || strings.HasPrefix(rest, "E") {
		num = pgFloat.FindString(s)
		f, err := strconv.ParseFloat(num, 64)
		if err != nil {
			return 0, errors.New("not a time PostgreSQL reads (e.g. 30000 or 30s)")
		}
		n = f
	} else {
		i, err := strconv.ParseInt(num, 0, 64)
		if err != nil {
			return 0, errors.New("not a time PostgreSQL reads (e.g. 30000 or 30s)")
		}
		n = float64(i)
	}
	if n < 0 {
		return 0, errors.New("not a time PostgreSQL reads (e.g. 30000 or 30s)")
	}
	unit := strings.TrimSpace(s[len(num):])
	per, ok := map[string]float64{"": 1, "us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}[unit]
	if !ok {
		return 0, fmt.Errorf("unit %q is none of PostgreSQL's (us, ms, s, min, h, d)", unit)
	}
	ms := math.RoundToEven(n * per)
	if ms > float64(math.MaxInt32) {
		return 0, errors.New("more than PostgreSQL's largest statement_timeout, 2147483647 ms")
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// openOperatorPool opens PostgreSQL for verify, backfill and deadletter:
// sessions that print values as the replication stream does, within the
// operator commands' bounds.
func openOperatorPool(ctx context.Context, cfg config.Config) (*pgxpool.Pool, error) {
	if _, err := pgxpool.ParseConfig(cfg.PGDSN); err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("CDC_PG_DSN: %w", err)}
	}
	pcfg, err := backfill.PoolConfig(cfg.PGDSN)
	if err != nil {
		return nil, err
	}
	if err := operatorBounds(cfg.PGDSN, pcfg); err != nil {
		return nil, err
	}
	return backfill.OpenPoolConfig(ctx, pcfg)
}

// explainWait adds to a command's error what it waited for, where
// PostgreSQL gave up waiting for a lock: which sessions hold, or queue
// for, a lock on cdc's tables that the command's would wait behind. It
// asks on a connection of its own, within a few seconds; what it cannot
// find out is left unsaid.
func explainWait(ctx context.Context, dsn string, err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "55P03" { // lock_not_available: lock_timeout
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	// Parsed as the command's pool was: pgx alone would keep the pool's
	// settings (pool_max_conns, …), which the operator commands take, and
	// send them to PostgreSQL, which refuses the connection.
	pooled, perr := pgxpool.ParseConfig(dsn)
	if perr != nil {
		return err
	}
	pcfg := pooled.ConnConfig
	replication.ConnDefaults(&pcfg.Config)
	pcfg.ConnectTimeout = 5 * time.Second
	conn, cerr := pgx.ConnectConfig(ctx, pcfg)
	if cerr != nil {
		return err
	}
	defer conn.Close(context.Background())
	waited := operatorLockTimeout.String()
	if v := setting(pcfg.RuntimeParams, "lock_timeout"); v != "" {
		waited = v
	}
	// The modes that keep a reader (ACCESS SHARE) or a writer (ROW
	// EXCLUSIVE) of a table waiting; a session that waits for one of them
	// keeps later ones waiting behind it, so those not yet granted count.
	rows, qerr := conn.Query(ctx, `
		SELECT l.relation::regclass::text, l.pid, l.mode, l.granted, coalesce(a.state, ''),
		       coalesce(extract(epoch FROM now() - a.xact_start)::bigint, 0)
		FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'relation'
		  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND l.relation IN (SELECT c FROM unnest(ARRAY[to_regclass('outbox'), to_regclass('cdc_dead_letter')]) AS c WHERE c IS NOT NULL)
		  AND l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
		  AND l.pid <> pg_backend_pid()
		ORDER BY l.granted DESC, l.pid`)
	if qerr != nil {
		return err
	}
	defer rows.Close()
	var held []string
	for rows.Next() {
		var table, mode, state string
		var pid int32
		var granted bool
		var xactAge int64
		if rows.Scan(&table, &pid, &mode, &granted, &state, &xactAge) != nil {
			return err
		}
		how := "held by"
		if !granted {
			how = "wanted (not granted yet) by"
		}
		s := fmt.Sprintf("%s on %s %s pid %d", mode, table, how, pid)
		if state != "" {
			s += fmt.Sprintf(" (%s, its transaction open %s)", state, time.Duration(xactAge)*time.Second)
		}
		held = append(held, s)
	}
	if rows.Err() != nil || len(held) == 0 {
		return fmt.Errorf("%w (waited %s, lock_timeout, for a lock another session holds)", err, waited)
	}
	return fmt.Errorf("%w (waited %s, lock_timeout, for a lock: %s)", err, waited, strings.Join(held, "; "))
}

// explainStatementTimeout adds to a backfill's or a dead letter command's
// error, where PostgreSQL cancelled a statement at statement_timeout, how
// to let it run longer. Those statements read events whole, and a page's
// time grows with its largest event, not its row count: measured on 2
// shared cores beside a streaming cdc run, PostgreSQL took 30 ms a MB to
// print an outbox row and 40-50 ms a MB a dead letter (jsonb), and replay's
// read of one 200 MB letter took 12.4 s. A letter of jsonb's 256 MB most,
// or an outbox row of several hundred MB, on a slower or busier server,
// can take the whole 45 s, and the same page then fails the same way on
// every try. A bound a DSN sets is said as the DSN spells it.
func explainStatementTimeout(dsn string, err error) error {
	var pgErr *pgconn.PgError
	// 57014 is any cancel; only statement_timeout's says so.
	if !errors.As(err, &pgErr) || pgErr.Code != "57014" || !strings.Contains(pgErr.Message, "statement timeout") {
		return err
	}
	bound := operatorStatementTimeout.String()
	if pcfg, perr := pgconn.ParseConfig(dsn); perr == nil {
		if v := setting(pcfg.RuntimeParams, "statement_timeout"); v != "" {
			bound = v
		}
	}
	return fmt.Errorf("%w (statement_timeout %s: a page holding an event of hundreds of MB can take longer, and fails again at the same event; set a longer one in CDC_PG_DSN, e.g. ?statement_timeout=10min, or 0 for none)", err, bound)
}
