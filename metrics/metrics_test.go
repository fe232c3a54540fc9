package metrics_test

import (
	"bufio"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/eventcdc/cdc/metrics"
)

func newMetrics(t *testing.T, now func() int64) (*prometheus.Registry, *metrics.Metrics) {
	t.Helper()
	// Pedantic: also checks that what each collector describes is what it
	// collects, which the hand-written safe-WAL collector must get right.
	reg := prometheus.NewPedanticRegistry()
	if now == nil {
		now = func() int64 { return 0 }
	}
	return reg, metrics.New(reg, now)
}

func gather(t *testing.T, reg prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// gaugeValue returns the value of an unlabelled gauge, and whether it was
// exported at all.
func gaugeValue(t *testing.T, reg prometheus.Gatherer, name string) (float64, bool) {
	t.Helper()
	mf, ok := gather(t, reg)[name]
	if !ok {
		return 0, false
	}
	if mf.GetType() != dto.MetricType_GAUGE || len(mf.GetMetric()) != 1 {
		t.Fatalf("%s: type %v with %d series, want one gauge", name, mf.GetType(), len(mf.GetMetric()))
	}
	return mf.GetMetric()[0].GetGauge().GetValue(), true
}

func TestNew_LintClean(t *testing.T) {
	reg, m := newMetrics(t, nil)
	m.SetSafeWALBytes(1<<30, true) // export every metric
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// TestNew_MatchesDeployList keeps deploy/metrics.txt, which the alerts and
// the dashboard are checked against, in step with what the binary exports.
func TestNew_MatchesDeployList(t *testing.T) {
	f, err := os.Open("../deploy/metrics.txt")
	if err != nil {
		t.Fatalf("open deploy metric list: %v", err)
	}
	defer f.Close()
	listed := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if listed[line] {
			t.Errorf("deploy/metrics.txt lists %s twice", line)
		}
		listed[line] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read deploy metric list: %v", err)
	}

	reg, m := newMetrics(t, nil)
	m.SetSafeWALBytes(0, true) // the one metric that is absent by default
	exported := map[string]bool{}
	for name := range gather(t, reg) {
		if strings.HasPrefix(name, "cdc_") {
			exported[name] = true
		}
	}
	for name := range listed {
		if !exported[name] {
			t.Errorf("deploy/metrics.txt lists %s, which the connector does not export", name)
		}
	}
	var missing []string
	for name := range exported {
		if !listed[name] {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	for _, name := range missing {
		t.Errorf("%s is exported but missing from deploy/metrics.txt", name)
	}
	if len(exported) != 19 {
		t.Errorf("%d cdc_* metrics exported, want 19", len(exported))
	}
}

// TestNew_NoLabels: cardinality must never grow with traffic, so cdc's own
// metrics carry no labels at all.
func TestNew_NoLabels(t *testing.T) {
	reg, m := newMetrics(t, nil)
	m.SetSafeWALBytes(5, true)
	for name, mf := range gather(t, reg) {
		if !strings.HasPrefix(name, "cdc_") {
			continue
		}
		for _, metric := range mf.GetMetric() {
			if len(metric.GetLabel()) > 0 {
				t.Errorf("%s has labels %v", name, metric.GetLabel())
			}
		}
	}
}

func TestSetSafeWALBytes(t *testing.T) {
	reg, m := newMetrics(t, nil)
	const name = "cdc_slot_safe_wal_bytes"
	steps := []struct {
		name    string
		set     func()
		present bool
		want    float64
	}{
		{name: "absent until known", set: func() {}},
		{name: "known", set: func() { m.SetSafeWALBytes(734003200, true) }, present: true, want: 734003200},
		{name: "zero is a value, not absence", set: func() { m.SetSafeWALBytes(0, true) }, present: true, want: 0},
		// safe_wal_size goes negative once the slot is past its limit.
		{name: "negative", set: func() { m.SetSafeWALBytes(-16777216, true) }, present: true, want: -16777216},
		{name: "unlimited again", set: func() { m.SetSafeWALBytes(0, false) }},
		{name: "value ignored when unknown", set: func() { m.SetSafeWALBytes(99, false) }},
	}
	for _, st := range steps {
		st.set()
		got, ok := gaugeValue(t, reg, name)
		if ok != st.present || got != st.want {
			t.Fatalf("%s: %s = %v (present %v), want %v (present %v)", st.name, name, got, ok, st.want, st.present)
		}
	}
}

func TestReplicationLagSeconds(t *testing.T) {
	const base = int64(1_767_225_600_000_000_000) // 2026-01-01T00:00:00Z in ns
	var now int64
	reg, m := newMetrics(t, func() int64 { return now })
	const name = "cdc_replication_lag_seconds"
	steps := []struct {
		name    string
		now     int64
		pending int64
		want    float64
	}{
		{name: "nothing pending", now: base, pending: 0, want: 0},
		{name: "pending 10.5s", now: base + 10_500_000_000, pending: base, want: 10.5},
		{name: "clock moves on", now: base + 70_250_000_000, pending: base, want: 70.25},
		{name: "newer oldest event", now: base + 70_250_000_000, pending: base + 70_000_000_000, want: 0.25},
		// A commit timestamp ahead of our clock (skew between hosts)
		// must not read as negative lag.
		{name: "commit time in our future", now: base, pending: base + 3_000_000_000, want: 0},
		{name: "caught up", now: base + 80_000_000_000, pending: 0, want: 0},
	}
	for _, st := range steps {
		now = st.now
		m.SetOldestPending(st.pending)
		got, ok := gaugeValue(t, reg, name)
		if !ok || got != st.want {
			t.Fatalf("%s: %s = %v (present %v), want %v", st.name, name, got, ok, st.want)
		}
		if v := m.LagSecondsValue(); v != st.want {
			t.Fatalf("%s: LagSecondsValue = %v, want %v", st.name, v, st.want)
		}
	}
}

// quantile is what the dashboard's histogram_quantile(q, …) reads from an
// unlabelled histogram: linear interpolation inside the bucket the rank
// falls in, the highest finite bound when it falls in +Inf.
func quantile(t *testing.T, reg prometheus.Gatherer, name string, q float64) float64 {
	t.Helper()
	mf, ok := gather(t, reg)[name]
	if !ok || len(mf.GetMetric()) != 1 {
		t.Fatalf("%s: not one histogram", name)
	}
	h := mf.GetMetric()[0].GetHistogram()
	rank := q * float64(h.GetSampleCount())
	var lower, below float64
	for _, b := range h.GetBucket() {
		if float64(b.GetCumulativeCount()) >= rank {
			return lower + (b.GetUpperBound()-lower)*(rank-below)/(float64(b.GetCumulativeCount())-below)
		}
		lower, below = b.GetUpperBound(), float64(b.GetCumulativeCount())
	}
	return lower // in +Inf
}

// The dashboard's batch size panels read p50 and p99 from cdc_batch_rows
// and cdc_batch_bytes, "capped by" the batch limits, to tell batches cut
// small from batches at a limit (docs/operations.md, Lag). The p99 must
// not read above the limit no batch reached, nor far above the largest
// batch stored.
func TestBatchHistograms_ResolveTheBatchLimits(t *testing.T) {
	const mib = 1 << 20
	// The batches of a real drain of 200,000 events at the defaults,
	// cut by CDC_FLUSH_INTERVAL (rows, payload bytes).
	drain := [][2]float64{{19256, 5669414}, {15092, 4452140}, {19039, 5616505}, {7437, 2193915}, {10521, 3103695},
		{6929, 2044055}, {6273, 1850535}, {15752, 4647140}, {22075, 6534200}, {20851, 6171896},
		{22075, 6534200}, {22075, 6534200}, {12625, 3737000}}
	for _, tc := range []struct {
		name             string
		maxRows, maxByte int
		batches          [][2]float64
	}{
		{"a drain at the defaults", 50000, 16 * mib, drain},
		{"batches at the default row limit", 50000, 16 * mib, [][2]float64{{50000, 9 * mib}, {50000, 9 * mib}, {50000, 9 * mib}}},
		{"batches at the default byte limit", 50000, 16 * mib, [][2]float64{{30000, 16*mib - 1}, {30000, 16*mib - 1}}},
		{"batches at a raised row limit", 100000, 64 * mib, [][2]float64{{100000, 20 * mib}, {100000, 20 * mib}}},
		{"batches at a lowered byte limit", 50000, 5 * mib, [][2]float64{{9000, 5*mib - 10}, {9000, 5*mib - 10}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			m := metrics.New(reg, func() int64 { return 0 }, metrics.BatchLimits(tc.maxRows, tc.maxByte))
			var largestRows, largestBytes float64
			for _, b := range tc.batches {
				m.BatchRows.Observe(b[0])
				m.BatchBytes.Observe(b[1])
				largestRows, largestBytes = max(largestRows, b[0]), max(largestBytes, b[1])
			}
			for _, h := range []struct {
				name           string
				largest, limit float64
			}{
				{"cdc_batch_rows", largestRows, float64(tc.maxRows)},
				{"cdc_batch_bytes", largestBytes, float64(tc.maxByte)},
			} {
				p99 := quantile(t, reg, h.name, 0.99)
				if p99 > h.limit || p99 > 2*h.largest {
					t.Errorf("%s p99 reads %.0f with every batch at most %.0f and the limit %.0f; want at most the limit and twice the largest batch",
						h.name, p99, h.largest, h.limit)
				}
			}
		})
	}
}

// cdc_flush_duration_seconds counts a batch's retries, so a ClickHouse
// outage shows as batches stored minutes after their first attempt. The
// dashboard's p99 must say minutes then, not the top bucket's bound: a
// quantile in +Inf reads as the highest finite bound.
func TestFlushDuration_ResolvesAnOutage(t *testing.T) {
	for _, tc := range []struct {
		name    string
		seconds []float64
	}{
		{"batches of a healthy sink", []float64{0.012, 0.03, 0.05, 0.2, 0.4}},
		{"a batch retried through a 5-minute outage", []float64{0.03, 0.04, 300}},
		{"a batch retried through a 30-minute outage", []float64{0.03, 1800}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			m := metrics.New(reg, func() int64 { return 0 })
			var longest float64
			for _, s := range tc.seconds {
				m.FlushDuration.Observe(s)
				longest = max(longest, s)
			}
			p99 := quantile(t, reg, "cdc_flush_duration_seconds", 0.99)
			if p99 < longest/2 || p99 > 2*longest {
				t.Errorf("p99 reads %.3f s with the longest batch at %.3f s; want within a factor of two of it", p99, longest)
			}
		})
	}
}
