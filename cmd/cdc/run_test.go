package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/eventcdc/cdc/config"
	"github.com/eventcdc/cdc/internal/testenv"
)

// The soft memory limit stays above what the pipeline may hold live, for
// any number of INSERTs in flight: below it the collector would run
// without pause through a backlog.
func TestMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		inserts, batch, receive int
		want                    int64
	}{
		// The defaults: 2 × (16 + 6) + 16 + 0.5 + 52.
		{config.DefaultInsertsInFlight, config.DefaultBatchMaxBytes, config.DefaultPGReceiveBuffer, 225 * mib / 2},
		{1, 64 << 10, 0, 6*mib + 64<<10 + 64<<10 + 52*mib},
		// The most in flight: 16 × (16 + 6) + 16 + 16 + 52.
		{config.MaxInsertsInFlight, 16 * mib, 16 * mib, 436 * mib},
	} {
		cfg := config.Config{InsertsInFlight: tc.inserts, BatchMaxBytes: tc.batch, PGReceiveBuffer: tc.receive}
		got := memoryLimit(cfg)
		if got != tc.want {
			t.Errorf("memoryLimit(%d in flight, %d-byte batches, %d-byte receive buffer) = %d, want %d", tc.inserts, tc.batch, tc.receive, got, tc.want)
		}
		// Live at most: every INSERT in flight a full batch with its
		// block copies, the open batch, the read-ahead buffer.
		live := int64(tc.inserts*(tc.batch+6*mib) + tc.batch + tc.receive)
		if got < live+32*mib {
			t.Errorf("memoryLimit %d leaves under 32 MiB above the %d bytes the pipeline may hold", got, live)
		}
	}
}

// A SIGTERM or SIGINT that comes before cdc run has set up tracing (a pod
// deleted as it starts) is a stop like any other: exit 0, not 2, which
// reads as a bad setting. The OTLP/HTTP exporter refuses to start under a
// cancelled context, and that refusal is no configuration error.
func TestRun_SignalBeforeTracingSetupExitsZero(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	env := map[string]string{
		"CDC_PG_DSN":         "postgres://u:pw@127.0.0.1:1/app?sslmode=disable",
		"CDC_CLICKHOUSE_DSN": "clickhouse://u@127.0.0.1:1/db",
		"CDC_METRICS_ADDR":   "off",
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the signal, before the command starts
	startRun(ctx, env)(t, "a signal at start")
}

// startRun runs `cdc run` with env in the background until ctx ends. The
// function it returns waits up to 30 s for the exit and fails t unless
// the code is 0 (after names what ended it).
func startRun(ctx context.Context, env map[string]string) (exitsZero func(t *testing.T, after string)) {
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"run"}, func(k string) string { return env[k] }, nil, &stdout, &stderr)
	}()
	return func(t *testing.T, after string) {
		t.Helper()
		select {
		case code := <-done:
			if code != 0 {
				t.Fatalf("exit %d after %s, want 0:\n%s", code, after, stderr.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("cdc run still runs 30 s after %s", after)
		}
	}
}

// /healthz answers while the start-up schema check waits on servers that
// accept connections and never answer (up to schemaCheckTimeout, 15 s):
// liveness is "the process runs". The server started only after
// the check, so a liveness probe timed out meanwhile, and one strict
// enough restarted cdc at every start for as long as ClickHouse hung.
// /readyz says not ready; a signal then stops cdc with exit 0.
func TestRun_ProbesAnswerWhileTheSchemaCheckWaits(t *testing.T) {
	addr := testenv.FreeAddr(t)
	env := map[string]string{
		"CDC_PG_DSN":         "postgres://u:pw@" + testenv.SilentAddr(t) + "/app?sslmode=disable",
		"CDC_CLICKHOUSE_DSN": "clickhouse://u@" + testenv.SilentAddr(t) + "/db",
		"CDC_METRICS_ADDR":   addr,
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	exitsZero := startRun(ctx, env)
	client := &http.Client{Timeout: time.Second}
	get := func(path string) (int, string) {
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	var code int
	var body string
	// Both servers silent, the check waits out its 15 s: the probes
	// must answer long before.
	for time.Since(start) < 3*time.Second {
		if code, body = get("/healthz"); code == http.StatusOK {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code != http.StatusOK {
		t.Fatalf("/healthz 3 s after start: %d %s; want 200 while the schema check waits", code, body)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while starting: %d %s; want 503", code, body)
	}
	cancel()
	exitsZero(t, "the signal")
}

// A PostgreSQL that stops answering (a dropped route, a paused VM: no
// reset) holds cdc run's exit no longer than its shutdown's bounds say. The
// shutdown cuts short the monitor's query on that server, and pgx then
// sends a cancel request and waits up to 15 s for the server to end the
// connection; closing the pool waited for that: the process exited 15 s
// or more after "shut down cleanly" (19 s here), with nothing said, past
// the worst case docs/operations.md gives, and an orchestrator's grace
// period could run out on it (SIGKILL, exit 137).
func TestRun_FrozenPostgresDoesNotHoldTheExit(t *testing.T) {
	_, env := operatorEnv(t)
	if code, _, stderr, _ := runWithin(t, time.Minute, env, "migrate"); code != 0 {
		t.Fatalf("migrate exited %d: %s", code, stderr)
	}
	u, err := url.Parse(env["CDC_PG_DSN"])
	if err != nil {
		t.Fatal(err)
	}
	fz := testenv.NewFreezer(t, u.Host)
	if env["CDC_PG_DSN"], err = fz.DSN(env["CDC_PG_DSN"], ""); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &testenv.Buffer{}
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"run"}, func(k string) string { return env[k] }, nil, io.Discard, stderr)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stderr.String(), `"msg":"streaming"`) {
		if time.Now().After(deadline) {
			t.Fatalf("cdc run not streaming after 30 s: %s", stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	fz.Freeze()
	defer fz.Thaw()
	// The monitor polls every 5 s, each poll given 5 s: one started
	// after the freeze waits on the frozen server when the signal comes.
	time.Sleep(5500 * time.Millisecond)
	began := time.Now()
	cancel()
	select {
	case code := <-done:
		took := time.Since(began)
		// Nothing held, ClickHouse answering: the budget is not used, and
		// every close left is bounded by a second or two.
		if code != 0 || took > 8*time.Second {
			t.Fatalf("exit %d %s after the signal; want 0 within 8 s:\n%s", code, took.Round(time.Millisecond), stderr)
		}
		if !strings.Contains(stderr.String(), `"msg":"PostgreSQL did not answer while cdc closed its connections; exiting without waiting for them"`) {
			t.Fatalf("exited without saying it left connections to a silent PostgreSQL:\n%s", stderr)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("cdc run still runs 60 s after the signal:\n%s", stderr)
	}
}
