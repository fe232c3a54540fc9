// Package config loads cdc's settings from environment variables. Every
// problem is collected and reported at once, each naming its variable; values
// that fail to parse never fall back to a default, and DSNs are never echoed.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"

	ddl "github.com/eventcdc/cdc/sql"
)

// Config is everything cdc can be told. Zero values are never used: Load
// fills every field from the environment or its default.
type Config struct {
	PGDSN            string        // CDC_PG_DSN, required
	ClickHouseDSN    string        // CDC_CLICKHOUSE_DSN, required (clickhouse://host:port/db)
	SlotName         string        // CDC_SLOT_NAME
	Publication      string        // CDC_PUBLICATION
	BatchMaxRows     int           // CDC_BATCH_MAX_ROWS
	BatchMaxBytes    int           // CDC_BATCH_MAX_BYTES
	FlushInterval    time.Duration // CDC_FLUSH_INTERVAL
	InsertsInFlight  int           // CDC_INSERTS_IN_FLIGHT: batches stored at once
	MetricsAddr      string        // CDC_METRICS_ADDR; "off" disables the HTTP server
	LogLevel         zapcore.Level // CDC_LOG_LEVEL
	LogFormat        string        // CDC_LOG_FORMAT: json or console
	OutboxRetention  time.Duration // CDC_OUTBOX_RETENTION; 0 keeps rows forever
	ShutdownTimeout  time.Duration // CDC_SHUTDOWN_TIMEOUT: budget for the last flush on SIGTERM
	PGReceiveBuffer  int           // CDC_PG_RECEIVE_BUFFER: the replication socket's receive buffer; 0 leaves it to the kernel
	PGReceiveTimeout time.Duration // CDC_PG_RECEIVE_TIMEOUT: reconnect when PostgreSQL sends nothing for this long; 0: never
	Profiling        bool          // CDC_PPROF=on: Go's profiles under /debug/pprof/ on CDC_METRICS_ADDR
}

// Defaults. The byte and row limits keep a backlog drain in large inserts
// (ClickHouse prefers few big inserts) while bounding memory: the connector
// holds at most CDC_INSERTS_IN_FLIGHT + 1 batches at once (three by
// default). Two INSERTs in flight keep ClickHouse busy while the other one's
// reply travels back.
const (
	DefaultSlotName      = "cdc_outbox"
	DefaultPublication   = "cdc_outbox"
	DefaultBatchMaxRows  = 50000
	DefaultBatchMaxBytes = 16 << 20
	// MinBatchMaxBytes refuses a unit left off (CDC_BATCH_MAX_BYTES=16,
	// meant as MiB), which would make every event an INSERT of its own
	// and ClickHouse refuse them as too many parts. MaxBatchMaxBytes
	// keeps the memory the connector holds, (CDC_INSERTS_IN_FLIGHT + 1)
	// batches, within what a sidecar is given.
	MinBatchMaxBytes       = 64 << 10
	MaxBatchMaxBytes       = 1 << 30
	DefaultFlushInterval   = time.Second
	DefaultInsertsInFlight = 2
	MaxInsertsInFlight     = 16
	DefaultMetricsAddr     = ":9187"
	DefaultOutboxRetention = 24 * time.Hour
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultPGReceiveBuffer holds what the walsender sends during a
	// read pause at a backlog's rate several times over, and is small
	// enough that the walsender's sends often queue and coalesce behind it
	// (replication/pace.go; docs/performance.md). A socket's window is at
	// most this buffer, so a connector far from its database streams at
	// most about this much per round trip: 512 KiB per 10 ms is 50 MiB/s.
	DefaultPGReceiveBuffer = 512 << 10
	MaxPGReceiveBuffer     = 16 << 20
	// DefaultPGReceiveTimeout is PostgreSQL's own wal_receiver_timeout.
	// cdc asks an idle server for a keepalive halfway to it, and checks
	// once a second, so shorter than MinPGReceiveTimeout cannot work.
	DefaultPGReceiveTimeout = 60 * time.Second
	MinPGReceiveTimeout     = 2 * time.Second
	// MinPGReceiveBuffer is where a receive buffer stops being a setting
	// and becomes a stall: the socket's window, and so what the walsender
	// may send per round trip, is at most the buffer (a value meant as
	// KiB, 512, would stream a backlog about a kilobyte at a time).
	MinPGReceiveBuffer = 64 << 10
	// The flush interval is a batch's longest wait: under 10 ms the
	// batches are one-row INSERTs again (cdc polls every 20 ms anyway),
	// and over an hour events are late enough to look lost.
	MinFlushInterval = 10 * time.Millisecond
	MaxFlushInterval = time.Hour
	// A shutdown needs time for the last INSERT and acknowledgement; a
	// longer one than an hour outlasts any orchestrator's grace period.
	MinShutdownTimeout = time.Second
	MaxShutdownTimeout = time.Hour
	// MinOutboxRetention keeps retention from racing the pipeline: a
	// row is kept at least this long after its event time.
	MinOutboxRetention = time.Minute
)

// Error is one invalid setting.
type Error struct {
	Var string // the environment variable
	Msg string // what is wrong, never the secret value itself
}

func (e *Error) Error() string { return e.Var + ": " + e.Msg }

// Load reads the configuration through getenv (os.Getenv in production, a
// map in tests). The error, if any, joins one *Error per bad variable.
func Load(getenv func(string) string) (Config, error) {
	l := loader{getenv: getenv}
	c := Config{
		PGDSN:            l.dsn("CDC_PG_DSN", "postgres", "postgresql"),
		ClickHouseDSN:    l.dsn("CDC_CLICKHOUSE_DSN", "clickhouse"),
		SlotName:         l.ident("CDC_SLOT_NAME", DefaultSlotName),
		Publication:      l.ident("CDC_PUBLICATION", DefaultPublication),
		BatchMaxRows:     l.positiveInt("CDC_BATCH_MAX_ROWS", DefaultBatchMaxRows),
		BatchMaxBytes:    l.bytesBetween("CDC_BATCH_MAX_BYTES", DefaultBatchMaxBytes, MinBatchMaxBytes, MaxBatchMaxBytes),
		FlushInterval:    l.durationBetween("CDC_FLUSH_INTERVAL", DefaultFlushInterval, MinFlushInterval, MaxFlushInterval),
		InsertsInFlight:  l.intUpTo("CDC_INSERTS_IN_FLIGHT", DefaultInsertsInFlight, MaxInsertsInFlight),
		MetricsAddr:      l.listenAddr("CDC_METRICS_ADDR", DefaultMetricsAddr),
		LogLevel:         l.level("CDC_LOG_LEVEL"),
		LogFormat:        l.oneOf("CDC_LOG_FORMAT", "json", "json", "console"),
		OutboxRetention:  l.durationOffOrAtLeast("CDC_OUTBOX_RETENTION", DefaultOutboxRetention, MinOutboxRetention),
		ShutdownTimeout:  l.durationBetween("CDC_SHUTDOWN_TIMEOUT", DefaultShutdownTimeout, MinShutdownTimeout, MaxShutdownTimeout),
		PGReceiveBuffer:  l.bytesOffOrBetween("CDC_PG_RECEIVE_BUFFER", DefaultPGReceiveBuffer, MinPGReceiveBuffer, MaxPGReceiveBuffer),
		PGReceiveTimeout: l.durationOffOrAtLeast("CDC_PG_RECEIVE_TIMEOUT", DefaultPGReceiveTimeout, MinPGReceiveTimeout),
		Profiling:        l.oneOf("CDC_PPROF", "off", "off", "on") == "on",
	}
	if c.Profiling && c.MetricsAddr == "off" {
		l.fail("CDC_PPROF", "on, but CDC_METRICS_ADDR is off: the profiles are served on that address")
	}
	return c, errors.Join(l.errs...)
}

// Unrecognised returns the names of CDC_* variables in environ
// (os.Environ's form, NAME=value) that Load does not read: most likely a
// misspelling, whose value would silently not apply. The test harness's
// and the demo's own variables (CDC_TEST_*, CDC_DEMO_*) are not cdc's
// settings and are left out, and so are those Kubernetes gives every
// container for a Service named cdc (CDC_SERVICE_HOST, CDC_PORT_9187_TCP…)
// and, by the form of their values, for one named cdc-something
// (CDC_METRICS_SERVICE_HOST=10.0.0.2, CDC_METRICS_PORT=tcp://…).
func Unrecognised(environ []string) []string {
	read := map[string]bool{}
	_, _ = Load(func(name string) string {
		read[name] = true
		return ""
	})
	var out []string
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "CDC_") || read[name] ||
			strings.HasPrefix(name, "CDC_TEST_") || strings.HasPrefix(name, "CDC_DEMO_") ||
			strings.HasPrefix(name, "CDC_SERVICE_") || name == "CDC_PORT" || strings.HasPrefix(name, "CDC_PORT_") ||
			serviceLink(name, value) {
			continue
		}
		out = append(out, name)
	}
	return out
}

// Kubernetes' variables for a Service (docker links' form): its address,
// its ports, and each port's URL, protocol, number and address.
var (
	serviceHostVar = regexp.MustCompile(`^[A-Z0-9_]+_SERVICE_HOST$`)
	servicePortVar = regexp.MustCompile(`^[A-Z0-9_]+_SERVICE_PORT(_[A-Z0-9_]+)?$`)
	linkURLVar     = regexp.MustCompile(`^[A-Z0-9_]+_PORT(_[0-9]+_(TCP|UDP|SCTP))?$`)
	linkPartVar    = regexp.MustCompile(`^[A-Z0-9_]+_PORT_[0-9]+_(TCP|UDP|SCTP)_(PROTO|PORT|ADDR)$`)
	linkURL        = regexp.MustCompile(`^(tcp|udp|sctp)://[^/]+:[0-9]+$`)
	digits         = regexp.MustCompile(`^[0-9]+$`)
)

// serviceLink reports whether name=value is one of the variables
// Kubernetes sets for a Service: a name of that form with a value of the
// form Kubernetes gives it, so that CDC_METRICS_PORT=9187, a guess at a
// setting, is still named.
func serviceLink(name, value string) bool {
	switch {
	case serviceHostVar.MatchString(name):
		return net.ParseIP(value) != nil
	case servicePortVar.MatchString(name):
		return digits.MatchString(value)
	case linkPartVar.MatchString(name): // before linkURLVar: …_TCP_PORT matches both
		switch name[strings.LastIndexByte(name, '_')+1:] {
		case "PROTO":
			return value == "tcp" || value == "udp" || value == "sctp"
		case "PORT":
			return digits.MatchString(value)
		default: // ADDR
			return net.ParseIP(value) != nil
		}
	case linkURLVar.MatchString(name):
		return linkURL.MatchString(value)
	}
	return false
}

type loader struct {
	getenv func(string) string
	errs   []error
}

func (l *loader) fail(name, format string, args ...any) {
	l.errs = append(l.errs, &Error{Var: name, Msg: fmt.Sprintf(format, args...)})
}

func (l *loader) str(name, def string) string {
	if v := strings.TrimSpace(l.getenv(name)); v != "" {
		return v
	}
	return def
}

// dsn checks the URL's shape without ever putting the value in the message:
// a DSN carries a password.
func (l *loader) dsn(name string, schemes ...string) string {
	v := strings.TrimSpace(l.getenv(name))
	if v == "" {
		l.fail(name, "required, e.g. %s://user:password@host/db", schemes[0])
		return ""
	}
	// A refused value is returned as "": nothing parses it again to name
	// the same mistake twice.
	u, err := url.Parse(v)
	if err != nil {
		l.fail(name, "not a URL (value hidden: it may hold a password)")
		return ""
	}
	for _, s := range schemes {
		if u.Scheme == s {
			// url.Parse takes Postgres:// or postgres:/ for postgres,
			// pgx only postgres:// and postgresql:// as written: it
			// reads anything else as keyword=value settings, so the
			// host is ignored (libpq's PGHOST or socket is dialled) and
			// the whole URL, password and all, goes to that server as a
			// setting's name, which it refuses, quoting it in the error.
			if (s == "postgres" || s == "postgresql") && !strings.HasPrefix(v, s+"://") {
				l.fail(name, "does not start with postgres:// or postgresql:// as written (lowercase, two slashes), the only forms the driver reads as a URL: it would read this one as keyword=value settings, the host ignored and the whole URL, password and all, sent to the server as a setting's name")
				return ""
			}
			// PostgreSQL names a Unix socket's directory in a host
			// parameter (postgres://user@/db?host=/var/run/postgresql),
			// which is how a connector next to its database connects.
			// An empty host otherwise is a template gone wrong, not a
			// wish for libpq's default socket.
			socket := (s == "postgres" || s == "postgresql") && u.Query().Get("host") != ""
			if u.Host == "" && !socket {
				l.fail(name, "no host in the URL")
				return ""
			}
			return v
		}
	}
	l.fail(name, "scheme %q not supported, want %s://", u.Scheme, strings.Join(schemes, ":// or "))
	return ""
}

func (l *loader) ident(name, def string) string {
	v := l.str(name, def)
	if !ddl.ValidIdentifier(v) {
		l.fail(name, "%q is not a valid name: use lowercase letters, digits and _, not starting with a digit (at most 63)", v)
	}
	return v
}

func (l *loader) positiveInt(name string, def int) int {
	v := strings.TrimSpace(l.getenv(name))
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		l.fail(name, "%q is not a positive whole number", v)
		return def
	}
	return n
}

func (l *loader) intUpTo(name string, def, most int) int {
	n := l.positiveInt(name, def)
	if n > most {
		l.fail(name, "%d is more than %d", n, most)
		return def
	}
	return n
}

func (l *loader) duration(name string, def time.Duration, zeroOK bool) time.Duration {
	v := strings.TrimSpace(l.getenv(name))
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		l.fail(name, "%q is not a duration, e.g. 500ms, 1s, 24h", v)
		return def
	}
	if d < 0 && zeroOK {
		l.fail(name, "%q must not be negative (0 turns it off)", v)
		return def
	}
	if d < 0 || (d == 0 && !zeroOK) {
		l.fail(name, "%q must be greater than zero", v)
		return def
	}
	return d
}

// durationBetween is a duration from least to most.
func (l *loader) durationBetween(name string, def, least, most time.Duration) time.Duration {
	d := l.duration(name, def, false)
	switch {
	case d < least:
		l.fail(name, "%s is too short: at least %s", d, least)
		return def
	case d > most:
		l.fail(name, "%s is too long: at most %s", d, most)
		return def
	}
	return d
}

// durationOffOrAtLeast is a duration that is 0 (off) or at least least.
func (l *loader) durationOffOrAtLeast(name string, def, least time.Duration) time.Duration {
	d := l.duration(name, def, true)
	if d != 0 && d < least {
		l.fail(name, "%s is too short: use 0 (off) or at least %s", d, least)
		return def
	}
	return d
}

var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"B", 1},
}

func (l *loader) bytes(name string, def int) int {
	v := strings.TrimSpace(l.getenv(name))
	if v == "" {
		return def
	}
	n, err := ParseBytes(v)
	if err != nil {
		l.fail(name, "%v", err)
		return def
	}
	return n
}

// bytesBetween is bytes from least to most.
func (l *loader) bytesBetween(name string, def, least, most int) int {
	n := l.bytes(name, def)
	switch {
	case n < least:
		l.fail(name, "%d bytes is less than %dKiB", n, least>>10)
		return def
	case n > most:
		l.fail(name, "%d bytes is more than %dMiB", n, most>>20)
		return def
	}
	return n
}

// bytesOffOrBetween is bytes that also takes 0 (off); otherwise from
// least to most bytes.
func (l *loader) bytesOffOrBetween(name string, def, least, most int) int {
	if strings.TrimSpace(l.getenv(name)) == "0" {
		return 0
	}
	n := l.bytes(name, def)
	switch {
	case n < least:
		l.fail(name, "%d bytes is less than %d: use 0 (the kernel's) or at least %dKiB", n, least, least>>10)
		return def
	case n > most:
		l.fail(name, "%d bytes is more than %d", n, most)
		return def
	}
	return n
}

// ParseBytes reads a size such as 1048576, 512KiB, 16MiB or 1GB.
func ParseBytes(s string) (int, error) {
	num, mult := s, int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a size, e.g. 16MiB, 512KiB or 1048576", s)
	}
	if n > (1<<40)/mult {
		return 0, fmt.Errorf("%q is larger than 1TiB", s)
	}
	return int(n * mult), nil
}

func (l *loader) level(name string) zapcore.Level {
	v := strings.TrimSpace(l.getenv(name))
	if v == "" {
		return zapcore.InfoLevel
	}
	// zap also knows dpanic, panic and fatal; they would hide the error
	// every command logs when it fails, so they are refused.
	lvl, err := zapcore.ParseLevel(v)
	if err != nil || lvl > zapcore.ErrorLevel {
		l.fail(name, "%q is not a level: debug, info, warn or error", v)
		return zapcore.InfoLevel
	}
	return lvl
}

// listenAddr is host:port for net.Listen, or "off". Checked here so that a
// typo exits 2 naming the variable, not 1 when the listener fails.
func (l *loader) listenAddr(name, def string) string {
	v := l.str(name, def)
	if v == "off" {
		return v
	}
	_, port, err := net.SplitHostPort(v)
	n, perr := strconv.ParseUint(port, 10, 16)
	if err != nil || perr != nil {
		l.fail(name, "%q is not host:port (e.g. :9187 or 127.0.0.1:9187) or off", v)
		return def
	}
	if n == 0 {
		// The kernel would pick a port no probe or scraper knows.
		l.fail(name, "%q has port 0, which listens on a port chosen at random: give a port (e.g. :9187) or off", v)
		return def
	}
	return v
}

func (l *loader) oneOf(name, def string, allowed ...string) string {
	v := l.str(name, def)
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	l.fail(name, "%q is not one of %s", v, strings.Join(allowed, ", "))
	return def
}

// Summary renders the configuration for a start-up log line, DSNs reduced
// to host and database so no password is ever logged.
func (c Config) Summary() map[string]string {
	return map[string]string{
		"pg":                 Redact(c.PGDSN),
		"clickhouse":         Redact(c.ClickHouseDSN),
		"slot":               c.SlotName,
		"publication":        c.Publication,
		"batch_max_rows":     strconv.Itoa(c.BatchMaxRows),
		"batch_max_bytes":    strconv.Itoa(c.BatchMaxBytes),
		"flush_interval":     c.FlushInterval.String(),
		"inserts_in_flight":  strconv.Itoa(c.InsertsInFlight),
		"metrics_addr":       c.MetricsAddr,
		"outbox_retention":   c.OutboxRetention.String(),
		"pg_receive_buffer":  strconv.Itoa(c.PGReceiveBuffer),
		"pg_receive_timeout": c.PGReceiveTimeout.String(),
		"shutdown_timeout":   c.ShutdownTimeout.String(),
		"pprof":              strconv.FormatBool(c.Profiling),
	}
}

// Redact returns a DSN with its password (user info and password query
// parameters) replaced, for logs and status output.
func Redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
	}
	q := u.Query()
	for k := range q {
		// password, and libpq's sslpassword (the client key's passphrase).
		if strings.Contains(strings.ToLower(k), "password") {
			q.Set(k, "xxxxx")
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}
