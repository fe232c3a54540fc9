// Command cdc moves application events from a PostgreSQL outbox table into
// ClickHouse through logical replication. It only wires the parts together:
// parse configuration, build the pipeline, run it, map the outcome to an exit
// code (2: configuration or usage, 1: runtime failure, 0: done or stopped by
// a signal).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/eventcdc/cdc/config"
	"github.com/eventcdc/cdc/replication"
	"github.com/eventcdc/cdc/sink"
)

const usage = `usage: cdc <command> [flags]

commands:
  migrate                  create the outbox, cdc_dead_letter, the publication, the replication slot and event_log (idempotent)
  run                      stream outbox inserts into ClickHouse until SIGTERM
  status [--json]          slot state, lag, retained WAL, outbox rows, dead letters
  verify --since TIME      compare outbox rows since TIME (RFC 3339 or -infinity) with event_log
  backfill --since TIME    re-ship outbox rows since TIME (idempotent by event id; rows must not be updated)
  deadletter list|replay   show or re-ship rows ClickHouse refused
  version                  print the version and exit

cdc <command> -h lists a command's flags.

configuration: CDC_* environment variables, see README.md
`

// version is set at build time: -ldflags "-X main.version=v1.2.3" (the
// Dockerfile's VERSION build argument). Without it, a binary built in a
// git checkout names its commit.
var version = "dev"

func init() {
	if version != "dev" {
		return
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch {
		case s.Key == "vcs.revision" && len(s.Value) >= 12:
			rev = s.Value[:12]
		case s.Key == "vcs.modified" && s.Value == "true":
			dirty = "-dirty"
		}
	}
	if rev != "" {
		version = "dev-" + rev + dirty
	}
}

// exitError carries an exit code through the error chain.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// helpRequest is a command's -h: its flags, printed as they are, exit 0.
type helpRequest struct{ text string }

func (h *helpRequest) Error() string { return h.text }

func usageErr(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

func main() {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, stopSignals()...)
	ctx, cancel := context.WithCancel(context.Background())
	go onSignals(sigs, cancel, os.Getpid() == 1, dieFrom, os.Exit)
	os.Exit(Main(ctx, os.Args[1:], os.Getenv, os.Environ(), os.Stdout, os.Stderr))
}

// stopSignals are the signals that stop cdc as SIGTERM does: SIGINT
// (Ctrl-C), and SIGHUP, a terminal's hangup (an ssh session gone with cdc
// run in the foreground, or `docker kill -s HUP`), which by Go's default
// ended the process with what it held unstored and, as a container's
// PID 1, exited 2, which reads as a bad setting. Not SIGHUP when the
// process started with it ignored (nohup): Notify would undo that, and a
// hangup would stop what nohup was asked to keep running.
func stopSignals() []os.Signal {
	sigs := []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	if !signal.Ignored(syscall.SIGHUP) {
		sigs = append(sigs, syscall.SIGHUP)
	}
	return sigs
}

// onSignals cancels the command at the first signal: a graceful shutdown,
// which may wait up to CDC_SHUTDOWN_TIMEOUT for an INSERT. A second one
// ends the process at once — whoever sends it means now, and nothing not
// stored has been acknowledged — by the signal's default action, as if
// cdc caught neither. Not as a container's PID 1, where the kernel ignores
// that action and Go would exit 2, which reads as a bad setting: there it
// exits with the shell's code for a process the signal killed, 128 + its
// number (143 for SIGTERM). A SIGHUP is never that second signal: a
// terminal's hangup comes twice, from the shell, which passes it on to its
// foreground job, and from the kernel, and the second would end at once
// the shutdown the first began.
func onSignals(sigs <-chan os.Signal, cancel context.CancelFunc, pid1 bool, die func(syscall.Signal), exit func(int)) {
	<-sigs
	cancel()
	sig, _ := (<-sigs).(syscall.Signal)
	for sig == syscall.SIGHUP {
		sig, _ = (<-sigs).(syscall.Signal)
	}
	if !pid1 {
		die(sig)
	}
	exit(128 + int(sig))
}

// dieFrom ends the process by sig's default action.
func dieFrom(sig syscall.Signal) {
	signal.Reset(sig)
	_ = syscall.Kill(os.Getpid(), sig)
	time.Sleep(time.Second) // the signal may reach another thread a moment later
}

// Main runs one command and returns the process exit code. environ is
// only searched for CDC_* names cdc does not know.
func Main(ctx context.Context, args []string, getenv func(string) string, environ []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "version" {
		// Checked like every command's: a stray argument is a mistake to
		// report, not something to ignore.
		var help *helpRequest
		switch err := parseFlags(flag.NewFlagSet("version", flag.ContinueOnError), args[1:]); {
		case errors.As(err, &help):
			fmt.Fprintln(stderr, "usage: cdc version\n  prints this build's version (no flags, no settings read)")
			return 0
		case err != nil:
			fmt.Fprintf(stderr, "cdc version: %s\n", oneLine(err))
			return 2
		}
		fmt.Fprintln(stdout, version)
		return 0
	}
	cmds := map[string]func(context.Context, config.Config, []string, io.Writer, *zap.Logger) error{
		"migrate":    runMigrate,
		"run":        runRun,
		"status":     runStatus,
		"verify":     runVerify,
		"backfill":   runBackfill,
		"deadletter": runDeadLetter,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "cdc: unknown command %q\n%s", args[0], usage)
		return 2
	}
	cfg, err := config.Load(getenv)
	switch {
	case wantsHelp(args[1:]) && err != nil:
		// Help needs no configuration: the command answers from its
		// flags before it reads any.
		cfg, err = config.Config{LogLevel: zapcore.ErrorLevel}, nil
	case !wantsHelp(args[1:]):
		// Every bad setting in one message, not one per attempt.
		err = errors.Join(err, checkDSNs(cfg, args[0]))
	}
	if err != nil {
		msg := oneLine(err)
		// A required setting missing and a variable cdc does not read are
		// often one misspelling: say both.
		if names := config.Unrecognised(environ); len(names) > 0 {
			msg += fmt.Sprintf(" (set but not read by cdc: %s)", strings.Join(names, ", "))
		}
		fmt.Fprintf(stderr, "cdc: invalid configuration: %s\n", msg)
		return 2
	}
	log := newLogger(cfg, stderr)
	defer log.Sync() //nolint:errcheck // nothing to do about a failed sync at exit
	// Not an error: a variable from a newer or older release must not stop
	// a rollout or a rollback.
	if names := config.Unrecognised(environ); len(names) > 0 {
		log.Warn("ignoring environment variables cdc does not read; a misspelling leaves the setting at its default",
			zap.Strings("names", names))
	}

	err = cmd(ctx, cfg, args[1:], stdout, log)
	var ee *exitError
	var help *helpRequest
	switch {
	case err == nil:
		return 0
	case errors.As(err, &help):
		fmt.Fprint(stderr, help.text)
		return 0
	case errors.As(err, &ee):
		fmt.Fprintf(stderr, "cdc %s: %s\n", args[0], oneLine(ee.err))
		return ee.code
	case loginRefused(err) != "":
		fmt.Fprintf(stderr, "cdc %s: %s: %s\n", args[0], loginRefused(err), oneLine(err))
		return 2
	default:
		err = explainWait(ctx, cfg.PGDSN, err)
		if args[0] == "backfill" || args[0] == "deadletter" {
			err = explainStatementTimeout(cfg.PGDSN, err)
		}
		if ctx.Err() != nil && !errors.Is(err, context.Canceled) {
			// A signal cut the command short while it waited on what
			// does not heed it (clickhouse-go's dial, up to its
			// dial_timeout): say so first, then what failed meanwhile.
			err = fmt.Errorf("%w; %w", ctx.Err(), err)
		}
		log.Error(args[0]+" failed", zap.Error(err))
		return 1
	}
}

// loginRefused names the setting behind a login PostgreSQL or ClickHouse
// refused, or TLS that could not be set up, with what to check; "" for any
// other error. A wrong user, password or database, or TLS the server does
// not speak or a certificate not trusted, is a setting to fix, so it
// exits 2 like one; so is a DSN that leads to a pooler
// (replication.IsPoolerRefusal).
func loginRefused(err error) string {
	switch {
	case replication.IsPoolerRefusal(err):
		return "CDC_PG_DSN: the server refused a parameter cdc sends when connecting, as a pooler in front of PostgreSQL does (PgBouncer refuses replication connections before 1.23, and the session settings cdc relies on): point the DSN at PostgreSQL itself, not at a pooler"
	// Before the login cases: a certificate error of PostgreSQL's is
	// crypto/tls's, which sink.IsTLSError knows too.
	case replication.IsTLSError(err):
		return "CDC_PG_DSN: TLS with PostgreSQL failed (the server refused TLS, or its certificate failed the check sslmode asks for: check sslmode and sslrootcert against the server's ssl settings; docs/operations.md, TLS)"
	case sink.IsTLSError(err):
		return "CDC_CLICKHOUSE_DSN: TLS with ClickHouse failed (secure=true to a port that does not speak TLS, or a certificate the system's CAs, or SSL_CERT_FILE, do not trust or that names another host; docs/operations.md, TLS)"
	case replication.IsSettingRefused(err):
		return "CDC_PG_DSN: PostgreSQL refused a setting the DSN sends when connecting (a parameter it does not know, often a misspelling, or a value it does not take)"
	case replication.IsLoginError(err):
		return "CDC_PG_DSN: PostgreSQL refused the login (check the DSN's user, password and database, the server's pg_hba.conf, and the role's REPLICATION attribute and CONNECT privilege)"
	case sink.IsSettingRefused(err):
		return "CDC_CLICKHOUSE_DSN: ClickHouse refused a setting the DSN sends with every query (a parameter that is not an option of the client goes to the server as a setting: a misspelling, or one this server does not have), or one the user's profile forbids (the error names it)"
	case sink.IsLoginError(err):
		return "CDC_CLICKHOUSE_DSN: ClickHouse refused the login (check the DSN's user, password and database)"
	}
	return ""
}

// checkDSNs parses both DSNs as the drivers will, so that an option the
// URL check in config cannot judge (a timeout without a unit, an unknown
// sslmode) exits 2 naming its variable before any command connects: migrate
// would otherwise have created the slot before it opened ClickHouse. The
// drivers' messages hide the passwords. A DSN that config already refused
// is empty here and not parsed again.
func checkDSNs(cfg config.Config, cmd string) error {
	var errs []error
	if cfg.PGDSN != "" {
		if err := checkPGDSN(cfg.PGDSN, cmd); err != nil {
			errs = append(errs, fmt.Errorf("CDC_PG_DSN: %w", err))
		}
	}
	if cfg.ClickHouseDSN != "" {
		if err := sink.CheckDSN(cfg.ClickHouseDSN); err != nil {
			errs = append(errs, fmt.Errorf("CDC_CLICKHOUSE_DSN: %w", err))
		}
	}
	return errors.Join(errs...)
}

// checkPGDSN parses dsn as the pools do, and, for the commands that open a
// connection another way, refuses the settings of pgx and its pool that
// that way would send to PostgreSQL as session settings, which it refuses
// at every connect. run's replication connection is parsed by pgconn
// alone: every pgx setting (pool_max_conns, statement_cache_capacity, …)
// reaches the server, and cdc would never stream. migrate's connection is
// pgx's own: only the pool's (pool_*) do. The other commands use pools,
// which take them all. An application's pgx URL is the likely source.
func checkPGDSN(dsn, cmd string) error {
	pooled, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return err
	}
	// Copied from a replication client's example, it would make every
	// pooled connection a replication one, where PostgreSQL refuses pgx's
	// queries: no slot polling, retention or dead letters.
	if _, ok := pooled.ConnConfig.RuntimeParams["replication"]; ok {
		return errors.New("replication: cdc opens its replication connection itself, and its other connections must not be replication connections (PostgreSQL refuses their queries): remove it")
	}
	var sent map[string]string
	switch cmd {
	case "run":
		plain, err := pgconn.ParseConfig(dsn)
		if err != nil {
			return err
		}
		sent = plain.RuntimeParams
	case "migrate":
		conn, err := pgx.ParseConfig(dsn)
		if err != nil {
			return err
		}
		sent = conn.RuntimeParams
	default:
		return nil
	}
	var pgxOnly []string
	for name := range sent {
		if _, ok := pooled.ConnConfig.RuntimeParams[name]; !ok {
			pgxOnly = append(pgxOnly, name)
		}
	}
	if len(pgxOnly) > 0 {
		slices.Sort(pgxOnly)
		return fmt.Errorf("%s: settings of the pgx driver, not of PostgreSQL, which refuses them on cdc %s's connection: remove them (cdc sizes its own connections)",
			strings.Join(pgxOnly, ", "), cmd)
	}
	return nil
}

// oneLine joins errors.Join's lines so a configuration error is one line.
func oneLine(err error) string {
	s := err.Error()
	out := []rune{}
	for _, r := range s {
		if r == '\n' {
			out = append(out, ';', ' ')
			continue
		}
		out = append(out, r)
	}
	return string(out)
}

func newLogger(cfg config.Config, w io.Writer) *zap.Logger {
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.TimeKey = "ts"
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if cfg.LogFormat == "console" {
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), cfg.LogLevel))
}
