package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

var valid = map[string]string{
	"CDC_PG_DSN":         "postgres://cdc:s3cret@db:5432/app?sslmode=disable",
	"CDC_CLICKHOUSE_DSN": "clickhouse://cdc:s3cret@ch:9000/analytics",
}

func with(kv ...string) map[string]string {
	m := map[string]string{}
	for k, v := range valid {
		m[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestLoad_Defaults(t *testing.T) {
	c, err := Load(env(valid))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		PGDSN:            valid["CDC_PG_DSN"],
		ClickHouseDSN:    valid["CDC_CLICKHOUSE_DSN"],
		SlotName:         "cdc_outbox",
		Publication:      "cdc_outbox",
		BatchMaxRows:     50000,
		BatchMaxBytes:    16 << 20,
		FlushInterval:    time.Second,
		InsertsInFlight:  2,
		MetricsAddr:      ":9187",
		LogLevel:         zapcore.InfoLevel,
		LogFormat:        "json",
		OutboxRetention:  24 * time.Hour,
		ShutdownTimeout:  10 * time.Second,
		PGReceiveBuffer:  512 << 10,
		PGReceiveTimeout: time.Minute,
	}
	if c != want {
		t.Fatalf("got %+v\nwant %+v", c, want)
	}
}

func TestLoad_Values(t *testing.T) {
	c, err := Load(env(with(
		"CDC_SLOT_NAME", "s1", "CDC_PUBLICATION", "p1",
		"CDC_BATCH_MAX_ROWS", "1000", "CDC_BATCH_MAX_BYTES", "8MiB",
		"CDC_FLUSH_INTERVAL", "250ms", "CDC_METRICS_ADDR", "127.0.0.1:9999",
		"CDC_LOG_LEVEL", "debug", "CDC_LOG_FORMAT", "console",
		"CDC_OUTBOX_RETENTION", "0s", "CDC_SHUTDOWN_TIMEOUT", "5s",
		"CDC_INSERTS_IN_FLIGHT", "1", "CDC_PG_RECEIVE_BUFFER", "2MiB",
		"CDC_PPROF", "on", "CDC_PG_RECEIVE_TIMEOUT", "15s",
	)))
	if err != nil {
		t.Fatal(err)
	}
	if c.SlotName != "s1" || c.Publication != "p1" || c.BatchMaxRows != 1000 || c.BatchMaxBytes != 8<<20 ||
		c.FlushInterval != 250*time.Millisecond || c.MetricsAddr != "127.0.0.1:9999" || c.LogLevel != zapcore.DebugLevel ||
		c.LogFormat != "console" || c.OutboxRetention != 0 || c.ShutdownTimeout != 5*time.Second || c.InsertsInFlight != 1 ||
		c.PGReceiveBuffer != 2<<20 || !c.Profiling || c.PGReceiveTimeout != 15*time.Second {
		t.Fatalf("got %+v", c)
	}
}

// The bounds themselves are accepted.
func TestLoad_Bounds(t *testing.T) {
	c, err := Load(env(with(
		"CDC_PG_RECEIVE_BUFFER", "64KiB", "CDC_FLUSH_INTERVAL", "10ms",
		"CDC_SHUTDOWN_TIMEOUT", "1s", "CDC_OUTBOX_RETENTION", "1m", "CDC_BATCH_MAX_BYTES", "64KiB",
	)))
	if err != nil {
		t.Fatal(err)
	}
	if c.PGReceiveBuffer != 64<<10 || c.FlushInterval != 10*time.Millisecond || c.ShutdownTimeout != time.Second || c.OutboxRetention != time.Minute || c.BatchMaxBytes != 64<<10 {
		t.Fatalf("got %+v", c)
	}
	c, err = Load(env(with("CDC_FLUSH_INTERVAL", "1h", "CDC_SHUTDOWN_TIMEOUT", "1h", "CDC_PG_RECEIVE_BUFFER", "16MiB", "CDC_BATCH_MAX_BYTES", "1GiB")))
	if err != nil {
		t.Fatal(err)
	}
	if c.FlushInterval != time.Hour || c.ShutdownTimeout != time.Hour || c.PGReceiveBuffer != 16<<20 || c.BatchMaxBytes != 1<<30 {
		t.Fatalf("got %+v", c)
	}
}

// The bounds themselves are taken: 16 INSERTs in flight, every level up
// to error.
func TestLoad_LimitsInclusive(t *testing.T) {
	c, err := Load(env(with("CDC_INSERTS_IN_FLIGHT", "16", "CDC_LOG_LEVEL", "error")))
	if err != nil || c.InsertsInFlight != 16 || c.LogLevel != zapcore.ErrorLevel {
		t.Fatalf("got %d, %s, %v; want 16, error", c.InsertsInFlight, c.LogLevel, err)
	}
	for _, lvl := range []string{"debug", "info", "warn"} {
		if c, err := Load(env(with("CDC_LOG_LEVEL", lvl))); err != nil || c.LogLevel.String() != lvl {
			t.Errorf("CDC_LOG_LEVEL=%s: %s, %v", lvl, c.LogLevel, err)
		}
	}
	if _, err := Load(env(with("CDC_METRICS_ADDR", "127.0.0.1:65536"))); err == nil || !strings.Contains(err.Error(), "CDC_METRICS_ADDR") {
		t.Errorf("CDC_METRICS_ADDR=127.0.0.1:65536: %v, want refused", err)
	}
}

// 0 turns the receive timeout off, as 0 turns off wal_receiver_timeout.
func TestLoad_ReceiveTimeoutOff(t *testing.T) {
	c, err := Load(env(with("CDC_PG_RECEIVE_TIMEOUT", "0")))
	if err != nil || c.PGReceiveTimeout != 0 {
		t.Fatalf("CDC_PG_RECEIVE_TIMEOUT=0: %s, %v; want 0", c.PGReceiveTimeout, err)
	}
}

// 0 is a valid receive buffer: the kernel's autotuning, reads as before.
func TestLoad_ReceiveBufferOff(t *testing.T) {
	for _, v := range []string{"0", " 0 "} {
		c, err := Load(env(with("CDC_PG_RECEIVE_BUFFER", v)))
		if err != nil || c.PGReceiveBuffer != 0 {
			t.Fatalf("CDC_PG_RECEIVE_BUFFER=%q: %d, %v; want 0", v, c.PGReceiveBuffer, err)
		}
	}
}

func TestLoad_MetricsAddrForms(t *testing.T) {
	for _, v := range []string{":9187", "127.0.0.1:9999", "[::1]:9187", "localhost:9187", "127.0.0.1:65535", "off"} {
		c, err := Load(env(with("CDC_METRICS_ADDR", v)))
		if err != nil || c.MetricsAddr != v {
			t.Fatalf("CDC_METRICS_ADDR=%q: %q, %v", v, c.MetricsAddr, err)
		}
	}
}

// pgNotAURL is the refusal of a PostgreSQL URL pgx would not read as one.
const pgNotAURL = "CDC_PG_DSN: does not start with postgres:// or postgresql:// as written (lowercase, two slashes), the only forms the driver reads as a URL: it would read this one as keyword=value settings, the host ignored and the whole URL, password and all, sent to the server as a setting's name"

func TestLoad_BadValuesNameTheirVariable(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"missing pg dsn", with("CDC_PG_DSN", ""), "CDC_PG_DSN: required, e.g. postgres://user:password@host/db"},
		{"missing clickhouse dsn", with("CDC_CLICKHOUSE_DSN", ""), "CDC_CLICKHOUSE_DSN: required, e.g. clickhouse://user:password@host/db"},
		{"wrong scheme", with("CDC_CLICKHOUSE_DSN", "http://ch:8123"), `CDC_CLICKHOUSE_DSN: scheme "http" not supported, want clickhouse://`},
		{"no host", with("CDC_PG_DSN", "postgres:///db"), "CDC_PG_DSN: no host in the URL"},
		{"socket parameter is only postgres's", with("CDC_CLICKHOUSE_DSN", "clickhouse:///db?host=/tmp"), "CDC_CLICKHOUSE_DSN: no host in the URL"},
		// pgx reads a URL only from these exact prefixes; anything else
		// as keyword=value settings, the whole URL one setting's name.
		{"scheme in capitals", with("CDC_PG_DSN", "Postgres://cdc:s3cret@db/app"), pgNotAURL},
		{"scheme all capitals", with("CDC_PG_DSN", "POSTGRESQL://cdc:s3cret@db/app"), pgNotAURL},
		{"scheme with one slash", with("CDC_PG_DSN", "postgres:/app?host=/var/run/postgresql&password=s3cret"), pgNotAURL},
		{"rows not a number", with("CDC_BATCH_MAX_ROWS", "lots"), `CDC_BATCH_MAX_ROWS: "lots" is not a positive whole number`},
		{"rows zero", with("CDC_BATCH_MAX_ROWS", "0"), `CDC_BATCH_MAX_ROWS: "0" is not a positive whole number`},
		{"bytes", with("CDC_BATCH_MAX_BYTES", "16 potatoes"), `CDC_BATCH_MAX_BYTES: "16 potatoes" is not a size, e.g. 16MiB, 512KiB or 1048576`},
		{"bytes without their unit", with("CDC_BATCH_MAX_BYTES", "16"), `CDC_BATCH_MAX_BYTES: 16 bytes is less than 64KiB`},
		{"bytes one under the least", with("CDC_BATCH_MAX_BYTES", "65535"), `CDC_BATCH_MAX_BYTES: 65535 bytes is less than 64KiB`},
		{"bytes one over the most", with("CDC_BATCH_MAX_BYTES", "1073741825"), `CDC_BATCH_MAX_BYTES: 1073741825 bytes is more than 1024MiB`},
		{"interval", with("CDC_FLUSH_INTERVAL", "soon"), `CDC_FLUSH_INTERVAL: "soon" is not a duration, e.g. 500ms, 1s, 24h`},
		{"interval zero", with("CDC_FLUSH_INTERVAL", "0s"), `CDC_FLUSH_INTERVAL: "0s" must be greater than zero`},
		{"inserts in flight zero", with("CDC_INSERTS_IN_FLIGHT", "0"), `CDC_INSERTS_IN_FLIGHT: "0" is not a positive whole number`},
		{"inserts in flight too many", with("CDC_INSERTS_IN_FLIGHT", "17"), `CDC_INSERTS_IN_FLIGHT: 17 is more than 16`},
		{"receive buffer", with("CDC_PG_RECEIVE_BUFFER", "big"), `CDC_PG_RECEIVE_BUFFER: "big" is not a size, e.g. 16MiB, 512KiB or 1048576`},
		{"receive buffer too large", with("CDC_PG_RECEIVE_BUFFER", "17MiB"), `CDC_PG_RECEIVE_BUFFER: 17825792 bytes is more than 16777216`},
		{"receive buffer negative", with("CDC_PG_RECEIVE_BUFFER", "-1"), `CDC_PG_RECEIVE_BUFFER: "-1" is not a size, e.g. 16MiB, 512KiB or 1048576`},
		{"receive timeout", with("CDC_PG_RECEIVE_TIMEOUT", "1 minute"), `CDC_PG_RECEIVE_TIMEOUT: "1 minute" is not a duration, e.g. 500ms, 1s, 24h`},
		{"receive timeout too short", with("CDC_PG_RECEIVE_TIMEOUT", "1500ms"), `CDC_PG_RECEIVE_TIMEOUT: 1.5s is too short: use 0 (off) or at least 2s`},
		{"receive timeout negative", with("CDC_PG_RECEIVE_TIMEOUT", "-5s"), `CDC_PG_RECEIVE_TIMEOUT: "-5s" must not be negative (0 turns it off)`},
		{"retention negative", with("CDC_OUTBOX_RETENTION", "-1h"), `CDC_OUTBOX_RETENTION: "-1h" must not be negative (0 turns it off)`},
		{"slot", with("CDC_SLOT_NAME", "My-Slot"), `CDC_SLOT_NAME: "My-Slot" is not a valid name: use lowercase letters, digits and _, not starting with a digit (at most 63)`},
		{"level", with("CDC_LOG_LEVEL", "loud"), `CDC_LOG_LEVEL: "loud" is not a level: debug, info, warn or error`},
		{"level zap knows but hides failures", with("CDC_LOG_LEVEL", "fatal"), `CDC_LOG_LEVEL: "fatal" is not a level: debug, info, warn or error`},
		{"metrics address without port", with("CDC_METRICS_ADDR", "abc"), `CDC_METRICS_ADDR: "abc" is not host:port (e.g. :9187 or 127.0.0.1:9187) or off`},
		{"metrics address off in capitals", with("CDC_METRICS_ADDR", "OFF"), `CDC_METRICS_ADDR: "OFF" is not host:port (e.g. :9187 or 127.0.0.1:9187) or off`},
		{"metrics port out of range", with("CDC_METRICS_ADDR", ":70000"), `CDC_METRICS_ADDR: ":70000" is not host:port (e.g. :9187 or 127.0.0.1:9187) or off`},
		{"metrics port 0", with("CDC_METRICS_ADDR", "127.0.0.1:0"), `CDC_METRICS_ADDR: "127.0.0.1:0" has port 0, which listens on a port chosen at random: give a port (e.g. :9187) or off`},
		{"format", with("CDC_LOG_FORMAT", "xml"), `CDC_LOG_FORMAT: "xml" is not one of json, console`},
		{"pprof", with("CDC_PPROF", "yes"), `CDC_PPROF: "yes" is not one of off, on`},
		{"pprof without its server", with("CDC_PPROF", "on", "CDC_METRICS_ADDR", "off"), `CDC_PPROF: on, but CDC_METRICS_ADDR is off: the profiles are served on that address`},
		{"receive buffer meant as KiB", with("CDC_PG_RECEIVE_BUFFER", "512"), `CDC_PG_RECEIVE_BUFFER: 512 bytes is less than 65536: use 0 (the kernel's) or at least 64KiB`},
		{"receive buffer just under the least", with("CDC_PG_RECEIVE_BUFFER", "65535"), `CDC_PG_RECEIVE_BUFFER: 65535 bytes is less than 65536: use 0 (the kernel's) or at least 64KiB`},
		{"interval too short", with("CDC_FLUSH_INTERVAL", "1ns"), `CDC_FLUSH_INTERVAL: 1ns is too short: at least 10ms`},
		{"interval too long", with("CDC_FLUSH_INTERVAL", "1000h"), `CDC_FLUSH_INTERVAL: 1000h0m0s is too long: at most 1h0m0s`},
		{"shutdown too short", with("CDC_SHUTDOWN_TIMEOUT", "1ns"), `CDC_SHUTDOWN_TIMEOUT: 1ns is too short: at least 1s`},
		{"shutdown too long", with("CDC_SHUTDOWN_TIMEOUT", "2h"), `CDC_SHUTDOWN_TIMEOUT: 2h0m0s is too long: at most 1h0m0s`},
		{"shutdown zero", with("CDC_SHUTDOWN_TIMEOUT", "0"), `CDC_SHUTDOWN_TIMEOUT: "0" must be greater than zero`},
		{"retention too short", with("CDC_OUTBOX_RETENTION", "1ns"), `CDC_OUTBOX_RETENTION: 1ns is too short: use 0 (off) or at least 1m0s`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(env(tt.env))
			if err == nil {
				t.Fatal("want error")
			}
			if err.Error() != tt.want {
				t.Fatalf("error %q\nwant  %q", err, tt.want)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not a *config.Error", err)
			}
		})
	}
}

func TestLoad_PostgresDSNForms(t *testing.T) {
	for _, dsn := range []string{
		"postgres://cdc:secret@db.internal:5432/app?sslmode=require",
		"postgresql://cdc@db.internal/app",
		"postgres://cdc@/app?host=/var/run/postgresql",           // Unix socket folder
		"postgres://cdc@/app?host=/var/run/postgresql&port=5433", // and its port
	} {
		t.Run(dsn, func(t *testing.T) {
			c, err := Load(env(with("CDC_PG_DSN", dsn)))
			if err != nil {
				t.Fatal(err)
			}
			if c.PGDSN != dsn {
				t.Fatalf("PGDSN = %q", c.PGDSN)
			}
		})
	}
}

func TestLoad_CollectsEveryProblem(t *testing.T) {
	_, err := Load(env(map[string]string{"CDC_BATCH_MAX_ROWS": "x", "CDC_FLUSH_INTERVAL": "y"}))
	got := strings.Split(err.Error(), "\n")
	want := []string{"CDC_PG_DSN", "CDC_CLICKHOUSE_DSN", "CDC_BATCH_MAX_ROWS", "CDC_FLUSH_INTERVAL"}
	if len(got) != len(want) {
		t.Fatalf("got %d problems %q, want %d", len(got), got, len(want))
	}
	for i, v := range want {
		if !strings.HasPrefix(got[i], v+": ") {
			t.Errorf("problem %d = %q, want it to name %s", i, got[i], v)
		}
	}
}

func TestLoad_NeverEchoesADSN(t *testing.T) {
	_, err := Load(env(with("CDC_PG_DSN", "postgres://u:hunter2@%zz/db")))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error %v: want an error without the password", err)
	}
}

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"1048576", 1 << 20}, {"512KiB", 512 << 10}, {"16MiB", 16 << 20}, {"1GiB", 1 << 30},
		{"10MB", 10_000_000}, {"3 KB", 3000}, {"100B", 100},
		{"2GB", 2_000_000_000}, {"1024GiB", 1 << 40}, {"1099511627776", 1 << 40},
	}
	for _, tt := range tests {
		got, err := ParseBytes(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "MiB", "-1", "0", "1.5MiB", "2TB", "1025GiB", "1099511627777", "1100GB"} {
		if _, err := ParseBytes(bad); err == nil {
			t.Errorf("ParseBytes(%q): want error", bad)
		}
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"postgres://cdc:s3cret@db:5432/app?sslmode=require", "postgres://cdc:xxxxx@db:5432/app?sslmode=require"},
		{"clickhouse://ch:9000/db?password=s3cret&secure=true", "clickhouse://ch:9000/db?password=xxxxx&secure=true"},
		{"postgres://cdc@db/app", "postgres://cdc@db/app"},
		{"postgres://cdc@db/app?sslkey=/k.pem&sslpassword=k3y", "postgres://cdc@db/app?sslkey=%2Fk.pem&sslpassword=xxxxx"},
		{"clickhouse://ch:9000/db?Password=s3cret", "clickhouse://ch:9000/db?Password=xxxxx"},
	}
	for _, tt := range tests {
		if got := Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestUnrecognised(t *testing.T) {
	got := Unrecognised([]string{
		"CDC_PG_DSN=postgres://x", "CDC_OUTBOX_RETENTON=0", "CDC_BATCH_MAX_BYTES=1MiB",
		"PATH=/bin", "CDC_TEST_PG_DSN=postgres://t", "CDC_DEMO_PG_PORT=1", "CDC_PPROF=on",
		"CDC_FLUSH_INTERVALL=2s", "CDC_=x",
		// Kubernetes' links to a Service named cdc.
		"CDC_SERVICE_HOST=10.0.0.1", "CDC_SERVICE_PORT=9187", "CDC_PORT=tcp://10.0.0.1:9187",
		"CDC_PORT_9187_TCP_ADDR=10.0.0.1", "CDC_PORTS=x",
		// And to one named cdc-metrics (or cdc-pg, …), by the form of
		// their values: a guess at a setting is still named.
		"CDC_METRICS_SERVICE_HOST=10.0.0.2", "CDC_METRICS_SERVICE_PORT=9187", "CDC_METRICS_SERVICE_PORT_HTTP_METRICS=9187",
		"CDC_METRICS_PORT=tcp://10.0.0.2:9187", "CDC_METRICS_PORT_9187_TCP=tcp://10.0.0.2:9187",
		"CDC_METRICS_PORT_9187_TCP_PROTO=tcp", "CDC_METRICS_PORT_9187_TCP_PORT=9187", "CDC_METRICS_PORT_9187_TCP_ADDR=10.0.0.2",
		"CDC_PG_SERVICE_HOST=fd00::5", "CDC_PG_PORT_5432_TCP_ADDR=fd00::5",
		"CDC_METRICS_PORT=9187", "CDC_PG_SERVICE_HOST=db.internal", "CDC_PG_PORT_5432_TCP_PROTO=https",
	})
	want := []string{"CDC_OUTBOX_RETENTON", "CDC_FLUSH_INTERVALL", "CDC_", "CDC_PORTS",
		"CDC_METRICS_PORT", "CDC_PG_SERVICE_HOST", "CDC_PG_PORT_5432_TCP_PROTO"}
	if !slices.Equal(got, want) {
		t.Fatalf("Unrecognised = %q, want %q", got, want)
	}
}
