package replication

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// State is what other goroutines may read of a running replicator.
type State struct {
	streaming atomic.Bool
	lastMsg   atomic.Int64 // Unix nanos of the last message from the server
	// failing counts the writers retrying a batch they could not store,
	// its INSERT or its dead letters; lastErr is the latest such error.
	failing atomic.Int32
	lastErr atomic.Pointer[error]
	// pending is the commit time (Unix nanos) of the oldest event
	// received and not yet stored, 0 when none.
	pending atomic.Int64
	// received is the commit time (Unix nanos) of the last transaction
	// received in full, 0 before the first.
	received atomic.Int64
	// slotCreated is set once this process created the slot it streams
	// and could not hold retention (Config.HoldRetention): events
	// committed before that are in no slot, and the outbox holds the only
	// copy of those not yet stored.
	slotCreated atomic.Bool
	// unstoredAtStop is set when the shutdown's budget ran out, or a
	// writer found the slot no longer the session's, before the sink
	// stored what the stream held (LeftUnstored).
	unstoredAtStop atomic.Bool
	// unackedAtStop is set when the shutdown's final acknowledgement
	// failed (LeftUnacknowledged).
	unackedAtStop atomic.Bool
}

// LeftUnstored reports whether Run, once it returned nil, gave up on
// batches the sink had not stored within Config.ShutdownTimeout, or
// before the slot stopped being its session's: nothing is lost, since
// nothing unstored was acknowledged, but the next start replays them.
func (s *State) LeftUnstored() bool { return s.unstoredAtStop.Load() }

// LeftUnacknowledged reports whether Run, once it returned nil, could not
// send its final acknowledgement: what the sink stored since the last one
// that reached PostgreSQL is sent again at the next start, and skipped
// there as already stored.
func (s *State) LeftUnacknowledged() bool { return s.unackedAtStop.Load() }

// SlotCreated reports whether this process created its replication slot
// because it was missing, and could not hold retention in PostgreSQL
// (Config.HoldRetention): the events committed before the slot are then
// known only to the outbox until `cdc backfill` ships them.
func (s *State) SlotCreated() bool { return s.slotCreated.Load() }

// LastCommit returns the commit time of the last transaction this process
// received in full; zero before the first. Every event not yet read
// committed after it.
func (s *State) LastCommit() time.Time {
	if n := s.received.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// OldestPending returns the commit time of the oldest event received and
// not yet stored; zero when everything received is stored.
func (s *State) OldestPending() time.Time {
	if n := s.pending.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// setOldestPending records the oldest pending commit time for State and
// for cdc_replication_lag_seconds.
func (r *Replicator) setOldestPending(nanos int64) {
	r.state.pending.Store(nanos)
	r.metrics.SetOldestPending(nanos)
}

func (s *State) setStreaming(v bool) { s.streaming.Store(v) }

func (s *State) touch(now time.Time) { s.lastMsg.Store(now.UnixNano()) }

// Streaming reports whether the replication connection is up and streaming.
func (s *State) Streaming() bool { return s.streaming.Load() }

// LastMessage returns when the server last sent anything (data or keepalive).
func (s *State) LastMessage() time.Time { return time.Unix(0, s.lastMsg.Load()) }

// StoreError is nil unless a batch is being retried because it could not
// be stored — ClickHouse refused the INSERT, or the dead-letter table the
// refused rows — and then the latest error. A sink that answers pings but
// refuses every INSERT (a dropped table, a revoked grant, too many parts)
// holds the pipeline up as surely as one that is down.
func (s *State) StoreError() error {
	if s.failing.Load() == 0 {
		return nil
	}
	if err := s.lastErr.Load(); err != nil {
		return *err
	}
	return errors.New("storing a batch failed; retrying")
}

// storeAttempts tracks one writer's retries of one batch for StoreError.
type storeAttempts struct {
	s       *State
	failing prometheus.Gauge // cdc_sink_failing_batches; nil in tests that need none
	failed  bool
}

// fail records a failed attempt; the first one counts the writer as
// failing until done.
func (a *storeAttempts) fail(err error) {
	a.s.lastErr.Store(&err)
	if !a.failed {
		a.failed = true
		a.s.failing.Add(1)
		if a.failing != nil {
			a.failing.Inc()
		}
	}
}

// done ends the retries, however they ended.
func (a *storeAttempts) done() {
	if a.failed {
		a.failed = false
		a.s.failing.Add(-1)
		if a.failing != nil {
			a.failing.Dec()
		}
	}
}

// Horizon is the time before which every event committed has been stored:
// the commit time of the oldest event pending, or with none pending that
// of the last transaction received (every event not read yet committed
// after it). Never later than that last commit: a row of a streamed
// transaction is pending with its arrival for a commit time until its
// commit arrives, and the transactions after the last one received may
// have committed hours before that arrival (a backlog). False while the
// replicator does not stream, and before it has received a transaction:
// nothing is known then. False for the life of a process that created its
// slot and could not hold retention (SlotCreated): the events from before
// the slot were lost to it, not stored, whatever it has received since.
func (s *State) Horizon() (time.Time, bool) {
	if !s.Streaming() || s.SlotCreated() {
		return time.Time{}, false
	}
	c := s.LastCommit()
	if c.IsZero() {
		return time.Time{}, false
	}
	if p := s.OldestPending(); !p.IsZero() && p.Before(c) {
		return p, true
	}
	return c, true
}
