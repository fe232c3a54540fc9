package health_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventcdc/cdc/health"
	"github.com/eventcdc/cdc/internal/testenv"
)

// fakeCheck is a readiness check whose outcome the test sets. hang makes
// the next call block until released, as a driver ignoring its context
// would.
type fakeCheck struct {
	mu    sync.Mutex
	err   error
	hang  chan struct{}
	calls int
}

func (f *fakeCheck) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeCheck) hangNext() (release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{})
	f.hang = ch
	return func() { close(ch) }
}

func (f *fakeCheck) fn(context.Context) error {
	f.mu.Lock()
	f.calls++
	hang, err := f.hang, f.err
	f.hang = nil
	f.mu.Unlock()
	if hang != nil {
		<-hang
	}
	return err
}

type running struct {
	base string
	errc chan error
}

// start runs srv until the test ends and waits until it answers.
func start(t *testing.T, srv *health.Server) *running {
	t.Helper()
	srv.Addr = testenv.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{base: "http://" + srv.Addr, errc: make(chan error, 1)}
	go func() { r.errc <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.errc:
			if err != nil {
				t.Errorf("Run after cancel: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s of cancel")
		}
	})
	waitStatus(t, r.base+"/healthz", http.StatusOK, "ok")
	return r
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// waitStatus polls url until it answers code with a body containing every
// one of want: the checks run apart, so one may report before another.
func waitStatus(t *testing.T, url string, code int, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		gotCode, body := get(t, url)
		if gotCode == code && containsAll(body, want) {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d %q, want %d containing %q", url, gotCode, body, code, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func TestReadyz(t *testing.T) {
	pg, ch := &fakeCheck{}, &fakeCheck{}
	srv := &health.Server{
		Gatherer: prometheus.NewRegistry(),
		Checks:   []health.Check{{Name: "postgres", Fn: pg.fn}, {Name: "clickhouse", Fn: ch.fn}},
		Every:    20 * time.Millisecond,
		MaxAge:   500 * time.Millisecond,
	}
	// The first probe of postgres hangs, ignoring its context: it is
	// reported as not answering, and clickhouse's checks go on beside it.
	release := pg.hangNext()
	r := start(t, srv)
	ready := r.base + "/readyz"

	body := waitStatus(t, ready, http.StatusServiceUnavailable, "postgres: no answer in")
	if strings.Contains(body, "clickhouse") {
		t.Errorf("body %q reports clickhouse, whose checks answer", body)
	}
	pg.mu.Lock()
	calls := pg.calls
	pg.mu.Unlock()
	if calls != 1 {
		t.Errorf("postgres was checked %d times while its first check hung, want 1", calls)
	}
	release()
	waitStatus(t, ready, http.StatusOK, "ready")

	steps := []struct {
		name string
		do   func() (undo func())
		code int
		want []string // substrings of the body
		not  []string
	}{
		{name: "clickhouse down", code: http.StatusServiceUnavailable,
			do: func() func() {
				ch.set(errors.New("dial tcp 127.0.0.1:9000: connection refused"))
				return func() { ch.set(nil) }
			},
			want: []string{"clickhouse: dial tcp 127.0.0.1:9000: connection refused"}, not: []string{"postgres"}},
		{name: "both down", code: http.StatusServiceUnavailable,
			do: func() func() {
				pg.set(errors.New("replication connection is not streaming"))
				ch.set(errors.New("timeout"))
				return func() { pg.set(nil); ch.set(nil) }
			},
			want: []string{"postgres: replication connection is not streaming", "clickhouse: timeout"}},
		// A check that hangs counts as failed, even though its last
		// result was a success, and holds no other check up.
		{name: "check hangs", code: http.StatusServiceUnavailable,
			do:   func() func() { return pg.hangNext() },
			want: []string{"postgres: no answer in"}, not: []string{"clickhouse"}},
	}
	for _, st := range steps {
		undo := st.do()
		body := waitStatus(t, ready, st.code, st.want...)
		for _, n := range st.not {
			if strings.Contains(body, n) {
				t.Errorf("%s: body %q mentions %q", st.name, body, n)
			}
		}
		if code, body := get(t, r.base+"/healthz"); code != http.StatusOK || body != "ok\n" {
			t.Errorf("%s: /healthz = %d %q, want 200 \"ok\\n\"", st.name, code, body)
		}
		undo()
		waitStatus(t, ready, http.StatusOK, "ready")
	}
}

// Before a check's first answer /readyz is not ready, saying so; a result
// older than MaxAge (the prober stuck elsewhere) does not count either.
func TestReadyz_UncheckedAndStaleResultsAreNotReady(t *testing.T) {
	t.Run("not checked yet", func(t *testing.T) {
		pg, ch := &fakeCheck{}, &fakeCheck{}
		release := pg.hangNext()
		// An hour between probes: the hung first one is not reported as
		// not answering within the test.
		r := start(t, &health.Server{
			Gatherer: prometheus.NewRegistry(),
			Checks:   []health.Check{{Name: "postgres", Fn: pg.fn}, {Name: "clickhouse", Fn: ch.fn}},
			Every:    time.Hour,
			MaxAge:   2 * time.Hour,
		})
		// Both checks start at once: until clickhouse's has answered
		// both read "not checked yet" (a clean-clone CI met that). Then
		// postgres's alone, however long it hangs.
		deadline := time.Now().Add(5 * time.Second)
		for {
			code, body := get(t, r.base+"/readyz")
			if code == http.StatusServiceUnavailable && body == "postgres: not checked yet\n" {
				break
			}
			if time.Now().After(deadline) || code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "postgres: not checked yet\n") {
				t.Fatalf("/readyz = %d %q, want 503 with postgres alone not checked yet once clickhouse answered", code, body)
			}
			time.Sleep(10 * time.Millisecond)
		}
		release()
		waitStatus(t, r.base+"/readyz", http.StatusOK, "ready")
	})
	t.Run("older than MaxAge", func(t *testing.T) {
		pg := &fakeCheck{}
		r := start(t, &health.Server{
			Gatherer: prometheus.NewRegistry(),
			Checks:   []health.Check{{Name: "postgres", Fn: pg.fn}},
			Every:    time.Hour, // one probe, at the start
			MaxAge:   200 * time.Millisecond,
		})
		waitStatus(t, r.base+"/readyz", http.StatusServiceUnavailable, "postgres: last check ", " ago")
		pg.mu.Lock()
		calls := pg.calls
		pg.mu.Unlock()
		if calls != 1 {
			t.Errorf("postgres was checked %d times, want 1", calls)
		}
	})
}

func TestMetricsServed(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "cdc_test_things_total", Help: "Things."})
	reg.MustRegister(c)
	c.Add(42)
	r := start(t, &health.Server{Gatherer: reg, Every: time.Second, MaxAge: 2 * time.Second})
	code, body := get(t, r.base+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, "\ncdc_test_things_total 42\n") {
		t.Fatalf("/metrics = %d %q, want 200 with cdc_test_things_total 42", code, body)
	}
	// No checks configured: ready as soon as it serves.
	if code, body := get(t, r.base+"/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Fatalf("/readyz with no checks = %d %q", code, body)
	}
}

// Profiles are served only when asked for: the heap profile (its text
// form) when on, and nothing under /debug/pprof/ otherwise.
func TestProfiling(t *testing.T) {
	for _, on := range []bool{false, true} {
		r := start(t, &health.Server{Gatherer: prometheus.NewRegistry(), Every: time.Second, MaxAge: 2 * time.Second, Profiling: on})
		code, body := get(t, r.base+"/debug/pprof/heap?debug=1")
		switch {
		case on && (code != http.StatusOK || !strings.HasPrefix(body, "heap profile: ")):
			t.Fatalf("profiling on: /debug/pprof/heap?debug=1 = %d %.40q, want 200 with a heap profile", code, body)
		case !on && code != http.StatusNotFound:
			t.Fatalf("profiling off: /debug/pprof/heap = %d, want 404", code)
		}
	}
}

func TestRun_AddressInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	srv := &health.Server{Addr: l.Addr().String(), Gatherer: prometheus.NewRegistry(), Every: time.Second, MaxAge: 2 * time.Second}
	err = srv.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "CDC_METRICS_ADDR") {
		t.Fatalf("Run on a busy address = %v, want an error naming CDC_METRICS_ADDR", err)
	}
}

// A kept-alive connection is closed once idle for IdleTimeout, not held
// open for ever.
func TestRun_ClosesIdleConnections(t *testing.T) {
	r := start(t, &health.Server{Gatherer: prometheus.NewRegistry(), Every: time.Second, MaxAge: 2 * time.Second, IdleTimeout: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: cdc\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz: %v, %v", resp, err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "ok\n" || resp.Close {
		t.Fatalf("body %q, close %v; want ok and the connection kept alive", body, resp.Close)
	}
	// The server closes the idle connection: the next read ends with EOF
	// well before the 10 s deadline.
	start := time.Now()
	if n, err := conn.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read on the idle connection after %s: %d bytes, %v; want EOF", time.Since(start), n, err)
	}
}
