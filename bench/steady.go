package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/eventcdc/cdc/config"
)

// The pgbench transaction: one outbox insert carrying clock_timestamp() in
// microseconds. With autocommit the commit follows within microseconds, so
// the stamp stands for the commit time.
const steadyScript = `\set r random(1, 1000000000)
INSERT INTO outbox (event_type, environment, event_context) VALUES ('bench.steady', 'production', ('{"ts":' || (extract(epoch from clock_timestamp()) * 1000000)::bigint || ',"r":' || :r || ',"customer_id":"cus_8f3a2b1c","currency":"EUR","total":"149.90","items":[{"sku":"SKU-1042","qty":2,"price":"49.95"},{"sku":"SKU-2210","qty":1,"price":"50.00"}],"shipping":{"method":"express","country":"DE"},"locale":"de-DE","source":"web","campaign":"spring-sale"}')::json);
`

// steadyTraffic measures commit → visible latency under a fixed insert
// rate, then the primary's unthrottled TPS with and without the connector.
func (b *bench) steadyTraffic(ctx context.Context) error {
	w, err := b.newWorld(ctx, "bench_steady")
	if err != nil {
		return err
	}
	defer w.close()
	script := filepath.Join(b.o.dir, "steady.sql")
	if err := os.WriteFile(script, []byte(steadyScript), 0o644); err != nil {
		return fmt.Errorf("write pgbench script: %w", err)
	}
	flush := config.DefaultFlushInterval
	c, err := b.startCDC(w, "steady", map[string]string{"CDC_FLUSH_INTERVAL": flush.String()})
	if err != nil {
		return err
	}
	defer func() { _ = c.stop() }()
	wsPID, err := waitStreaming(ctx, w, c)
	if err != nil {
		return err
	}
	pids := []int{wsPID, c.pid(), b.clickhousePID()}

	target := float64(flush.Milliseconds() + 300)
	for i, load := range []struct {
		rate int
		dur  time.Duration
	}{{b.o.rate, b.o.steady}, {1000, 10 * time.Second}} {
		cpu0 := cpuTimes(pids)
		lat, settled, pb, events, err := b.latencyRun(ctx, w, c, script, load.rate, load.dur, i)
		if err != nil {
			return err
		}
		cpu := cpuDelta(cpu0, cpuTimes(pids), pb.elapsed)
		p50, p99, pmax := pct(lat, 0.50), pct(lat, 0.99), lat[len(lat)-1]
		// The verdict is on the whole run; the part after a warm-up shows
		// how much of the tail is the first INSERTs into a cold table.
		warm := fmt.Sprintf("; events committed after the first %s: p50 %.0f ms, p99 %.0f ms", warmUp, pct(settled, 0.50), pct(settled, 0.99))
		figure := fmt.Sprintf("Steady traffic: pgbench -R %d, 4 clients, %s, one event per transaction; latency commit → visible in ClickHouse (20 ms polls)", load.rate, load.dur)
		if i > 0 {
			figure = fmt.Sprintf("Diagnostic: the same at -R %d for %s", load.rate, load.dur)
		}
		b.add("4", figure,
			fmt.Sprintf("%.0f TPS achieved, %d events; p50 **%.0f ms**, p99 **%.0f ms**, max %.0f ms%s; CPU cores busy: walsender %.2f, cdc %.2f, clickhouse-server %.2f",
				pb.tps, events, p50, p99, pmax, warm, cpu[0], cpu[1], cpu[2]),
			fmt.Sprintf("p99 ≤ CDC_FLUSH_INTERVAL (%s) + 300 ms = %.0f ms", flush, target), verdict(p99 <= target))
	}

	// Primary TPS with and without the connector, unthrottled, in the
	// order on off off on, off on on off, so drift and warm-up fall on
	// both sides. Before each run with the connector it has caught up
	// whatever the runs without it left behind.
	if err := c.stop(); err != nil {
		return err
	}
	t, err := b.tpsRuns(ctx, w, script, "nice0", []bool{true, false, false, true, false, true, true, false}, 0)
	if err != nil {
		return err
	}
	b.add("4", fmt.Sprintf("Primary TPS, unthrottled pgbench (4 clients, %s per run; order on off off on off on on off)", b.o.tpsRun),
		fmt.Sprintf("with cdc %s (mean %.0f); without %s (mean %.0f); ratio **%.2f**; CPU cores busy during runs with cdc: walsender %.2f, cdc %.2f, clickhouse-server %.2f%s",
			fmtList(t.on), mean(t.on), fmtList(t.off), mean(t.off), mean(t.on)/mean(t.off), t.cpu[0], t.cpu[1], t.cpu[2], t.behindNote()),
		"≥ 0.9", verdict(mean(t.on)/mean(t.off) >= 0.9))

	// In production cdc and ClickHouse run on other hosts than the
	// primary; here they share its two cores. At nice 19 they get only
	// what PostgreSQL leaves, which approximates that: what remains is the
	// walsender's cost, which is the primary's in any deployment.
	t, err = b.tpsRuns(ctx, w, script, "nice19", []bool{true, false, false, true}, 19)
	if err != nil {
		return err
	}
	b.add("4", "Diagnostic: the same with cdc and clickhouse-server at nice 19 (order on off off on)",
		fmt.Sprintf("with cdc %s (mean %.0f); without %s (mean %.0f); ratio **%.2f**; CPU cores busy during runs with cdc: walsender %.2f, cdc %.2f, clickhouse-server %.2f%s",
			fmtList(t.on), mean(t.on), fmtList(t.off), mean(t.off), mean(t.on)/mean(t.off), t.cpu[0], t.cpu[1], t.cpu[2], t.behindNote()),
		"≥ 0.9", verdict(mean(t.on)/mean(t.off) >= 0.9))

	// The same with no cdc at all: PostgreSQL's own pg_recvlogical reading
	// its own pgoutput slot into /dev/null. What it costs the primary is
	// the cost of logical decoding itself, for any consumer.
	on, off, err := b.recvlogicalRuns(ctx, w, script, "bench_recvlogical", []bool{true, false, false, true})
	if err != nil {
		return err
	}
	b.add("4", "Diagnostic: the same with pg_recvlogical (pgoutput, same publication, output to /dev/null) instead of cdc (order on off off on)",
		fmt.Sprintf("with pg_recvlogical %s (mean %.0f); without %s (mean %.0f); ratio **%.2f**",
			fmtList(on), mean(on), fmtList(off), mean(off), mean(on)/mean(off)),
		"—", "—")
	return b.pinnedTPS(ctx, w, script)
}

// pinnedTPS repeats the primary-TPS runs, with cdc and then with
// pg_recvlogical, with PostgreSQL on a CPU of its own (pin.go says what
// that stands in for).
func (b *bench) pinnedTPS(ctx context.Context, w *world, script string) (err error) {
	if numCPU() < 2 {
		b.note("The pinned primary-TPS diagnostics need two CPUs; this machine has %d.", numCPU())
		return nil
	}
	restore, err := b.pinSplit()
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, restore()) }()
	// One core's TPS moves more from run to run than two cores' (2,964–
	// 5,830 without a consumer in one session): eight runs each, as for
	// the verdict.
	order := []bool{true, false, false, true, false, true, true, false}
	t, err := b.tpsRuns(ctx, w, script, "pinned", order, 0)
	if err != nil {
		return err
	}
	b.add("4", fmt.Sprintf("Diagnostic: the same with PostgreSQL on CPU %d and pgbench, cdc and clickhouse-server on CPU %d (a stand-in for a primary with a host of its own; order on off off on off on on off)", pgCPU, restCPU),
		fmt.Sprintf("with cdc %s (mean %.0f); without %s (mean %.0f); ratio **%.2f**; CPU cores busy during runs with cdc: walsender %.2f, cdc %.2f, clickhouse-server %.2f%s",
			fmtList(t.on), mean(t.on), fmtList(t.off), mean(t.off), mean(t.on)/mean(t.off), t.cpu[0], t.cpu[1], t.cpu[2], t.behindNote()),
		"≥ 0.9", verdict(mean(t.on)/mean(t.off) >= 0.9))
	on, off, err := b.recvlogicalRuns(ctx, w, script, "bench_recvlogical_pinned", order)
	if err != nil {
		return err
	}
	b.add("4", fmt.Sprintf("Diagnostic: the same pinned, with pg_recvlogical on CPU %d instead of cdc (order on off off on off on on off)", restCPU),
		fmt.Sprintf("with pg_recvlogical %s (mean %.0f); without %s (mean %.0f); ratio **%.2f**",
			fmtList(on), mean(on), fmtList(off), mean(off), mean(on)/mean(off)),
		"—", "—")
	return nil
}

// recvlogicalRuns is tpsRuns with pg_recvlogical as the consumer, on a
// slot of its own created for the purpose and dropped again.
func (b *bench) recvlogicalRuns(ctx context.Context, w *world, script, slot string, order []bool) (on, off []float64, err error) {
	if _, err := w.pg.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot); err != nil {
		return nil, nil, fmt.Errorf("create slot %s: %w", slot, err)
	}
	defer func() {
		// pg_recvlogical's walsender may still hold the slot for a moment
		// after the process exits; an active slot cannot be dropped.
		for range 100 {
			if _, err := w.pg.Exec(context.Background(), "SELECT pg_drop_replication_slot($1)", slot); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	recv := filepath.Join(filepath.Dir(b.o.pgbench), "pg_recvlogical")
	var cmd *exec.Cmd
	stop := func() error {
		if cmd == nil {
			return nil
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		err := cmd.Wait()
		cmd = nil
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			return fmt.Errorf("pg_recvlogical: %w", err)
		}
		return nil
	}
	defer func() { _ = stop() }()
	for _, want := range order {
		switch {
		case want && cmd == nil:
			cmd = exec.Command(recv, "-d", w.pgDSN, "--slot", slot, "--start", "-f", "/dev/null",
				"-o", "proto_version=1", "-o", "publication_names="+config.DefaultPublication, "-s", "1", "-F", "1")
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := cmd.Start(); err != nil {
				return nil, nil, fmt.Errorf("start pg_recvlogical: %w", err)
			}
			// Caught up with what the runs without it left behind.
			deadline := time.Now().Add(5 * time.Minute)
			for {
				var behind int64
				if err := w.pg.QueryRow(ctx, "SELECT pg_current_wal_lsn() - confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&behind); err != nil {
					return nil, nil, fmt.Errorf("read slot %s: %w", slot, err)
				}
				if behind < 1<<20 {
					break
				}
				if time.Now().After(deadline) {
					return nil, nil, fmt.Errorf("pg_recvlogical still %d bytes behind after 5 minutes", behind)
				}
				time.Sleep(200 * time.Millisecond)
			}
		case !want && cmd != nil:
			if err := stop(); err != nil {
				return nil, nil, err
			}
		}
		r, err := b.pgbench(ctx, w, script, "-T", strconv.Itoa(int(b.o.tpsRun.Seconds())))
		if err != nil {
			return nil, nil, err
		}
		if want {
			on = append(on, r.tps)
		} else {
			off = append(off, r.tps)
		}
	}
	return on, off, nil
}

// tpsRuns runs unthrottled pgbench once per entry of order, with the
// connector running (true) or stopped, cdc and clickhouse-server at the
// given nice value while they run; label names the connector's logs. It returns the TPS of the runs with and
// without, and the mean cores busy (walsender, cdc, clickhouse-server)
// during the runs with.
func (b *bench) tpsRuns(ctx context.Context, w *world, script, label string, order []bool, nice int) (res tpsResult, err error) {
	var on, off, cpu []float64
	chPID := b.clickhousePID()
	if err := renice(chPID, nice); err != nil {
		return res, err
	}
	defer func() { _ = renice(chPID, 0) }()
	var c *connector
	var pids []int
	var onCPU [][]float64
	for _, want := range order {
		switch {
		case want && c == nil:
			if c, err = b.startCDC(w, fmt.Sprintf("tps%d-%s", len(on), label), nil); err != nil {
				return res, err
			}
			defer func(c *connector) { _ = c.stop() }(c)
			if err := renice(c.pid(), nice); err != nil {
				return res, err
			}
			var total int64
			if err := w.pg.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&total); err != nil {
				return res, fmt.Errorf("count outbox: %w", err)
			}
			if _, err := waitCount(ctx, w.ch, c, uint64(total), 50*time.Millisecond, 5*time.Minute); err != nil {
				return res, err
			}
			wsPID, err := waitStreaming(ctx, w, c)
			if err != nil {
				return res, err
			}
			pids = []int{wsPID, c.pid(), chPID}
		case !want && c != nil:
			if err := c.stop(); err != nil {
				return res, err
			}
			c = nil
		}
		cpu0 := cpuTimes(pids)
		r, err := b.pgbench(ctx, w, script, "-T", strconv.Itoa(int(b.o.tpsRun.Seconds())))
		if err != nil {
			return res, err
		}
		if want {
			on = append(on, r.tps)
			onCPU = append(onCPU, cpuDelta(cpu0, cpuTimes(pids), r.elapsed))
			// Did cdc keep up? A connector behind lets its walsender
			// wait on a full socket, which flatters the primary's TPS;
			// and the next run with it starts caught up.
			behind, took, err := b.catchUp(ctx, w, c)
			if err != nil {
				return res, err
			}
			res.behind = append(res.behind, fmt.Sprintf("%.1f MiB / %.1f s", float64(behind)/(1<<20), took.Seconds()))
		} else {
			off = append(off, r.tps)
		}
	}
	if c != nil {
		if err := c.stop(); err != nil {
			return res, err
		}
	}
	cpu = make([]float64, 3)
	for _, v := range onCPU {
		for i := range cpu {
			cpu[i] += v[i] / float64(len(onCPU))
		}
	}
	return tpsResult{on: on, off: off, cpu: cpu, behind: res.behind}, nil
}

// tpsResult is what tpsRuns measured: the TPS of the runs with and
// without the connector, the cores busy during the runs with it
// (walsender, cdc, clickhouse-server), and after each run with it the WAL
// it had not acknowledged and how long it took to catch up.
type tpsResult struct {
	on, off, cpu []float64
	behind       []string
}

// behindNote is the row text for what the runs with the connector left
// behind.
func (r tpsResult) behindNote() string {
	return "; after each run with cdc, WAL not yet acknowledged / time to store every event: " + strings.Join(r.behind, ", ")
}

// catchUp reads how much WAL the running connector has not acknowledged,
// then waits until it has stored every outbox row.
func (b *bench) catchUp(ctx context.Context, w *world, c *connector) (int64, time.Duration, error) {
	var behind int64
	if err := w.pg.QueryRow(ctx, `SELECT pg_current_wal_lsn() - confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1`, w.slot).Scan(&behind); err != nil {
		return 0, 0, fmt.Errorf("read the slot's lag: %w", err)
	}
	start := time.Now()
	var total int64
	if err := w.pg.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&total); err != nil {
		return 0, 0, fmt.Errorf("count outbox: %w", err)
	}
	if _, err := waitCount(ctx, w.ch, c, uint64(total), 20*time.Millisecond, 5*time.Minute); err != nil {
		return 0, 0, err
	}
	return behind, time.Since(start), nil
}

// renice sets the nice value of every thread of pid: threads have their
// own, and ClickHouse's pools exist before we get to it.
func renice(pid, nice int) error {
	if err := eachThread(pid, func(tid int) error { return syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice) }); err != nil {
		return fmt.Errorf("renice to %d: %w", nice, err)
	}
	return nil
}

// eachThread calls fn with every thread of pid; a thread that exits
// meanwhile is skipped.
func eachThread(pid int, fn func(tid int) error) error {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return fmt.Errorf("threads of %d: %w", pid, err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := fn(tid); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("thread %d of %d: %w", tid, pid, err)
		}
	}
	return nil
}

// warmUp is the start of a latency run reported apart as well.
const warmUp = 5 * time.Second

// latencyRun runs pgbench at a fixed rate while polling ClickHouse for new
// rows every 20 ms, and returns the sorted latencies in milliseconds: all,
// and those of events committed after the first warmUp. Each
// row is stamped with the start of the first poll that returned it: it was
// visible by then, and not before the previous poll began, so the stamp is
// late by at most one poll period plus one query.
func (b *bench) latencyRun(ctx context.Context, w *world, c *connector, script string, rate int, dur time.Duration, run int) (all, settled []float64, _ pgbenchResult, _ int64, _ error) {
	var before int64
	if err := w.pg.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&before); err != nil {
		return nil, nil, pgbenchResult{}, 0, fmt.Errorf("count outbox: %w", err)
	}
	type arrival struct{ ts, seen int64 } // Unix µs
	var arrivals []arrival
	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	pollDone := make(chan error, 1)
	go func() {
		var lastLSN, lastSeq uint64
		if err := w.ch.QueryRow(pollCtx, "SELECT max(cdc_commit_lsn), argMax(cdc_seq, cdc_commit_lsn) FROM event_log").Scan(&lastLSN, &lastSeq); err != nil {
			pollDone <- fmt.Errorf("read last position: %w", err)
			return
		}
		for pollCtx.Err() == nil {
			start := time.Now()
			rows, err := w.ch.Query(pollCtx, fmt.Sprintf(`SELECT visitParamExtractUInt(event_context, 'ts'), cdc_commit_lsn, cdc_seq FROM event_log
				WHERE cdc_commit_lsn > %d OR (cdc_commit_lsn = %d AND cdc_seq > %d)`, lastLSN, lastLSN, lastSeq))
			if err != nil {
				if pollCtx.Err() != nil {
					break
				}
				pollDone <- fmt.Errorf("poll event_log: %w", err)
				return
			}
			for rows.Next() {
				var ts, lsn, seq uint64
				if err := rows.Scan(&ts, &lsn, &seq); err != nil {
					rows.Close()
					pollDone <- fmt.Errorf("scan event_log: %w", err)
					return
				}
				arrivals = append(arrivals, arrival{int64(ts), start.UnixMicro()})
				if lsn > lastLSN || (lsn == lastLSN && seq > lastSeq) {
					lastLSN, lastSeq = lsn, seq
				}
			}
			rows.Close()
			time.Sleep(max(0, 20*time.Millisecond-time.Since(start)))
		}
		pollDone <- nil
	}()

	pb, err := b.pgbench(ctx, w, script, "-R", strconv.Itoa(rate), "-T", strconv.Itoa(int(dur.Seconds())))
	if err != nil {
		return nil, nil, pgbenchResult{}, 0, err
	}
	var total int64
	if err := w.pg.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&total); err != nil {
		return nil, nil, pgbenchResult{}, 0, fmt.Errorf("count outbox: %w", err)
	}
	_, werr := waitCount(ctx, w.ch, c, uint64(total), 20*time.Millisecond, time.Minute)
	time.Sleep(100 * time.Millisecond) // let the poller see the last rows
	stopPoll()
	if err := <-pollDone; err != nil {
		return nil, nil, pgbenchResult{}, 0, err
	}
	if werr != nil {
		return nil, nil, pgbenchResult{}, 0, werr
	}
	events := total - before
	if int64(len(arrivals)) != events {
		return nil, nil, pgbenchResult{}, 0, fmt.Errorf("latency poller saw %d rows for %d events", len(arrivals), events)
	}
	// The raw pairs, for a look at the tail over time.
	var csv strings.Builder
	csv.WriteString("commit_unix_us,seen_unix_us\n")
	lat := make([]float64, len(arrivals))
	first := arrivals[0].ts
	for _, a := range arrivals {
		first = min(first, a.ts)
	}
	for i, a := range arrivals {
		lat[i] = float64(a.seen-a.ts) / 1e3
		if a.ts >= first+warmUp.Microseconds() {
			settled = append(settled, lat[i])
		}
		fmt.Fprintf(&csv, "%d,%d\n", a.ts, a.seen)
	}
	if err := os.WriteFile(filepath.Join(b.o.dir, fmt.Sprintf("latency-%d.csv", rate)), []byte(csv.String()), 0o644); err != nil {
		return nil, nil, pgbenchResult{}, 0, fmt.Errorf("write latency csv: %w", err)
	}
	slices.Sort(lat)
	slices.Sort(settled)
	return lat, settled, pb, events, nil
}

type pgbenchResult struct {
	tps     float64
	elapsed time.Duration
}

var tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

func (b *bench) pgbench(ctx context.Context, w *world, script string, args ...string) (pgbenchResult, error) {
	all := append([]string{"-n", "-f", script, "-c", "4", "-j", "2"}, args...)
	all = append(all, w.pgDSN)
	t := time.Now()
	out, err := exec.CommandContext(ctx, b.o.pgbench, all...).CombinedOutput()
	if err != nil {
		return pgbenchResult{}, fmt.Errorf("pgbench %v: %w: %s", args, err, out)
	}
	m := tpsRE.FindSubmatch(out)
	if m == nil {
		return pgbenchResult{}, fmt.Errorf("no tps in pgbench output: %s", out)
	}
	tps, _ := strconv.ParseFloat(string(m[1]), 64)
	return pgbenchResult{tps: tps, elapsed: time.Since(t)}, nil
}

// cpuTimes reads the CPU time of each process; 0 for one that is gone.
func cpuTimes(pids []int) []time.Duration {
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		out[i], _ = cpuTime(pid)
	}
	return out
}

// cpuDelta is the cores each process kept busy over elapsed.
func cpuDelta(before, after []time.Duration, elapsed time.Duration) []float64 {
	out := make([]float64, len(before))
	for i := range before {
		out[i] = (after[i] - before[i]).Seconds() / elapsed.Seconds()
	}
	return out
}

func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func fmtList(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(s, " / ") + " TPS"
}
