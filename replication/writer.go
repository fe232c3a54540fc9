package replication

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"golang.org/x/sync/semaphore"

	"github.com/eventcdc/cdc/sink"
	"github.com/eventcdc/cdc/tracing"
)

// writeLoop stores the batches that come in, up to cfg.InsertsInFlight at
// once and within the sink's memory budget for INSERTs in flight, until in
// is closed or ctx ends. Stores finish in any order; they are reported on
// out in the order the batches came, so a later batch stored first waits
// for the earlier ones and the acknowledged LSN never passes a row that is
// not stored. Each store retries a failing sink forever: the slot keeps the
// WAL meanwhile, and the stream stops reading once the writer is full, so
// memory stays bounded however long the outage.
func (r *Replicator) writeLoop(ctx context.Context, in <-chan *sink.Batch, out chan<- ack, f *fence) {
	f.walsender = r.walsender // this session's: set before the writer starts
	f.clock.run(ctx)
	n := max(r.cfg.InsertsInFlight, 1)
	slots := make(chan struct{}, n) // one per batch taken and not yet reported
	// A batch of events of many MB holds them several times over while it
	// is inserted; the budget makes such batches go one at a time. The
	// writer takes the next batch only when a full ordinary batch would
	// fit, so behind a huge batch the stream stops reading instead of
	// piling up more. A batch larger than the whole budget still goes,
	// alone.
	full := int64(sink.InsertBudget(1, r.cfg.BatchMaxBytes))
	budget := int64(n) * full
	mem := semaphore.NewWeighted(budget)
	order := make(chan *pendingWrite, n) // never blocks: it holds at most n
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		r.report(ctx, order, out, func(w *pendingWrite) {
			mem.Release(w.footprint)
			<-slots
		})
	}()
	var stores sync.WaitGroup
	defer func() {
		close(order)
		<-reported
		stores.Wait()
	}()
	for {
		select {
		case slots <- struct{}{}:
		case <-reported: // a store gave up: ctx ended
			return
		case <-ctx.Done():
			return
		}
		if err := mem.Acquire(ctx, full); err != nil {
			return
		}
		b, ok := <-in
		if !ok {
			return
		}
		w := &pendingWrite{batch: b, done: make(chan struct{}), footprint: min(int64(b.Footprint()), budget)}
		if w.footprint > full {
			if err := mem.Acquire(ctx, w.footprint-full); err != nil {
				mem.Release(full)
				return
			}
		} else {
			mem.Release(full - w.footprint)
		}
		order <- w
		stores.Add(1)
		go func() {
			defer stores.Done()
			defer close(w.done)
			w.insert, w.stored = r.storeTraced(ctx, b, f)
		}()
	}
}

// pendingWrite is one batch being stored; stored is set before done closes.
type pendingWrite struct {
	batch     *sink.Batch
	footprint int64 // of the writer's memory budget
	done      chan struct{}
	stored    bool
	insert    time.Duration // of the INSERT that succeeded, without retries
}

// report sends an ack for each write in order, as soon as it and every
// write before it are stored, and then frees what it held.
func (r *Replicator) report(ctx context.Context, order <-chan *pendingWrite, out chan<- ack, free func(*pendingWrite)) {
	sum := summary{log: r.log, every: 30 * time.Second, last: time.Now()}
	defer sum.flush(r.metrics)
	for w := range order {
		<-w.done
		if !w.stored {
			return
		}
		sum.add(w.batch, r.metrics)
		select {
		case out <- ack{end: w.batch.End, bytes: w.batch.Bytes, insert: w.insert}:
		case <-ctx.Done():
			return
		}
		free(w)
	}
}

// storeTraced stores a batch inside one span, linked to the requests that
// published its events.
func (r *Replicator) storeTraced(ctx context.Context, b *sink.Batch, f *fence) (time.Duration, bool) {
	sctx, span := tracing.BatchSpan(ctx, r.cfg.Tracer, len(b.Rows), b.Bytes,
		b.Rows[0].Pos.CommitLSN.String(), b.Rows[len(b.Rows)-1].Pos.CommitLSN.String(), func() [][]byte { return tracing.Traceparents(b.Rows) })
	defer span.End()
	return r.store(sctx, b, f)
}

// fence says when a batch's INSERT may go: while the session's walsender
// holds the slot (awaitSlot), checked right before every retry, before
// every INSERT once the session is ending (its walsender may be gone, and
// a standby streaming), and before any INSERT while the process may just
// have been frozen (freezeClock): a process frozen (SIGSTOP, a paused VM)
// wakes with INSERTs due — a retry, the batch it was filling, rows still in its
// receive buffer — before its stream finds the replication connection
// dead, while a standby may have taken the slot over and stored the same
// rows; the standby waited for the INSERTs running when it started, not
// for one sent later.
type fence struct {
	walsender uint32
	clock     freezeClock
	ending    atomic.Bool // the session stores what it holds, and ends
	// gone is closed (once, by lose) when a look found the slot not held
	// by walsender: the session must end, which the stream learns from
	// it. Nil in tests that build a fence alone.
	gone     chan struct{}
	goneOnce sync.Once
}

// lose says the session's walsender no longer holds the slot.
func (f *fence) lose() {
	f.goneOnce.Do(func() {
		if f.gone != nil {
			close(f.gone)
		}
	})
}

// freezeClock tells whether the process may have been frozen lately: a
// goroutine notes the time every tick, and a gap far longer than a tick
// (or a note that is stale now) says the process did not run meanwhile.
// Ticks are wall-clock times: a paused VM's monotonic clock may not count
// the pause. A busy host can delay a tick too; that costs a look at the
// slot, and an INSERT sending meanwhile is stopped and read back
// (fence.gate). Nothing after a gap is seen reads the wall clock: "frozen
// since" is asked of the count of gaps, and "lately" of the monotonic
// time since the last. A wall clock stepped back after a gap (NTP on a
// VM's wake) would leave the gap's wall time ahead of every look's for as
// long as the step: each look would have found the process frozen since
// it began, and looked again at once, and each INSERT would have looked
// at the slot first, until the clock caught up.
type freezeClock struct {
	last atomic.Int64 // Unix nanos of the last tick
	gap  atomic.Int64 // when the last gap was seen, as monotonic time since clockStart; 0: none
	gaps atomic.Int64 // gaps seen so far
}

// clockStart is what freeze clocks count the monotonic time of a gap from.
var clockStart = time.Now()

// sinceStart is the monotonic time since clockStart, never 0.
func sinceStart() int64 { return max(int64(time.Since(clockStart)), 1) }

// slowInsert is how long an INSERT runs before cdc says so. A frozen
// ClickHouse (a paused VM, a link gone without a reset) holds an INSERT
// until read_timeout, minutes, and the log said nothing meanwhile: the
// lag grew with no line to say why. A batch of CDC_BATCH_MAX_BYTES takes
// well under a second, an event of tens of MB a few seconds.
var slowInsert = 30 * time.Second // a var: tests wait less

const (
	freezeTick   = 100 * time.Millisecond
	freezeGap    = time.Second      // a tick this late is a freeze
	freezeRecent = 30 * time.Second // INSERTs look at the slot this long after one
)

func (c *freezeClock) run(ctx context.Context) {
	c.last.Store(time.Now().UnixNano())
	go func() {
		t := time.NewTicker(freezeTick)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			now := time.Now().UnixNano()
			if time.Duration(now-c.last.Swap(now)) > freezeGap {
				c.noteGap()
			}
		}
	}()
}

// noteGap records a gap seen now.
func (c *freezeClock) noteGap() {
	c.gap.Store(sinceStart())
	c.gaps.Add(1)
}

// mark is what frozenSince is asked of: taken before a look at the slot,
// it says whether the process may have been frozen since the look began.
func (c *freezeClock) mark() int64 { return c.gaps.Load() }

// frozenSince reports whether the process may have been frozen since the
// mark was taken: a gap seen since, or a tick stale now (the ticker has
// not run yet after a wake). False for a clock that does not run.
func (c *freezeClock) frozenSince(mark int64) bool {
	last := c.last.Load()
	return last != 0 && (c.gaps.Load() != mark || time.Duration(time.Now().UnixNano()-last) > freezeGap)
}

// errFrozenBeforeSend stops an INSERT whose process may have been frozen
// between its look at the slot (or its finding it was not frozen lately)
// and the send of a block: a standby may have taken the slot over and
// stored the same rows meanwhile. The look at the slot comes first; a
// freeze after it, while the INSERT was prepared and its rows converted
// (milliseconds, tens for a large batch), let the INSERT store them again
// on waking, a raw duplicate (a CI run met one: 300 rows).
var errFrozenBeforeSend = errors.New("this process may have been frozen since it made sure the slot was its own")

// gate is the send gate (sink.WithSendGate) of an INSERT cleared by the
// look marked looked (freezeClock.mark): it refuses once the process may
// have been frozen since.
func (f *fence) gate(looked int64) func() error {
	return func() error {
		if f.clock.frozenSince(looked) {
			return errFrozenBeforeSend
		}
		return nil
	}
}

// frozenLately reports whether the process may have been frozen within
// freezeRecent, or is waking from a freeze now.
func (c *freezeClock) frozenLately() bool {
	gap := c.gap.Load()
	return time.Duration(time.Now().UnixNano()-c.last.Load()) > freezeGap ||
		gap != 0 && time.Duration(sinceStart()-gap) < freezeRecent
}

// store writes one batch and its dead letters and says how long the
// INSERT that succeeded took; false when ctx ended first. An INSERT goes
// only as the fence says.
func (r *Replicator) store(ctx context.Context, b *sink.Batch, f *fence) (time.Duration, bool) {
	start := time.Now()
	// Capped at 5 s: polling a down ClickHouse that often costs nothing,
	// and the backlog starts draining within seconds of its return.
	delay := backoff{min: 100 * time.Millisecond, max: sinkRetryMax}
	var rejected []sink.Rejected
	pending := b
	var insert time.Duration
	attempts := storeAttempts{s: r.state, failing: r.metrics.SinkFailing}
	defer attempts.done()
	for retry := false; ; retry = true {
		// The fence is passed as of now, or as of the look at the slot
		// that passed it, and each block of the INSERT goes only if the
		// process was not frozen since (gate). The look's, not the
		// time before it: a look made on waking is made again until
		// one begins after the freeze was noted, and the INSERT it
		// clears was refused at the send as if frozen since.
		looked := f.clock.mark()
		if retry || f.ending.Load() || f.clock.frozenLately() {
			var ok bool
			if looked, ok = r.clearSlot(ctx, f); !ok {
				return 0, false
			}
		}
		var err error
		attempt := time.Now()
		rows, bytes := len(pending.Rows), pending.Bytes
		slow := time.AfterFunc(slowInsert, func() {
			r.log.Warn("an INSERT into event_log has run this long and goes on: ClickHouse is slow, or stopped answering (it fails after the DSN's read_timeout, 5 min by default, without progress, and is retried unless cdc is shutting down)",
				zap.Duration("running", slowInsert), zap.Int("rows", rows), zap.Int("bytes", bytes))
		})
		rejected, err = r.sink.Write(sink.WithReadBack(sink.WithSendGate(ctx, f.gate(looked)), r.readBack), pending)
		slow.Stop()
		if err == nil {
			insert = time.Since(attempt)
			break
		}
		if ctx.Err() != nil {
			return 0, false
		}
		if errors.Is(err, errFrozenBeforeSend) {
			// Not ClickHouse's failure: nothing to count or wait out.
			// What the INSERT sent before it stopped is read below, and
			// the slot looked at before the rest goes. Said as what the
			// clock tells: a tick came late, as on waking from a freeze
			// and on a busy host too; the error says which block the
			// INSERT stopped at, and blocks sent before it may be stored.
			r.log.Info("this process may have been frozen since it made sure the slot was its own (a tick of its clock came late: SIGSTOP, a paused VM, or a busy host); the INSERT stopped where it stood, and what it sent is read back and the slot looked at again before the rest goes",
				zap.Error(err), zap.Int("rows", len(pending.Rows)), zap.Stringer("first", pending.Rows[0].Pos))
		} else if !sleep(ctx, r.failed(ctx, err, pending, &attempts, &delay)) {
			return 0, false
		}
		// A failed INSERT may still have been stored (the error can come
		// after the server committed the rows): ask the sink and retry only
		// what it lacks, so a retry writes no raw duplicate either. Until
		// the sink can say, nothing is written: a read that fails while
		// an INSERT would go through (ClickHouse back from a restart
		// between the two, a read of event_log timing out) would
		// otherwise store again every row the failed INSERT stored.
		for {
			rest, err := r.unstored(ctx, pending)
			if err == nil {
				pending = rest
				break
			}
			if ctx.Err() != nil {
				return 0, false
			}
			wait := r.failed(ctx, fmt.Errorf("read what its failed INSERT stored: %w", err), pending, &attempts, &delay)
			// Each attempt looks at the slot first, as each INSERT
			// retried does: a session whose walsender let go of it
			// must end, whether ClickHouse answers or not.
			if !sleep(ctx, wait) || !r.awaitSlot(ctx, f) {
				return 0, false
			}
		}
		if len(pending.Rows) == 0 {
			// Stored after all: by the failed INSERT, or by a standby
			// that took the slot over meanwhile, whose rows these are
			// not to count or acknowledge.
			if !r.awaitSlot(ctx, f) {
				return 0, false
			}
			break
		}
	}
	if len(rejected) > 0 && !r.setAside(ctx, rejected, &attempts) {
		return 0, false
	}
	dur := time.Since(start)
	m := r.metrics
	m.EventsWritten.Add(float64(len(b.Rows) - len(rejected)))
	m.BatchesWritten.Inc()
	m.FlushDuration.Observe(dur.Seconds())
	m.BatchRows.Observe(float64(len(b.Rows)))
	m.BatchBytes.Observe(float64(b.Bytes))
	m.LastFlush.SetToCurrentTime()
	r.log.Debug("batch stored", zap.Int("rows", len(b.Rows)), zap.Int("bytes", b.Bytes),
		zap.Stringer("first", b.Rows[0].Pos), zap.Stringer("last", b.Rows[len(b.Rows)-1].Pos),
		zap.Stringer("durable_to", b.End), zap.Duration("duration", dur), zap.Int("dead_letters", len(rejected)))
	return insert, true
}

// failed counts, records and logs a failed attempt to store pending and
// says how long to wait before the next.
func (r *Replicator) failed(ctx context.Context, err error, pending *sink.Batch, attempts *storeAttempts, delay *backoff) time.Duration {
	r.metrics.SinkErrors.Inc()
	attempts.fail(fmt.Errorf("store a batch of %d rows: %w", len(pending.Rows), err))
	trace.SpanFromContext(ctx).RecordError(err)
	wait := delay.next()
	r.log.Warn("storing batch failed; will retry", zap.Error(err), zap.Int("rows", len(pending.Rows)),
		zap.Stringer("first", pending.Rows[0].Pos), zap.Duration("retry_in", wait))
	return wait
}

// awaitSlot returns once the walsender of pid holds the slot, or nobody
// can tell (PostgreSQL unreachable on an ordinary connection, which must
// not stop the pipeline: a retry is what it did before it looked); false
// when ctx ends first. It waits only when another walsender holds the
// slot, or none: then this session's stream is over, and whoever streams
// next replays the batch. It tells the stream so (fence.lose), which ends
// the session and with it ctx: the stream may not learn it otherwise. A
// walsender cancelled or failing with an ERROR lets go of the slot and
// lives on, waiting for commands and ignoring the statuses cdc sends, and
// a stream held up by full writers reads nothing that would tell it.
func (r *Replicator) awaitSlot(ctx context.Context, f *fence) bool {
	_, ok := r.clearSlot(ctx, f)
	return ok
}

// clearSlot is awaitSlot, and says the freeze clock's mark taken as the
// look that let it return began: an INSERT it clears goes only if the
// process was not frozen since (fence.gate).
func (r *Replicator) clearSlot(ctx context.Context, f *fence) (looked int64, ok bool) {
	pid := f.walsender
	if pid == 0 {
		return f.clock.mark(), true // no session streamed (a test's writer)
	}
	bound := lookupTimeout
	if f.ending.Load() {
		bound = endingLookTimeout(r.cfg.ShutdownTimeout)
	}
	said := false
	for {
		began := f.clock.mark()
		holder, known := r.activePID(ctx, bound)
		if !known {
			if ctx.Err() == nil && f.clock.frozenSince(began) {
				// The look's deadline ran out while this process did
				// not run: that says nothing of PostgreSQL, and a
				// process waking from a freeze is the one whose slot a
				// standby may hold. Look again.
				continue
			}
			return began, ctx.Err() == nil
		}
		if holder == pid {
			if ctx.Err() == nil && f.clock.frozenSince(began) {
				// The answer may have waited out a freeze of this
				// process, read on waking: the walsender it names may
				// have been ended meanwhile and a standby may hold the
				// slot now (a soak met it: 55 rows a standby had stored
				// went again). Look again.
				continue
			}
			return began, true
		}
		if !said {
			said = true
			r.log.Info("this session's walsender no longer holds the slot; the session ends, and the next replays its batches",
				zap.Uint32("walsender", pid), zap.Uint32("active_pid", holder))
			f.lose()
		}
		if !sleep(ctx, time.Second) {
			return 0, false
		}
	}
}

// endingLookTimeout bounds a look at the slot's holder, connecting
// included, by an ending session: 3 s, and at most a quarter of the
// shutdown's budget. A PostgreSQL that does not answer in it is one
// nobody can tell the holder of: the INSERT goes, as it did before
// anyone looked, rather than a shutdown's last INSERTs waiting out the
// budget behind a frozen link. Other looks have lookupTimeout: a retry
// may wait, and a DSN of several hosts tries each for connect_timeout.
func endingLookTimeout(shutdown time.Duration) time.Duration {
	if shutdown <= 0 {
		return 3 * time.Second
	}
	return min(3*time.Second, shutdown/4)
}

// activePID reads the slot's active_pid (0: no walsender holds it) on a
// connection of its own, within bound; known is false when it cannot be
// read.
func (r *Replicator) activePID(ctx context.Context, bound time.Duration) (pid uint32, known bool) {
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	conn, closeConn, err := r.connect(ctx)
	if err != nil {
		r.log.Debug("could not look at who holds the slot before an INSERT", zap.Error(err))
		return 0, false
	}
	defer closeConn()
	rows, err := queryRows(ctx, conn, "SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = '"+r.cfg.Slot+"'")
	if err != nil || len(rows) != 1 || len(rows[0]) != 1 {
		r.log.Debug("could not look at who holds the slot before an INSERT", zap.Error(err))
		return 0, false
	}
	n, err := strconv.ParseUint(rows[0][0], 10, 32)
	if err != nil {
		return 0, false
	}
	return uint32(n), true
}

// unstored returns b without the rows the sink already holds, and an
// error when the sink cannot be read. When the sink's positions cannot be
// used (another WAL history's may match, or more are stored than a set
// may hold) it asks by event instead (unstoredByEvent).
func (r *Replicator) unstored(ctx context.Context, b *sink.Batch) (*sink.Batch, error) {
	if r.noSkip.Load() {
		return r.unstoredByEvent(ctx, b) // positions of another WAL history may match (checkHistory)
	}
	// A set per span, not one merged: each keeps the events of the last
	// positions it read, where the batch's rows lie, and a merge of such
	// sets could not (sink.Positions.AddAll). Each is let go before the
	// next is read: one may hold 16 MiB of events, and rows of several
	// large streamed transactions, placed far apart, make as many spans.
	spans := lsnSpans(b)
	// The rows in LSN order (stable: a transaction's rows stay in
	// order), so that each span's rows are checked while its set lives.
	order := make([]int, len(b.Rows))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(i, j int) int {
		return cmp.Compare(b.Rows[i].Pos.CommitLSN, b.Rows[j].Pos.CommitLSN)
	})
	stored := make([]bool, len(b.Rows))
	n, k := 0, 0
	for _, span := range spans {
		w, err := r.sink.Written(ctx, span[0], span[1])
		if tooMany := (*sink.TooManyPositions)(nil); errors.As(err, &tooMany) {
			return r.unstoredByEvent(ctx, b)
		}
		if err != nil {
			return nil, err
		}
		for ; k < len(order) && b.Rows[order[k]].Pos.CommitLSN < span[1]; k++ {
			row := &b.Rows[order[k]]
			// By position and event (sink.Positions.Match).
			if w.Has(row.Pos) && w.Match(row.Pos, row.Event()) {
				stored[order[k]] = true
				n++
			}
		}
	}
	if n == 0 {
		return b, nil
	}
	rows := make([]sink.Row, 0, len(b.Rows)-n)
	for i, row := range b.Rows {
		if !stored[i] {
			rows = append(rows, row)
		}
	}
	return r.rest(b, rows), nil
}

// eventReader is the read-back by event a sink may offer
// (sink.ClickHouse.Unwritten): it tells the rows stored by event id and
// position together, where positions alone cannot.
type eventReader interface {
	Unwritten(ctx context.Context, rows []sink.Row) ([]sink.Row, error)
}

// unstoredByEvent is unstored for when positions alone cannot tell: a
// row of another WAL history may hold a position of b's, not its event.
// It reads the sink's event_id column, and only for a failed or broken
// INSERT in those rare states (after a failover to a standby that
// lagged, or a table restored from elsewhere). Without a sink that can
// tell (eventReader), b unchanged: the rows are stored again, which
// FINAL shows once.
func (r *Replicator) unstoredByEvent(ctx context.Context, b *sink.Batch) (*sink.Batch, error) {
	u, ok := r.sink.(eventReader)
	if !ok {
		return b, nil
	}
	rows, err := u.Unwritten(ctx, b.Rows)
	if err != nil {
		return nil, err
	}
	return r.rest(b, rows), nil
}

// rest is b left with rows, the ones of its rows the sink lacks: b itself
// when it lacks them all.
func (r *Replicator) rest(b *sink.Batch, rows []sink.Row) *sink.Batch {
	if len(rows) == len(b.Rows) {
		return b
	}
	rest := b.Part(rows)
	r.log.Info("rows of a failed insert are stored after all (by that INSERT, or by an instance that took the slot over); retrying only the rest", zap.Int("stored", len(b.Rows)-len(rows)), zap.Int("rest", len(rows)))
	return rest
}

// spanGap is the WAL distance between two of a batch's LSNs past which
// unstored reads them apart.
const spanGap = 16 << 20

// readBack is the sink's read-back (sink.WithReadBack): rows without
// those event_log holds, read as for a failed INSERT retried (unstored).
func (r *Replicator) readBack(ctx context.Context, rows []sink.Row) ([]sink.Row, error) {
	if len(rows) == 0 {
		return rows, nil
	}
	rest, err := r.unstored(ctx, &sink.Batch{Rows: rows})
	if err != nil {
		return nil, err
	}
	return rest.Rows, nil
}

// lsnSpans returns [from, to) ranges covering every commit LSN of b's
// rows. Rows of a transaction streamed before its commit are placed by its
// first row's LSN, which may lie hours of WAL before the batch's other
// rows; a single range would read every position stored in between. So
// the ranges split wherever two LSNs lie more than spanGap apart: what a
// range reads that is not the batch's is then bounded by that gap.
func lsnSpans(b *sink.Batch) [][2]pglogrepl.LSN {
	lsns := make([]pglogrepl.LSN, 0, 8)
	for i := range b.Rows {
		lsns = append(lsns, b.Rows[i].Pos.CommitLSN)
	}
	slices.Sort(lsns)
	lsns = slices.Compact(lsns)
	var spans [][2]pglogrepl.LSN
	from := lsns[0]
	for i := 1; i <= len(lsns); i++ {
		if i == len(lsns) || lsns[i]-lsns[i-1] > spanGap {
			spans = append(spans, [2]pglogrepl.LSN{from, lsns[i-1] + 1})
			if i < len(lsns) {
				from = lsns[i]
			}
		}
	}
	return spans
}

// setAside stores refused rows as dead letters, retrying until it can: a
// refused row is never dropped, so the batch is not acknowledged before
// its dead letters are safe. A failed attempt is a failed store of the
// batch: it counts in cdc_sink_errors_total and fails readiness.
func (r *Replicator) setAside(ctx context.Context, rejected []sink.Rejected, attempts *storeAttempts) bool {
	for _, rj := range rejected {
		r.log.Warn("row refused by the sink; set aside as a dead letter",
			zap.Stringer("position", rj.Row.Pos), zap.Error(rj.Err))
	}
	delay := backoff{min: 100 * time.Millisecond, max: 30 * time.Second}
	size := 0
	for _, rj := range rejected {
		size += rj.Row.Size
	}
	timeout := putTimeout(size)
	for {
		if r.dead == nil {
			r.log.Error("no dead-letter store configured; refused rows are lost", zap.Int("rows", len(rejected)))
			return true
		}
		pctx, cancel := context.WithTimeout(ctx, timeout)
		err := r.dead.Put(pctx, rejected)
		cancel()
		if err != nil && ctx.Err() == nil && errors.Is(pctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("no answer from PostgreSQL in %s (waiting on a lock on cdc_dead_letter, or a commit waiting on a synchronous standby?): %w", timeout, err)
		}
		if err == nil {
			r.metrics.DeadLetters.Add(float64(len(rejected)))
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		r.metrics.SinkErrors.Inc()
		attempts.fail(fmt.Errorf("set aside %d refused rows in cdc_dead_letter: %w", len(rejected), err))
		wait := delay.next()
		r.log.Error("storing dead letters failed; will retry", zap.Error(err), zap.Duration("retry_in", wait))
		if !sleep(ctx, wait) {
			return false
		}
	}
}

// sinkRetryMax is the longest wait between two attempts to reach the
// sink: a ClickHouse back from an outage is used again within it.
var sinkRetryMax = 5 * time.Second

// deadLetterTimeout bounds one attempt to set refused rows aside, plus a
// second per MiB of their values (putTimeout). Without it a Put waiting on
// a lock (an ALTER of cdc_dead_letter queued behind a long reader) would
// hold the pipeline for as long as the lock is held, with nothing failed
// to count: readiness and the sink alerts would stay green. It is far
// above what a Put takes, a few 4 MiB batches; the per-MiB part lets
// refused events of hundreds of MB through a link of 1 MiB/s.
var deadLetterTimeout = time.Minute

func putTimeout(size int) time.Duration {
	return deadLetterTimeout + time.Duration(size>>20)*time.Second
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// summary logs throughput at info level now and then; per-batch lines are
// debug-level.
type summary struct {
	log                  *zap.Logger
	every                time.Duration
	last                 time.Time
	rows, bytes, batches int
}

func (s *summary) add(b *sink.Batch, m interface{ LagSecondsValue() float64 }) {
	s.rows += len(b.Rows)
	s.bytes += b.Bytes
	s.batches++
	if time.Since(s.last) >= s.every {
		s.flush(m)
	}
}

func (s *summary) flush(m interface{ LagSecondsValue() float64 }) {
	if s.batches == 0 {
		return
	}
	s.log.Info("progress", zap.Int("rows", s.rows), zap.Int("bytes", s.bytes), zap.Int("batches", s.batches),
		zap.Duration("over", time.Since(s.last).Round(time.Millisecond)), zap.Float64("lag_seconds", m.LagSecondsValue()))
	s.rows, s.bytes, s.batches, s.last = 0, 0, 0, time.Now()
}
