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
