package sink_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/sink"
)

// A link to ClickHouse that freezes without a reset (a dropped route, a
// paused VM) fails the INSERT within read_timeout, whether the freeze
// stops the rows on their way (an INSERT larger than the sockets'
// buffers: without a bound, the write would wait for TCP to give up) or
// the answer; once the link is back, the same batch is stored, once.
func TestClickHouse_FrozenLinkFailsTheInsertWithinReadTimeout(t *testing.T) {
	tests := []struct {
		name    string
		rows    int
		context int // bytes of event_context per row, incompressible
		freeze  func(*testenv.Freezer)
	}{
		{"frozen before the INSERT", 3, 100, (*testenv.Freezer).Freeze},
		// 48 MiB, far more than the sockets on either side of the freezer
		// hold: the INSERT's writes stop.
		{"frozen while the rows are sent", 48, 1 << 20, func(fz *testenv.Freezer) { fz.FreezeAfter(4 << 20) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const readTimeout = 2 * time.Second
			ch, fz, _ := throughFreezer(t, readTimeout)
			ctx := context.Background()
			batch := incompressible(t, tt.rows, tt.context, 0x2000)
			tt.freeze(fz)
			done := make(chan error, 1)
			start := time.Now()
			go func() {
				_, err := ch.Write(ctx, batch)
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(readTimeout + 45*time.Second):
				fz.Thaw()
				t.Fatalf("the INSERT through a frozen link still waits %s after it began (read_timeout %s)", time.Since(start).Round(time.Second), readTimeout)
			}
			took := time.Since(start)
			if err == nil {
				t.Fatal("the INSERT through a frozen link succeeded")
			}
			// The time counted includes converting and compressing the
			// rows that filled the buffers before the writes stopped:
			// seconds on a busy host (7 s seen under make test).
			if took < readTimeout || took > readTimeout+20*time.Second {
				t.Fatalf("the INSERT through a frozen link failed after %s, want read_timeout (%s) and the time to fill the buffers: %v", took.Round(time.Millisecond), readTimeout, err)
			}
			t.Logf("failed after %s: %v", took.Round(time.Millisecond), err)

			fz.Thaw()
			if _, err := ch.Write(ctx, batch); err != nil {
				t.Fatalf("the same INSERT once the link is back: %v", err)
			}
			storedOnce(t, ch, batch)
		})
	}
}

// A Write whose context ends while clickhouse-go sends a block into a
// frozen link returns at once, not after read_timeout: batch.Flush does
// not watch the context, and a shutdown would wait that long. The batch is
// then stored when written again, on a pool of one connection: the
// abandoned one must have been given back.
func TestClickHouse_CancelledWriteLeavesAFrozenLinkAtOnce(t *testing.T) {
	defer sink.SetMaxConns(1)()
	ch, fz, direct := throughFreezer(t, 60*time.Second)
	// 48 rows of 1 MiB: the sink sends a block per 2 MiB of them.
	batch := incompressible(t, 48, 1<<20, 0x3000)
	fz.FreezeAfter(4 << 20)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := ch.Write(ctx, batch)
		done <- err
	}()
	// The writes stop at about 4 MiB, in the second block's Flush.
	for deadline := time.Now().Add(30 * time.Second); !fz.Frozen(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the link did not freeze within 30 s")
		}
	}
	time.Sleep(500 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("the INSERT through a frozen link ended before it was cancelled: %v", err)
	default:
	}
	// The server runs the INSERT meanwhile, under a query id of cdc's:
	// Written, on a link of its own, waits for it (here 300 ms, then it
	// warns, naming it).
	core, logs := observer.New(zapcore.WarnLevel)
	other, oerr := sink.Open(direct, zap.New(core))
	if oerr != nil {
		t.Fatal(oerr)
	}
	defer other.Close()
	sink.SetSettle(other, 300*time.Millisecond, 20*time.Millisecond)
	if _, werr := other.Written(context.Background(), 0, 1<<40); werr != nil {
		t.Fatal(werr)
	}
	warned := logs.FilterMessage("INSERTs into event_log still run on the server: the replay may write their rows again (FINAL shows each event once)").All()
	if len(warned) != 1 {
		t.Fatalf("Written during the frozen INSERT warned %v; want one warning naming its query id", warned)
	}
	if ids := fmt.Sprint(warned[0].ContextMap()["query_ids"]); !strings.HasPrefix(ids, "[cdc-insert-") || strings.Count(ids, "cdc-insert-") != 1 {
		t.Fatalf("Written during the frozen INSERT waited for %s; want the INSERT's query id, cdc-insert-…", ids)
	}
	cancel()
	start := time.Now()
	var err error
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		fz.Thaw()
		t.Fatalf("the cancelled INSERT still waits %s after its context ended (read_timeout 60s)", time.Since(start).Round(time.Second))
	}
	if err == nil {
		t.Fatal("the cancelled INSERT succeeded")
	}
	t.Logf("returned %s after the cancel: %v", time.Since(start).Round(time.Millisecond), err)

	fz.Thaw()
	if _, err := ch.Write(context.Background(), batch); err != nil {
		t.Fatalf("the same INSERT once the link is back: %v", err)
	}
	storedOnce(t, ch, batch)
}

// An INSERT cdc gives up on in the middle of a block — its context ended
// (a session ended on an error: PostgreSQL crashed) or the server took
// nothing for read_timeout — ends on the server at once. The next
// session's read of what is stored first waits for cdc's INSERTs the
// server still runs (settle), up to read_timeout: clickhouse-go leaves
// the socket of a block it failed to send open (marked closed, and its
// close then does nothing) until the garbage collector finds it, and
// ClickHouse waited for the rest of the block meanwhile — a new session
// after a PostgreSQL crash waited 59.9 s in CI, and a process making
// little garbage waits for the collector's forced run (two minutes) or
// the server's receive_timeout (five). Here the server stores each block
// as it comes (min_insert_block_size_rows=1) and a view sleeps 1 s at
// each: the next blocks wait in the sockets' buffers, and the write is
// in the middle of one when it is given up. The collector is off while
// the test looks, so that it cannot close a forgotten socket and hide
// the leak.
func TestClickHouse_AbandonedInsertEndsOnTheServerAtOnce(t *testing.T) {
	tests := []struct {
		name        string
		readTimeout time.Duration
		cancel      bool // the Write's context ends; else the stall fails it
		want        error
	}{
		{"context ended mid-block", time.Minute, true, context.Canceled},
		{"stalled mid-block", 500 * time.Millisecond, false, sink.ErrStalled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			admin, dsn := newSink(t)
			ctx := context.Background()
			if err := admin.Conn().Exec(ctx, "CREATE MATERIALIZED VIEW slow ENGINE = Null AS SELECT sleep(1) AS slept FROM event_log"); err != nil {
				t.Fatal(err)
			}
			// The client's name tells this INSERT from those of tests
			// of other packages on the same server.
			name := "abandon" + strings.ReplaceAll(uuid.NewString(), "-", "")
			u, err := url.Parse(dsn)
			if err != nil {
				t.Fatal(err)
			}
			q := u.Query()
			q.Set("read_timeout", tt.readTimeout.String())
			q.Set("min_insert_block_size_rows", "1")
			q.Set("min_insert_block_size_bytes", "1")
			q.Set("client_info_product", name+"/1")
			u.RawQuery = q.Encode()
			ch, err := sink.Open(u.String(), zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = ch.Close() })
			// Whether the server still runs the INSERT (1, else 0), and
			// how many of its rows it stored.
			progress := func() (running, written uint64) {
				t.Helper()
				if err := admin.Conn().QueryRow(ctx, "SELECT count(), sum(written_rows) FROM system.processes WHERE query_id LIKE 'cdc-insert-%' AND client_name LIKE ?", "%"+name+"%").Scan(&running, &written); err != nil {
					t.Fatal(err)
				}
				return running, written
			}

			defer debug.SetGCPercent(debug.SetGCPercent(-1))
			// 64 rows of a little over 1 MiB: a block each, each slept
			// on for 1 s.
			batch := incompressible(t, 64, 1<<20, 0x4000)
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := ch.Write(wctx, batch)
				done <- err
			}()
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if _, written := progress(); written > 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the INSERT stored no block within 30 s")
				}
			}
			if tt.cancel {
				time.Sleep(500 * time.Millisecond) // the writes wait on the server
				cancel()
			}
			var werr error
			select {
			case werr = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("the INSERT was not given up within 30 s")
			}
			if !errors.Is(werr, tt.want) || !strings.Contains(werr.Error(), "send block of") {
				t.Fatalf("the INSERT failed with %v; want %v while a block was sent", werr, tt.want)
			}
			// The server ends it once it has read what the sockets hold
			// (up to tens of MiB: a block stored a second, until then).
			// Still listed with nothing stored for 3 s, it waits for the
			// rest of a block that is not coming.
			left, moved := time.Now(), time.Now()
			var stored uint64
			for {
				running, written := progress()
				if running == 0 {
					break
				}
				if written != stored {
					stored, moved = written, time.Now()
				}
				if time.Since(moved) > 3*time.Second || time.Since(left) > 2*time.Minute {
					t.Fatalf("ClickHouse still runs the INSERT %s after cdc gave it up, %d rows stored, none in the last %s (%v)",
						time.Since(left).Round(time.Second), stored, time.Since(moved).Round(time.Second), werr)
				}
				time.Sleep(50 * time.Millisecond)
			}
			t.Logf("ClickHouse ended the INSERT %s after cdc gave it up: %v", time.Since(left).Round(time.Millisecond), werr)

			if err := admin.Conn().Exec(ctx, "DROP TABLE slow"); err != nil {
				t.Fatal(err)
			}
			// Through a sink of the default read_timeout: 500 ms, the
			// stall's, failed this 64 MiB INSERT on a loaded host.
			if _, err := admin.Write(ctx, batch); err != nil {
				t.Fatalf("the same INSERT again: %v", err)
			}
			storedOnce(t, admin, batch)
		})
	}
}

// storedOnce checks that every row of batch, all at one commit LSN, is in
// event_log, that FINAL shows each once, and that nothing else sits at
// that LSN. The raw count may exceed the batch by rows of the abandoned
// INSERT: the held bytes a thawed link lets through reach the server
// followed by the connection's end, and ClickHouse 18.16 stores the blocks
// an INSERT received when its client goes (make test saw 20 of 48 such
// rows). They are the same events at the same positions, which is what a
// ReplacingMergeTree collapses.
func storedOnce(t *testing.T, ch *sink.ClickHouse, batch *sink.Batch) {
	t.Helper()
	ctx := context.Background()
	lsn := uint64(batch.Rows[0].Pos.CommitLSN)
	var raw, ids, seqs, final uint64
	if err := ch.Conn().QueryRow(ctx, "SELECT count(), uniqExact(event_id), uniqExact(cdc_seq) FROM event_log WHERE cdc_commit_lsn = ?", lsn).Scan(&raw, &ids, &seqs); err != nil {
		t.Fatal(err)
	}
	if err := ch.Conn().QueryRow(ctx, "SELECT count() FROM event_log FINAL WHERE cdc_commit_lsn = ?", lsn).Scan(&final); err != nil {
		t.Fatal(err)
	}
	want := uint64(len(batch.Rows))
	if ids != want || seqs != want || final != want || raw < want || raw > 2*want {
		t.Fatalf("at commit LSN %d: %d raw rows, %d event ids, %d positions, %d rows under FINAL; want %d of each (raw up to %d)", lsn, raw, ids, seqs, final, want, 2*want)
	}
	var stray uint64
	q := "SELECT count() FROM event_log WHERE cdc_commit_lsn = ? AND event_id NOT IN ("
	args := []any{lsn}
	for i, r := range batch.Rows {
		if i > 0 {
			q += ","
		}
		q += "toUUID(?)"
		args = append(args, string(r.Values[0].Data))
	}
	if err := ch.Conn().QueryRow(ctx, q+")", args...).Scan(&stray); err != nil {
		t.Fatal(err)
	}
	if stray != 0 {
		t.Fatalf("%d rows at commit LSN %d are not the batch's events", stray, lsn)
	}
	if raw > want {
		t.Logf("%d raw rows for the batch's %d: the abandoned INSERT stored %d", raw, want, raw-want)
	}
}

// throughFreezer opens a sink on the test's ClickHouse through a Freezer,
// with the DSN's read_timeout, and stores one row through it first; direct
// is the DSN without the Freezer.
func throughFreezer(t *testing.T, readTimeout time.Duration) (_ *sink.ClickHouse, _ *testenv.Freezer, direct string) {
	t.Helper()
	_, direct = newSink(t)
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	fz := testenv.NewFreezer(t, u.Host)
	u.Host = fz.Addr()
	q := u.Query()
	q.Set("read_timeout", readTimeout.String())
	u.RawQuery = q.Encode()
	ch, err := sink.Open(u.String(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ch.Close() })
	if _, err := ch.Write(context.Background(), &sink.Batch{Rows: []sink.Row{row(1, "1", "")}}); err != nil {
		t.Fatalf("write before the freeze: %v", err)
	}
	return ch, fz, direct
}

// incompressible is a batch of n rows at commit LSN lsn whose contexts
// are size bytes of base64 of random bytes: neither LZ4 nor TOAST shrinks
// them, and each row's Size counts them.
func incompressible(t *testing.T, n, size int, lsn pglogrepl.LSN) *sink.Batch {
	t.Helper()
	batch := &sink.Batch{}
	for i := range n {
		raw := make([]byte, size*3/4)
		if _, err := rand.Read(raw); err != nil {
			t.Fatal(err)
		}
		r := row(uint64(i+2), "1", "")
		r.Values[4] = decoder.Value{Kind: decoder.ValueText, Data: []byte(fmt.Sprintf("%q", base64.StdEncoding.EncodeToString(raw)))}
		r.Pos.CommitLSN = lsn
		r.Size = len(r.Values[4].Data)
		batch.Rows = append(batch.Rows, r)
	}
	return batch
}
