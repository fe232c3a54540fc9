// Package health serves /metrics, /healthz and /readyz, and Go's profiles
// under /debug/pprof/ when asked to. Liveness means the process runs its
// loop; readiness means both ends are reachable right now, judged by checks
// at most MaxAge old.
package health

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one named readiness probe.
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
}

// Server runs the checks on a timer and answers HTTP probes.
type Server struct {
	Addr string
	// Listener, when set, is served instead of listening on Addr: a
	// caller that listens first finds a taken or unresolvable address
	// before it connects to anything.
	Listener net.Listener
	Gatherer prometheus.Gatherer
	Checks   []Check
	Every    time.Duration // how often checks run
	MaxAge   time.Duration // older results count as failed
	// Profiling serves Go's runtime profiles (heap, CPU, goroutines)
	// under /debug/pprof/. Off by default: they show the process's
	// internals to whoever reaches the port, and a CPU profile costs CPU.
	Profiling bool
	// IdleTimeout closes a kept-alive connection idle this long, and
	// WriteTimeout a response not written within it (a client that stops
	// reading); 0 for the defaults, 2 min and 5 min. A CPU profile or
	// trace may last up to WriteTimeout.
	IdleTimeout, WriteTimeout time.Duration

	mu      sync.Mutex
	results map[string]result
}

type result struct {
	err error
	at  time.Time
}

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	s.results = map[string]result{}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", s.ready)
	if s.Profiling {
		// pprof.Index serves every named profile (heap, allocs,
		// goroutine, ...) under its prefix; the others need their own.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	ln := s.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.Addr); err != nil {
			return fmt.Errorf("listen on %s (CDC_METRICS_ADDR): %w", s.Addr, err)
		}
	}
	// Without these a scraper's kept-alive connection, or one that
	// stopped reading, would hold its goroutine and buffers for ever.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout: cmp.Or(s.IdleTimeout, 2*time.Minute), WriteTimeout: cmp.Or(s.WriteTimeout, 5*time.Minute)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	go s.probe(ctx)
	select {
	case err := <-errc:
		return fmt.Errorf("serve metrics: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if srv.Shutdown(sctx) != nil {
		// A response still being written after 2 s: cut it.
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (s *Server) probe(ctx context.Context) {
	for _, c := range s.Checks {
		go s.probeOne(ctx, c)
	}
}

// probeOne runs one check every s.Every, each with s.Every to answer. A
// check that outlasts it (a driver that ignores its context while a new
// connection's handshake hangs) is recorded as not answering each time
// s.Every passes, and is not started again until it returns: the checks
// do not wait on each other, and a hung one does not pile up.
func (s *Server) probeOne(ctx context.Context, c Check) {
	t := time.NewTicker(s.Every)
	defer t.Stop()
	done := make(chan error, 1)
	var started time.Time
	for {
		if started.IsZero() {
			started = time.Now()
			go func() {
				cctx, cancel := context.WithTimeout(ctx, s.Every)
				defer cancel()
				done <- c.Fn(cctx)
			}()
		}
		wait := time.NewTimer(s.Every)
		select {
		case err := <-done:
			started = time.Time{}
			s.record(c.Name, err)
		case <-wait.C:
			s.record(c.Name, fmt.Errorf("no answer in %s", time.Since(started).Round(time.Millisecond)))
		case <-ctx.Done():
			wait.Stop()
			return
		}
		wait.Stop()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) record(name string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.results[name] = result{err: err, at: time.Now()}
}

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	var problems []string
	s.mu.Lock()
	for _, c := range s.Checks {
		r, ok := s.results[c.Name]
		switch {
		case !ok:
			problems = append(problems, c.Name+": not checked yet")
		case time.Since(r.at) > s.MaxAge:
			problems = append(problems, fmt.Sprintf("%s: last check %s ago", c.Name, time.Since(r.at).Round(time.Millisecond)))
		case r.err != nil:
			problems = append(problems, c.Name+": "+r.err.Error())
		}
	}
	s.mu.Unlock()
	if len(problems) > 0 {
		http.Error(w, strings.Join(problems, "\n"), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}
