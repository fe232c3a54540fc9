package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/tracing/otlptest"
)

// httpGet fetches url and returns status and body; status 0 when unreachable.
func httpGet(url string) (int, string) {
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode, string(body)
}

// scrape reads the connector's /metrics.
func (c *connector) scrape() map[string]*dto.MetricFamily {
	c.t.Helper()
	code, body := httpGet("http://" + c.MetricsAddr + "/metrics")
	if code != http.StatusOK {
		c.t.Fatalf("GET /metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		c.t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// metricValue is the value of an unlabelled counter or gauge, NaN when absent.
func metricValue(mfs map[string]*dto.MetricFamily, name string) float64 {
	mf, ok := mfs[name]
	if !ok || len(mf.GetMetric()) != 1 {
		return math.NaN()
	}
	m := mf.GetMetric()[0]
	switch mf.GetType() {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_UNTYPED:
		return m.GetUntyped().GetValue()
	}
	return math.NaN()
}

// metricHistogram returns an unlabelled histogram's count and sum (-1, NaN when absent).
func metricHistogram(mfs map[string]*dto.MetricFamily, name string) (int64, float64) {
	mf, ok := mfs[name]
	if !ok || mf.GetType() != dto.MetricType_HISTOGRAM || len(mf.GetMetric()) != 1 {
		return -1, math.NaN()
	}
	h := mf.GetMetric()[0].GetHistogram()
	return int64(h.GetSampleCount()), h.GetSampleSum()
}

// payloadBytes is what the connector counts as an event's size: the bytes
// of each non-NULL column's text form in pgoutput, where the replication
// session runs with TimeZone=UTC and DateStyle=ISO.
func (w *world) payloadBytes() int64 {
	w.t.Helper()
	ctx := context.Background()
	tx, err := w.pg.Begin(ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO'`); err != nil {
		w.t.Fatal(err)
	}
	var n int64
	if err := tx.QueryRow(ctx, `SELECT coalesce(sum(
		octet_length(id::text) + octet_length(event_type) + octet_length(event_date_time::text) +
		octet_length(environment) + octet_length(event_context::text) + octet_length(metadata_version::text) +
		coalesce(octet_length(traceparent), 0)), 0)::bigint FROM outbox`).Scan(&n); err != nil {
		w.t.Fatal(err)
	}
	return n
}

var (
	uuidLike = regexp.MustCompile(`[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`)
	lsnLike  = regexp.MustCompile(`^[0-9A-F]{1,8}/[0-9A-F]{1,8}$`)
)

func TestObservability_MetricsCountExactly(t *testing.T) {
	w := newWorld(t)
	// A small batch limit: several batches, some cut inside a transaction.
	c := w.start(map[string]string{"CDC_METRICS_ADDR": "auto", "CDC_BATCH_MAX_ROWS": "64"})
	waitFor(t, 30*time.Second, "/healthz", func() (bool, string) {
		code, body := httpGet("http://" + c.MetricsAddr + "/healthz")
		return code == http.StatusOK, fmt.Sprint(code, body)
	})

	// The slot's position before the events: the lag in bytes the
	// monitor reports lies between it and the server's WAL end.
	var floor string
	if err := w.pg.QueryRow(context.Background(), `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'cdc_outbox'`).Scan(&floor); err != nil {
		t.Fatal(err)
	}
	const n = 250
	for _, size := range []int{100, 100, 50} { // three transactions
		w.insertEvents("observed", size)
	}
	w.waitRows(n, 60*time.Second)
	wantBytes := w.payloadBytes()

	// Counters move right after the INSERT returns and the slot poller
	// runs every 5s: wait for the caught-up state, then check one scrape.
	var mfs map[string]*dto.MetricFamily
	waitFor(t, 30*time.Second, "metrics to show the caught-up state", func() (bool, string) {
		mfs = c.scrape()
		state := fmt.Sprintf("written %v, buffer %v, lag %v, slot active %v", metricValue(mfs, "cdc_events_written_total"),
			metricValue(mfs, "cdc_buffer_bytes"), metricValue(mfs, "cdc_replication_lag_seconds"), metricValue(mfs, "cdc_slot_active"))
		return metricValue(mfs, "cdc_events_written_total") == n && metricValue(mfs, "cdc_buffer_bytes") == 0 &&
			metricValue(mfs, "cdc_replication_lag_seconds") == 0 && metricValue(mfs, "cdc_slot_active") == 1, state
	})

	batches := metricValue(mfs, "cdc_batches_written_total")
	if batches < math.Ceil(n/64.0) {
		t.Errorf("cdc_batches_written_total = %v, want at least %v (64 rows per batch at most)", batches, math.Ceil(n/64.0))
	}
	exact := []struct {
		name string
		got  float64
		want float64
	}{
		{"cdc_events_written_total", metricValue(mfs, "cdc_events_written_total"), n},
		{"cdc_dead_letters_total", metricValue(mfs, "cdc_dead_letters_total"), 0},
		{"cdc_dead_letters_waiting", metricValue(mfs, "cdc_dead_letters_waiting"), 0},
		{"cdc_sink_errors_total", metricValue(mfs, "cdc_sink_errors_total"), 0},
		{"cdc_buffer_bytes", metricValue(mfs, "cdc_buffer_bytes"), 0},
		{"cdc_replication_lag_seconds", metricValue(mfs, "cdc_replication_lag_seconds"), 0},
		{"cdc_slot_active", metricValue(mfs, "cdc_slot_active"), 1},
	}
	rowsCount, rowsSum := metricHistogram(mfs, "cdc_batch_rows")
	bytesCount, bytesSum := metricHistogram(mfs, "cdc_batch_bytes")
	flushCount, _ := metricHistogram(mfs, "cdc_flush_duration_seconds")
	exact = append(exact, []struct {
		name string
		got  float64
		want float64
	}{
		{"cdc_batch_rows_count", float64(rowsCount), batches},
		{"cdc_batch_rows_sum", rowsSum, n},
		{"cdc_batch_bytes_count", float64(bytesCount), batches},
		{"cdc_batch_bytes_sum", bytesSum, float64(wantBytes)},
		{"cdc_flush_duration_seconds_count", float64(flushCount), batches},
	}...)
	for _, e := range exact {
		if e.got != e.want {
			t.Errorf("%s = %v, want %v", e.name, e.got, e.want)
		}
	}
	now := float64(time.Now().UnixNano()) / 1e9
	if last := metricValue(mfs, "cdc_last_flush_timestamp_seconds"); !(last > now-60 && last <= now+1) {
		t.Errorf("cdc_last_flush_timestamp_seconds = %v, want within the last minute of %v", last, now)
	}
	var ceiling float64
	if err := w.pg.QueryRow(context.Background(), `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::float8`, floor).Scan(&ceiling); err != nil {
		t.Fatal(err)
	}
	if lag := metricValue(mfs, "cdc_replication_lag_bytes"); !(lag >= 0 && lag <= ceiling) {
		t.Errorf("cdc_replication_lag_bytes = %v, want 0 to %v: the WAL written since the slot's position before the events", lag, ceiling)
	}

	// Cardinality: cdc's metrics have no labels; only the Go and process
	// collectors' do, and no label anywhere carries an event id or LSN.
	var names []string
	for name, mf := range mfs {
		names = append(names, name)
		if !strings.HasPrefix(name, "cdc_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			t.Errorf("unexpected metric family %s", name)
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.HasPrefix(name, "cdc_") {
					t.Errorf("%s has label %s=%q; cdc metrics have none", name, l.GetName(), l.GetValue())
				}
				if uuidLike.MatchString(l.GetValue()) || lsnLike.MatchString(l.GetValue()) {
					t.Errorf("%s label %s=%q looks like an event id or LSN", name, l.GetName(), l.GetValue())
				}
			}
		}
	}
	sort.Strings(names)
	if t.Failed() {
		t.Logf("metric families: %v", names)
	}
}

// CDC_PPROF=on serves the running connector's profiles on its metrics
// address: its goroutines include the replicator's stream.
func TestObservability_ProfilesWhenAsked(t *testing.T) {
	w := newWorld(t)
	c := w.start(map[string]string{"CDC_METRICS_ADDR": "auto", "CDC_PPROF": "on"})
	base := "http://" + c.MetricsAddr
	waitFor(t, 30*time.Second, "the replicator's stream among the goroutines", func() (bool, string) {
		code, body := httpGet(base + "/debug/pprof/goroutine?debug=1")
		return code == http.StatusOK && strings.Contains(body, "replication.(*stream).run"), fmt.Sprint(code)
	})
	if code, body := httpGet(base + "/debug/pprof/heap?debug=1"); code != http.StatusOK || !strings.HasPrefix(body, "heap profile: ") {
		t.Fatalf("/debug/pprof/heap?debug=1 = %d %.40q, want 200 with a heap profile", code, body)
	}
}

func TestObservability_ReadyzFollowsClickHouse(t *testing.T) {
	w := newWorld(t)
	if !w.env.Local() {
		t.Skip("needs local servers to stop and start ClickHouse")
	}
	c := w.start(map[string]string{"CDC_METRICS_ADDR": "auto"})
	base := "http://" + c.MetricsAddr
	healthz := func(when string) {
		t.Helper()
		if code, body := httpGet(base + "/healthz"); code != http.StatusOK {
			t.Errorf("/healthz %s: %d %q, want 200", when, code, body)
		}
	}
	waitFor(t, 30*time.Second, "/readyz 200 while running", func() (bool, string) {
		code, body := httpGet(base + "/readyz")
		return code == http.StatusOK, fmt.Sprint(code, " ", body)
	})
	healthz("while running")
	w.insertEvents("before", 10)
	w.waitRows(10, 30*time.Second)

	stopped := true
	w.env.StopClickHouse(t)
	// The servers are shared with later tests: bring ClickHouse back even
	// if this test fails half-way.
	t.Cleanup(func() {
		if stopped {
			w.env.StartClickHouse(t)
		}
	})
	var body string
	waitFor(t, 5*time.Second, "/readyz 503 naming clickhouse", func() (bool, string) {
		var code int
		code, body = httpGet(base + "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "clickhouse"), fmt.Sprint(code, " ", body)
	})
	t.Logf("/readyz with ClickHouse down: %q", body)
	healthz("while ClickHouse is down")
	// Events committed meanwhile wait in the slot, not in a lost batch.
	w.insertEvents("during", 20)
	waitFor(t, 30*time.Second, "a failed store attempt", func() (bool, string) {
		v := metricValue(c.scrape(), "cdc_sink_errors_total")
		return v >= 1, fmt.Sprint(v)
	})

	w.env.StartClickHouse(t)
	stopped = false
	waitFor(t, 30*time.Second, "/readyz 200 after ClickHouse is back", func() (bool, string) {
		code, body := httpGet(base + "/readyz")
		return code == http.StatusOK, fmt.Sprint(code, " ", body)
	})
	healthz("after ClickHouse is back")
	w.waitRows(30, 60*time.Second)
	waitFor(t, 30*time.Second, "cdc_events_written_total 30", func() (bool, string) {
		v := metricValue(c.scrape(), "cdc_events_written_total")
		return v == 30, fmt.Sprint(v)
	})
}

// A PostgreSQL link that dies without a reset (a dropped route, a frozen
// VM) turns /readyz to 503 once CDC_PG_RECEIVE_TIMEOUT passes with nothing
// heard, instead of some 15 minutes later when TCP gives up; the connector
// resumes, and loses nothing, when the link comes back.
func TestObservability_ReadyzFollowsASilentPostgresLink(t *testing.T) {
	w := newWorld(t)
	w.auditInserts()
	u, err := url.Parse(w.pgDSN)
	if err != nil {
		t.Fatal(err)
	}
	if u.Host == "" {
		t.Skip("PostgreSQL is reached through a Unix socket")
	}
	fz := testenv.NewFreezer(t, u.Host)
	// The session's wal_sender_timeout of 1s keeps the 2s receive timeout
	// as it is (it is raised to 1.5 × the server's).
	dsn, err := fz.DSN(w.pgDSN, "-c wal_sender_timeout=1s")
	if err != nil {
		t.Fatal(err)
	}
	c := w.start(map[string]string{"CDC_METRICS_ADDR": "auto", "CDC_PG_DSN": dsn, "CDC_PG_RECEIVE_TIMEOUT": "2s"})
	base := "http://" + c.MetricsAddr
	readyz := func(want int, what string, timeout time.Duration) {
		t.Helper()
		waitFor(t, timeout, what, func() (bool, string) {
			code, body := httpGet(base + "/readyz")
			return code == want && (want == http.StatusOK || strings.Contains(body, "postgres")), fmt.Sprint(code, " ", body)
		})
	}
	readyz(http.StatusOK, "/readyz 200 while running", 30*time.Second)
	w.insertEvents("before", 10)
	w.waitRows(10, 30*time.Second)

	fz.Freeze()
	readyz(http.StatusServiceUnavailable, "/readyz 503 naming postgres within the receive timeout", 8*time.Second)
	if !strings.Contains(c.out.String(), "no message from PostgreSQL") {
		t.Fatalf("no log line names the silent link:\n%s", tail(c.out.String(), 30))
	}
	if m := c.scrape(); metricValue(m, "cdc_replication_streaming") != 0 || metricValue(m, "cdc_replication_interruptions_total") < 1 {
		t.Fatalf("while the link is dead: cdc_replication_streaming %v, cdc_replication_interruptions_total %v; want 0 and at least 1",
			metricValue(m, "cdc_replication_streaming"), metricValue(m, "cdc_replication_interruptions_total"))
	}
	w.insertEvents("during", 20) // straight to PostgreSQL, not through the frozen link
	fz.Thaw()
	readyz(http.StatusOK, "/readyz 200 after the link is back", 30*time.Second)
	if v := metricValue(c.scrape(), "cdc_replication_streaming"); v != 1 {
		t.Fatalf("cdc_replication_streaming %v after the link is back, want 1", v)
	}
	w.waitRows(30, 60*time.Second)
	w.assertExactlyOnce(30)
}

// TestObservability_BatchSpansReachOTLP runs the connector against an
// in-process OTLP/HTTP receiver.
func TestObservability_BatchSpansReachOTLP(t *testing.T) {
	recv := otlptest.NewHTTP(t)
	w := newWorld(t)
	// A protocol the connector cannot speak is a configuration error.
	if out, code := w.runOnce(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": recv.Endpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "run"); code != 2 || !strings.Contains(out, "OTEL_EXPORTER_OTLP_PROTOCOL") {
		t.Fatalf("unknown OTLP protocol: exit %d, output %q; want 2 naming OTEL_EXPORTER_OTLP_PROTOCOL", code, out)
	}
	w.start(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": recv.Endpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
		"OTEL_BSP_SCHEDULE_DELAY":     "100", // ms; the SDK default is 5s
	})

	type event struct {
		id          uuid.UUID
		traceparent any // nil = NULL
		traceID     string
	}
	events := []event{
		{uuid.New(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{uuid.New(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", "0af7651916cd43dd8448eb211c80319c"},
		{uuid.New(), nil, ""},
		// The same request wrote two events: one link.
		{uuid.New(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{uuid.New(), "00-a1b2c3d4e5f60718293a4b5c6d7e8f90-1122334455667788-01", "a1b2c3d4e5f60718293a4b5c6d7e8f90"},
	}
	ctx := context.Background()
	tx, err := w.pg.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if _, err := tx.Exec(ctx, `INSERT INTO outbox (id, event_type, environment, event_context, traceparent)
			VALUES ($1, 'traced', 'test', '{}', $2)`, e.id, e.traceparent); err != nil {
			t.Fatal(err)
		}
	}
	// The commit record lies between the WAL position before the commit
	// and the one after: PostgreSQL's word for the position, not the
	// sink's.
	var lo, hi string
	if err := tx.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lo); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.pg.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&hi); err != nil {
		t.Fatal(err)
	}
	w.waitRows(uint64(len(events)), 30*time.Second)

	got := w.chEvents("")
	for _, e := range events {
		if g, ok := got[e.id]; !ok || g.TraceID != e.traceID {
			t.Errorf("event %s: trace_id %q (stored %v), want %q", e.id, g.TraceID, ok, e.traceID)
		}
	}
	var commitLSN, lsns uint64
	if err := w.ch.QueryRow(ctx, `SELECT any(cdc_commit_lsn), uniqExact(cdc_commit_lsn) FROM event_log`).Scan(&commitLSN, &lsns); err != nil {
		t.Fatal(err)
	}
	loLSN, err1 := pglogrepl.ParseLSN(lo)
	hiLSN, err2 := pglogrepl.ParseLSN(hi)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	if lsns != 1 || pglogrepl.LSN(commitLSN) < loLSN || pglogrepl.LSN(commitLSN) >= hiLSN {
		t.Fatalf("event_log holds %d commit LSNs, one %s; want one, the commit's, within [%s, %s)", lsns, pglogrepl.LSN(commitLSN), loLSN, hiLSN)
	}
	wantLSN := fmt.Sprintf("%X/%X", commitLSN>>32, uint32(commitLSN))

	spans := recv.WaitSpans(t, 30*time.Second, "a cdc.batch span", func(s []otlptest.Span) bool {
		for _, sp := range s {
			if sp.Name == "cdc.batch" {
				return true
			}
		}
		return false
	})
	var batch []otlptest.Span
	for _, sp := range spans {
		if sp.Name == "cdc.batch" {
			batch = append(batch, sp)
		}
	}
	// One transaction, far below every batch limit: one batch.
	if len(batch) != 1 {
		t.Fatalf("%d cdc.batch spans, want 1: %+v", len(batch), batch)
	}
	sp := batch[0]
	wantAttrs := map[string]any{
		"cdc.batch.rows":          int64(len(events)),
		"cdc.batch.links":         int64(3),
		"cdc.batch.links_dropped": int64(0),
		"cdc.lsn.first":           wantLSN,
		"cdc.lsn.last":            wantLSN,
	}
	for k, want := range wantAttrs {
		if sp.Attrs[k] != want {
			t.Errorf("attribute %s = %v (%T), want %v", k, sp.Attrs[k], sp.Attrs[k], want)
		}
	}
	if b, ok := sp.Attrs["cdc.batch.bytes"].(int64); !ok || b != w.payloadBytes() {
		t.Errorf("cdc.batch.bytes = %v, want %d", sp.Attrs["cdc.batch.bytes"], w.payloadBytes())
	}
	wantLinks := []otlptest.Link{
		{TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", SpanID: "00f067aa0ba902b7", Flags: 0x301},
		{TraceID: "0af7651916cd43dd8448eb211c80319c", SpanID: "b7ad6b7169203331", Flags: 0x300},
		{TraceID: "a1b2c3d4e5f60718293a4b5c6d7e8f90", SpanID: "1122334455667788", Flags: 0x301},
	}
	if fmt.Sprint(sp.Links) != fmt.Sprint(wantLinks) {
		t.Errorf("links = %+v, want %+v", sp.Links, wantLinks)
	}
	if sp.Resource["service.name"] != "cdc" {
		t.Errorf("resource service.name = %v, want cdc", sp.Resource["service.name"])
	}
	if p := recv.Problems(); len(p) > 0 {
		t.Errorf("receiver refused requests: %v", p)
	}
}
