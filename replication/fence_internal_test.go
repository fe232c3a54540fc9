package replication

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/metrics"
	"github.com/eventcdc/cdc/sink"
)

// failOnceSink fails its first Write and stores the rest; it counts them.
// Written says it holds the positions in stored, whoever wrote them.
type failOnceSink struct {
	mu     sync.Mutex
	writes int
	stored []sink.Position // what Written says it holds
}

func (f *failOnceSink) Write(context.Context, *sink.Batch) ([]sink.Rejected, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	if f.writes == 1 {
		return nil, errors.New("clickhouse did not answer")
	}
	return nil, nil
}

func (f *failOnceSink) Written(context.Context, pglogrepl.LSN, pglogrepl.LSN) (*sink.Positions, error) {
	stored := &sink.Positions{}
	for _, pos := range f.stored {
		stored.Add(pos)
	}
	return stored, nil
}

func (f *failOnceSink) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writes
}

// fenceTest is a fence test's set-up: a context of a minute, ended with
// the test, and a slot streamed by a walsender of pid holder
// (streamedSlot).
func fenceTest(t *testing.T) (ctx context.Context, dsn string, holder uint32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	dsn, holder = streamedSlot(ctx, t)
	return ctx, dsn, holder
}

// streamedSlot gives a database with slot "fence" (publication "p")
// streamed by a walsender of pid holder.
func streamedSlot(ctx context.Context, t *testing.T) (dsn string, holder uint32) {
	t.Helper()
	dsn = testenv.Get(t).NewPostgres(t)
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, q := range []string{`CREATE TABLE t (v int)`, `CREATE PUBLICATION p FOR TABLE t`, `SELECT pg_create_logical_replication_slot('fence', 'pgoutput')`} {
		if _, err := queryRows(ctx, conn, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return dsn, testenv.StreamSlot(ctx, t, dsn, "fence", "p").PID()
}

// A failed batch is retried only while the session's walsender holds the
// slot. One whose walsender no longer does — a process frozen while its
// batch failed, woken after another took the slot over and stored the same
// rows — waits instead, until its session ends; the next replays them.
func TestStore_RetriesOnlyWhileItsWalsenderHoldsTheSlot(t *testing.T) {
	ctx, dsn, holder := fenceTest(t)
	other := holder + 1
	defer SetSinkRetryMax(20 * time.Millisecond)()
	batch := &sink.Batch{Rows: []sink.Row{{Pos: sink.Position{CommitLSN: 0x100, Seq: 1}}}}
	newReplicator := func(s Sink, dsn string) *Replicator {
		return New(Config{DSN: dsn, Slot: "fence"}, s, nil, zap.NewNop(), metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() }))
	}
	running := func(walsender uint32) *fence {
		f := &fence{walsender: walsender}
		f.clock.run(ctx)
		return f
	}
	frozen := func(walsender uint32) *fence { // woken from a freeze just now
		f := running(walsender)
		f.clock.noteGap()
		return f
	}
	ending := func(walsender uint32) *fence {
		f := running(walsender)
		f.ending.Store(true)
		return f
	}
	if pid, known := newReplicator(&failOnceSink{}, dsn).activePID(ctx, lookupTimeout); !known || pid != holder {
		t.Fatalf("activePID = %d, %v; want the walsender %d, true", pid, known, holder)
	}

	for _, tc := range []struct {
		name       string
		dsn        string
		fence      *fence
		wantStored bool
		wantWrites int
	}{
		// Another walsender holds the slot: the failed batch is not sent
		// again before its context ends.
		{"retry, slot held by another walsender", dsn, running(other), false, 1},
		// A process that may just have woken from a freeze looks before
		// its first INSERT too.
		{"first INSERT after a freeze, slot held by another walsender", dsn, frozen(other), false, 0},
		// So does every INSERT of a session that is ending (a resume, a
		// shutdown): its walsender may be gone, a standby streaming.
		{"INSERT of an ending session, slot held by another walsender", dsn, ending(other), false, 0},
		{"INSERT of an ending session, slot held by the session's walsender", dsn, ending(holder), true, 2},
		{"retry, slot held by the session's walsender", dsn, running(holder), true, 2},
		{"first INSERT after a freeze, slot held by the session's walsender", dsn, frozen(holder), true, 2},
		// Nobody can tell who holds it: the retry goes, as it did before
		// anyone looked; a PostgreSQL that refuses ordinary connections
		// must not stop the pipeline.
		{"retry, holder unknown", "postgres://nobody@127.0.0.1:1/none?connect_timeout=1", running(other), true, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &failOnceSink{}
			sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
			defer scancel()
			_, stored := newReplicator(s, tc.dsn).store(sctx, batch, tc.fence)
			if stored != tc.wantStored || s.count() != tc.wantWrites {
				t.Fatalf("stored %v after %d writes, want %v after %d", stored, s.count(), tc.wantStored, tc.wantWrites)
			}
		})
	}
}

// A failed batch whose rows are all found stored before its retry was
// stored by its own INSERT, or by a standby that took the slot over while
// this process was frozen: it counts as this session's only while the
// session's walsender holds the slot, and otherwise waits, as a retry
// does, until the session ends.
func TestStore_RowsFoundStoredCountOnlyWhileItsWalsenderHoldsTheSlot(t *testing.T) {
	ctx, dsn, holder := fenceTest(t)
	defer SetSinkRetryMax(20 * time.Millisecond)()
	pos := sink.Position{CommitLSN: 0x100, Seq: 1}
	for _, tc := range []struct {
		name       string
		walsender  uint32
		wantStored bool
		wantEvents float64
	}{
		{"slot held by another walsender", holder + 1, false, 0},
		{"slot held by the session's walsender", holder, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &failOnceSink{stored: []sink.Position{pos}}
			m := metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() })
			r := New(Config{DSN: dsn, Slot: "fence"}, s, nil, zap.NewNop(), m)
			f := &fence{walsender: tc.walsender}
			f.clock.run(ctx)
			sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
			defer scancel()
			_, stored := r.store(sctx, &sink.Batch{Rows: []sink.Row{{Pos: pos}}}, f)
			if events := testutil.ToFloat64(m.EventsWritten); stored != tc.wantStored || s.count() != 1 || events != tc.wantEvents {
				t.Fatalf("stored %v after %d writes, %v events counted; want %v after 1, %v counted", stored, s.count(), events, tc.wantStored, tc.wantEvents)
			}
		})
	}
}

// freezingSink is frozen (its fence's clock told of a gap, as on waking)
// in its first Write, after the store looked at the slot and before the
// INSERT's send, which asks the gate (sink.SendGate) as the ClickHouse
// sink does before each block; it counts the INSERTs that went.
type freezingSink struct {
	failOnceSink
	f    *fence
	sent int
}

func (s *freezingSink) Write(ctx context.Context, _ *sink.Batch) ([]sink.Rejected, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.writes++; s.writes == 1 {
		s.f.clock.noteGap()
	}
	if err := sink.SendGate(ctx); err != nil {
		return nil, err
	}
	s.sent++
	return nil, nil
}

// gateStoppedMsg is the line store logs when the send gate stops an
// INSERT.
const gateStoppedMsg = "this process may have been frozen since it made sure the slot was its own (a tick of its clock came late: SIGSTOP, a paused VM, or a busy host); the INSERT stopped where it stood, and what it sent is read back and the slot looked at again before the rest goes"

// A process frozen between its look at the slot and the send of an
// INSERT it had prepared (a CI run met one: a standby had stored the 300
// rows meanwhile, and they went again) sends nothing until it has looked
// again: with another walsender on the slot, nothing goes and the session
// ends; with its own, the INSERT goes once. The gate's refusal is not
// ClickHouse's failure: no sink error is counted. It is logged as what
// the clock tells, with the block the INSERT stopped at: it said the
// process "was frozen while it prepared an INSERT" and would check the
// slot "before sending it", though a late tick on a busy host stops an
// INSERT too, and blocks it sent before may be stored.
func TestStore_AFreezeBeforeTheSendLooksAtTheSlotAgain(t *testing.T) {
	ctx, dsn, holder := fenceTest(t)
	defer SetSinkRetryMax(20 * time.Millisecond)()
	for _, tc := range []struct {
		name       string
		walsender  uint32
		wantStored bool
		wantSent   int
	}{
		{"slot held by another walsender", holder + 1, false, 0},
		{"slot held by the session's walsender", holder, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fence{walsender: tc.walsender, gone: make(chan struct{})}
			f.clock.run(ctx)
			s := &freezingSink{f: f}
			m := metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() })
			core, logs := observer.New(zapcore.InfoLevel)
			r := New(Config{DSN: dsn, Slot: "fence"}, s, nil, zap.New(core), m)
			sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
			defer scancel()
			_, stored := r.store(sctx, &sink.Batch{Rows: []sink.Row{{Pos: sink.Position{CommitLSN: 0x100, Seq: 1}}}}, f)
			if stored != tc.wantStored || s.sent != tc.wantSent {
				t.Fatalf("stored %v, %d INSERTs sent; want %v, %d", stored, s.sent, tc.wantStored, tc.wantSent)
			}
			if n := testutil.ToFloat64(m.SinkErrors); n != 0 {
				t.Fatalf("cdc_sink_errors_total = %v, want 0", n)
			}
			// Said as what the clock can tell: a tick came late, which
			// a busy host does too, and the INSERT may have sent blocks.
			stopped := logs.FilterMessage(gateStoppedMsg).All()
			if len(stopped) != 1 || stopped[0].ContextMap()["error"] != errFrozenBeforeSend.Error() {
				t.Fatalf("logged %v; want one %q with the gate's error", logs.All(), gateStoppedMsg)
			}
			select {
			case <-f.gone:
				if tc.wantStored {
					t.Fatal("the session was told its slot is gone")
				}
			default:
				if !tc.wantStored {
					t.Fatal("the session was not told its slot is gone")
				}
			}
		})
	}
}

// gateSink asks the send gate (sink.SendGate) before its INSERT goes, as
// the ClickHouse sink does before each block, and counts the INSERTs the
// gate refused and those it let go.
type gateSink struct {
	failOnceSink
	refused, sent int
}

func (s *gateSink) Write(ctx context.Context, _ *sink.Batch) ([]sink.Rejected, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := sink.SendGate(ctx); err != nil {
		s.refused++
		return nil, err
	}
	s.sent++
	return nil, nil
}

// A store begun as the process wakes from a freeze looks at the slot
// first, and again until a look begun after the freeze was noted finds
// its walsender holding it (awaitSlot). The INSERT that look cleared
// goes: the gate asks whether the process was frozen since that look
// began. It asked since the store began, before the freeze was noted:
// each store begun on waking had its INSERT refused once after a clean
// look, then waited for cdc's running INSERTs, read event_log back and
// looked at the slot once more, and logged that the process was frozen
// while it prepared the INSERT, which it was not.
func TestStore_AnInsertClearedByALookAfterTheFreezeGoes(t *testing.T) {
	ctx, dsn, holder := fenceTest(t)
	for _, tc := range []struct {
		name  string
		noted time.Duration // after the store began, the freeze is noted
	}{
		{"noted at once", 0},
		{"noted during the look", 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fence{walsender: holder, gone: make(chan struct{})}
			// Woken: the last tick is seconds old; the ticker notes the
			// gap a moment later, and ticks on.
			f.clock.last.Store(time.Now().Add(-5 * time.Second).UnixNano())
			wake := time.AfterFunc(tc.noted, func() {
				f.clock.noteGap()
				f.clock.run(ctx)
			})
			defer wake.Stop()
			s := &gateSink{}
			r := New(Config{DSN: dsn, Slot: "fence"}, s, nil, zap.NewNop(),
				metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() }))
			sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
			defer scancel()
			_, stored := r.store(sctx, &sink.Batch{Rows: []sink.Row{{Pos: sink.Position{CommitLSN: 0x100, Seq: 1}}}}, f)
			s.mu.Lock()
			defer s.mu.Unlock()
			if !stored || s.refused != 0 || s.sent != 1 {
				t.Fatalf("stored %v, %d INSERTs refused at the send, %d sent; want true, 0, 1", stored, s.refused, s.sent)
			}
		})
	}
}

// An ending session's look at a PostgreSQL that takes the connection and
// never answers gives up within a quarter of the shutdown's budget, and
// the INSERT goes (a retry too): the last batches are stored within the
// budget, not left behind a frozen link.
func TestStore_EndingSessionLooksWithinTheShutdownBudget(t *testing.T) {
	silent := testenv.SilentAddr(t)
	defer SetSinkRetryMax(20 * time.Millisecond)()
	s := &failOnceSink{}
	r := New(Config{DSN: "postgres://cdc@" + silent + "/db?sslmode=disable", Slot: "fence", ShutdownTimeout: time.Second},
		s, nil, zap.NewNop(), metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() }))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second) // the budget, and some
	defer cancel()
	f := &fence{walsender: 4242}
	f.clock.run(ctx)
	f.ending.Store(true)
	began := time.Now()
	_, stored := r.store(ctx, &sink.Batch{Rows: []sink.Row{{Pos: sink.Position{CommitLSN: 0x100, Seq: 1}}}}, f)
	if took := time.Since(began); !stored || s.count() != 2 || took > 1500*time.Millisecond {
		t.Fatalf("stored %v after %d writes in %s; want stored after 2 (a failure, a retry), two looks of 250 ms each", stored, s.count(), took)
	}
}

// tickingClock is a freeze clock that has ticked a few times, stopped
// when the test ends.
func tickingClock(t *testing.T) *freezeClock {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var c freezeClock
	c.run(ctx)
	time.Sleep(3 * freezeTick)
	return &c
}

// The freeze clock says "frozen lately" when its ticks stopped — now, or
// within freezeRecent — and not while they come on time, nor after a
// wall clock stepped back.
func TestFreezeClock(t *testing.T) {
	c := tickingClock(t)
	if c.frozenLately() {
		t.Fatal("frozen lately while ticking")
	}
	c.last.Store(time.Now().Add(-2 * freezeGap).UnixNano()) // no tick for 2 s: as on waking
	if !c.frozenLately() {
		t.Fatal("not frozen lately with the last tick 2 s old")
	}
	time.Sleep(3 * freezeTick) // the next tick sees the gap
	if !c.frozenLately() {
		t.Fatal("not frozen lately right after a gap was seen")
	}
	c.gap.Store(sinceStart() - int64(freezeRecent+time.Second))
	if c.frozenLately() {
		t.Fatal("frozen lately with the last gap older than freezeRecent")
	}
	// The wall clock stepped back an hour since the last tick: the gap's
	// age is the monotonic clock's, and a tick ahead of now is not stale.
	c.last.Store(time.Now().Add(time.Hour).UnixNano())
	if c.frozenLately() {
		t.Fatal("frozen lately with the wall clock stepped back after an old gap")
	}
}

// "Frozen since a look began" holds for a gap seen after the look's mark
// and for a stale tick, and not for a gap seen before it — even when the
// wall clock stepped back after that gap, which left its time ahead of
// now: a look would otherwise be retried at once, without end, until the
// clock caught up (an hour for an hour's step).
func TestFreezeClock_FrozenSince(t *testing.T) {
	c := tickingClock(t)
	c.noteGap()
	c.last.Store(time.Now().Add(time.Hour).UnixNano()) // the clock stepped back an hour since
	m := c.mark()
	time.Sleep(3 * freezeTick)
	if c.frozenSince(m) {
		t.Fatal("frozen since a mark taken after the last gap, with the clock stepped back since it")
	}
	c.last.Store(time.Now().Add(-2 * freezeGap).UnixNano()) // no tick for 2 s: as on waking
	if !c.frozenSince(m) {
		t.Fatal("not frozen since the mark with the last tick 2 s old")
	}
	time.Sleep(3 * freezeTick) // the next tick sees the gap
	if !c.frozenSince(m) {
		t.Fatal("not frozen since the mark with a gap seen after it")
	}
	if m2 := c.mark(); c.frozenSince(m2) {
		t.Fatal("frozen since a mark taken after the last gap")
	}
}

// throughProxy is dsn with its server's address replaced by a loopback
// proxy to it, until the test ends; wait, given a connection's number (1
// for the first), says how long to hold it first, or a negative time to
// hold it unanswered for good.
func throughProxy(t *testing.T, dsn string, wait func(n int) time.Duration) string {
	t.Helper()
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	target := net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	keep := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		held = append(held, c)
	}
	go func() {
		for n := 1; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			keep(c)
			d := wait(n)
			if d < 0 {
				continue
			}
			time.Sleep(d)
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			keep(up)
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	return strings.Replace(dsn, target, ln.Addr().String(), 1)
}

// A look at the slot's holder whose deadline ran out while the process was
// frozen says nothing of PostgreSQL: the process looks again rather than
// send the INSERT, since a process waking from a freeze is the one whose
// slot a standby may have taken over and whose rows it may have stored.
// (A soak met it: a retry's look begun just before a SIGSTOP failed on
// waking, and the batch a standby had stored went again.)
func TestStore_LookCutShortByAFreezeIsMadeAgain(t *testing.T) {
	ctx, dsn, holder := fenceTest(t)
	defer SetSinkRetryMax(20 * time.Millisecond)()
	for _, tc := range []struct {
		name       string
		freeze     bool // a freeze seen during the first look
		wantStored bool
		wantWrites int
	}{
		// The first look fails on its own: PostgreSQL silent, the
		// INSERT goes as before anyone looked.
		{"first look silent, no freeze", false, true, 1},
		// The first look failed because the process was frozen: the
		// second finds another walsender holding the slot, and the
		// INSERT waits until the session's context ends.
		{"first look cut short by a freeze", true, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The first look's connection is taken and never answered.
			proxied := throughProxy(t, dsn, func(n int) time.Duration {
				if n == 1 {
					return -1
				}
				return 0
			})
			s := &failOnceSink{writes: 1} // every Write succeeds
			r := New(Config{DSN: proxied, Slot: "fence", ShutdownTimeout: 2 * time.Second},
				s, nil, zap.NewNop(), metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() }))
			sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
			defer scancel()
			f := &fence{walsender: holder + 1} // the slot is another walsender's
			f.clock.run(sctx)
			f.ending.Store(true) // every INSERT looks; each look is bounded to 500 ms
			if tc.freeze {
				// What the ticker notes when the process wakes within the look.
				time.AfterFunc(200*time.Millisecond, func() { f.clock.noteGap() })
			}
			_, stored := r.store(sctx, &sink.Batch{Rows: []sink.Row{{Pos: sink.Position{CommitLSN: 0x100, Seq: 1}}}}, f)
			if stored != tc.wantStored || s.count()-1 != tc.wantWrites {
				t.Fatalf("stored %v after %d writes, want %v after %d", stored, s.count()-1, tc.wantStored, tc.wantWrites)
			}
		})
	}
}

// A look whose answer came across a freeze of this process may name a
// walsender ended meanwhile, whose slot a standby holds now: the process
// looks again before its INSERT goes. (A soak met it: a retry's look
// answered just before a SIGSTOP, the walsender was terminated and a
// standby stored the rows, and on waking the INSERT stored them again.)
func TestAwaitSlot_AnAnswerAcrossAFreezeIsAskedAgain(t *testing.T) {
	ctx, dsn, holder := fenceTest(t)
	for _, tc := range []struct {
		name      string
		freeze    bool // a freeze seen while the first look waits
		wantLooks int32
	}{
		{"no freeze", false, 1},
		{"a freeze during the look", true, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The first look's connection waits 400 ms at the door.
			var looks atomic.Int32
			proxied := throughProxy(t, dsn, func(n int) time.Duration {
				looks.Add(1)
				if n == 1 {
					return 400 * time.Millisecond
				}
				return 0
			})
			r := New(Config{DSN: proxied, Slot: "fence"}, &failOnceSink{writes: 1}, nil, zap.NewNop(),
				metrics.New(prometheus.NewRegistry(), func() int64 { return time.Now().UnixNano() }))
			sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
			defer scancel()
			f := &fence{walsender: holder} // the slot is this session's
			f.clock.run(sctx)
			if tc.freeze {
				// What the ticker notes when the process wakes within the look.
				time.AfterFunc(200*time.Millisecond, func() { f.clock.noteGap() })
			}
			if !r.awaitSlot(sctx, f) {
				t.Fatal("awaitSlot = false while this session's walsender holds the slot")
			}
			if got := looks.Load(); got != tc.wantLooks {
				t.Fatalf("%d looks at the slot's holder, want %d", got, tc.wantLooks)
			}
		})
	}
}
