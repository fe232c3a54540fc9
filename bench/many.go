package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eventcdc/cdc/config"
	"github.com/eventcdc/cdc/internal/testenv"
)

// manyTransactions drains a backlog shaped like a connector outage under
// live traffic: every event committed in its own transaction, as a web
// request commits its business rows and its outbox row. The issue's
// backlog is one transaction; this one carries a Begin and a Commit per
// event and is the one an operator meets after cdc was down. Its
// references are the same ceiling (PostgreSQL's decoding of the same WAL,
// no network) and PostgreSQL's own replication client, pg_recvlogical:
// what the walsender's streaming path delivers to a consumer that does
// nothing with the data.
func (b *bench) manyTransactions(ctx context.Context) error {
	n := b.o.events
	w, err := b.newWorld(ctx, "bench_many")
	if err != nil {
		return err
	}
	defer w.close()
	pairs := max(1, b.o.pairs)
	drainWorlds, err := b.pairWorlds(ctx, w, "bench_many", pairs)
	if err != nil {
		return err
	}
	defer disconnect(drainWorlds[1:]...)
	// The same drain over the server's Unix socket: the walsender sends
	// three messages per event, each its own send, and a socket's send
	// costs it less than a TCP one.
	sock, err := b.sibling(ctx, w, "bench_many_socket")
	if err != nil {
		return err
	}
	defer disconnect(sock)
	if sock.pgDSN, err = testenv.SocketDSN(w.pgDSN, testenv.SocketDir(b.o.dir)); err != nil {
		return err
	}
	const recvSlot = "many_recvlogical"
	ceilSlots := make([]string, pairs)
	for i := range ceilSlots {
		ceilSlots[i] = fmt.Sprintf("many_ceiling_%d", i+1)
	}
	for _, slot := range append(ceilSlots, recvSlot) {
		if _, err := w.pg.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
			return fmt.Errorf("create %s: %w", slot, err)
		}
	}
	insertDur, err := insertTransactions(ctx, w.pg, n)
	if err != nil {
		return err
	}
	var endPos string
	var walBytes int64
	if err := w.pg.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text, pg_current_wal_lsn() - confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1`,
		recvSlot).Scan(&endPos, &walBytes); err != nil {
		return fmt.Errorf("measure backlog WAL: %w", err)
	}
	b.note("Backlog of the many-transaction drain: %d outbox inserts, each committed in its own transaction (%s to insert, %.0f MiB of WAL).",
		n, insertDur.Round(time.Millisecond), float64(walBytes)/(1<<20))

	// Begin, Insert and Commit per event.
	ps, _, err := b.alternate(ctx, w, ceilSlots, drainWorlds, n, int64(3*n), "many")
	if err != nil {
		return err
	}
	recv, err := b.recvlogicalTo(ctx, w, recvSlot, endPos)
	if err != nil {
		return err
	}

	ds, err := b.drainOnce(ctx, sock, n, "many-socket", nil)
	if err != nil {
		return err
	}

	mid := medianPair(ps)
	ceilDur, d := ps[mid].ceil, ps[mid].drain
	figure := fmt.Sprintf("Many transactions: %d events, each committed in its own transaction (the backlog of an outage under live traffic)", n)
	b.add("2", figure+"; ceiling as in row 1",
		fmt.Sprintf("%d messages in %.2f s → **%.0f events/s** (the median pair's; the %d pairs' ceilings: %s s)",
			ps[mid].msgs, ceilDur.Seconds(), float64(n)/ceilDur.Seconds(), pairs, joinDurs(ps, func(p drainPair) time.Duration { return p.ceil })),
		"reference", "—")
	b.add("2", "Many transactions: reference, `pg_recvlogical` (PostgreSQL's own client; pgoutput v2, streaming) from start to `--endpos`, output to /dev/null",
		fmt.Sprintf("%.2f s → **%.0f events/s**", recv.Seconds(), float64(n)/recv.Seconds()), "reference", "—")
	b.add("2", "Many transactions: drain, `cdc run` start → last row visible in ClickHouse",
		fmt.Sprintf("%.2f s → **%.0f events/s** (the median pair's; the %d pairs' drains: %s s); drain / ceiling **%.2f** (pairs: %s); drain / pg_recvlogical **%.2f**",
			d.dur.Seconds(), float64(n)/d.dur.Seconds(), pairs, joinDurs(ps, func(p drainPair) time.Duration { return p.drain.dur }),
			ps[mid].ratio(), joinRatios(ps), recv.Seconds()/d.dur.Seconds()),
		"—", "—")
	b.add("2", "Many transactions: CPU while draining (the median pair's drain)",
		fmt.Sprintf("cdc %.2f s (%.1f µs/event), walsender %.2f s (%.1f µs/event), clickhouse-server %.2f s, over %.2f s",
			d.cdcCPU.Seconds(), d.cdcCPU.Seconds()*1e6/float64(n), d.wsCPU.Seconds(), d.wsCPU.Seconds()*1e6/float64(n), d.chCPU.Seconds(), d.dur.Seconds()),
		"—", "—")
	b.add("2", "Many transactions: diagnostic, the same drain over the Unix socket",
		fmt.Sprintf("%.2f s → %.0f events/s; drain / ceiling **%.2f** (against the median pair's ceiling); CPU cdc %.2f s, walsender %.2f s (%.1f µs/event), clickhouse-server %.2f s",
			ds.dur.Seconds(), float64(n)/ds.dur.Seconds(), ceilDur.Seconds()/ds.dur.Seconds(),
			ds.cdcCPU.Seconds(), ds.wsCPU.Seconds(), ds.wsCPU.Seconds()*1e6/float64(n), ds.chCPU.Seconds()),
		"—", "—")
	minFull := -1
	for _, p := range ps {
		if m := smallestFull(p.drain.batches); minFull < 0 || m < minFull {
			minFull = m
		}
	}
	b.add("2", "Many transactions: INSERTs issued and rows per INSERT",
		fmt.Sprintf("%.0f INSERTs, mean %.0f rows; smallest before the last, over the %d drains: %d; per batch of the median pair's drain: %s",
			d.inserts, d.rowsPerInsert, pairs, minFull, summarizeInts(d.batches)),
		"≥ 10,000 rows while a backlog exists", verdict(minFull >= 10000))
	// The memory target holds for this backlog too: it is the one an
	// operator meets after an outage.
	peak, peaks := int64(0), []string{}
	for _, p := range append(ps, drainPair{drain: ds}) {
		peak = max(peak, p.drain.peak)
		peaks = append(peaks, fmt.Sprintf("%.1f", float64(p.drain.peak)/(1<<20)))
	}
	b.add("3", "Many transactions: peak RSS of cdc while draining (VmHWM; the highest of the drains, the Unix socket's included)",
		fmt.Sprintf("**%.1f MiB** (the %d drains, then the socket's: %s MiB)", float64(peak)/(1<<20), pairs, strings.Join(peaks, " / ")),
		"≤ 150 MiB", verdict(peak <= 150<<20))
	return nil
}

// insertTransactions inserts n events of the bench's backlog, each in a
// transaction of its own (a DO block that commits after every insert, so
// no client round trip per event is timed).
func insertTransactions(ctx context.Context, pg *pgx.Conn, n int) (time.Duration, error) {
	t := time.Now()
	_, err := pg.Exec(ctx, fmt.Sprintf(`DO $$ BEGIN
		FOR i IN 1..%d LOOP
			INSERT INTO outbox (event_type, environment, event_context, traceparent)
			VALUES ('order.created', 'production', %s, '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01');
			COMMIT;
		END LOOP; END $$`, n, eventContextSQL))
	if err != nil {
		return 0, fmt.Errorf("insert %d events in as many transactions: %w", n, err)
	}
	d := time.Since(t)
	for _, q := range []string{"VACUUM ANALYZE outbox", "CHECKPOINT"} {
		if _, err := pg.Exec(ctx, q); err != nil {
			return 0, fmt.Errorf("%s: %w", q, err)
		}
	}
	return d, nil
}

// recvlogicalTo times pg_recvlogical reading slot from its start to end
// (it exits there), its output thrown away.
func (b *bench) recvlogicalTo(ctx context.Context, w *world, slot, end string) (time.Duration, error) {
	recv := filepath.Join(filepath.Dir(b.o.pgbench), "pg_recvlogical")
	cmd := exec.CommandContext(ctx, recv, "-d", w.pgDSN, "--slot", slot, "--start", "--endpos", end, "-f", "/dev/null",
		"-o", "proto_version=2", "-o", "streaming=on", "-o", "publication_names="+config.DefaultPublication)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	t := time.Now()
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return 0, fmt.Errorf("pg_recvlogical to %s: %w: %s", end, err, strings.TrimSpace(stderr.String()))
		}
		return 0, fmt.Errorf("pg_recvlogical: %w", err)
	}
	return time.Since(t), nil
}
