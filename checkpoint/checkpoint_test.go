package checkpoint

import (
	"testing"

	"github.com/jackc/pglogrepl"
)

// step is one event in the life of the pipeline; the table below scripts
// whole sequences and checks the reported positions after each step.
type step struct {
	do        func(t *Tracker)
	write     pglogrepl.LSN
	flush     pglogrepl.LSN
	idle      bool
	sealEnd   pglogrepl.LSN // when do seals, what it must return
	checkSeal bool
}

func begin(t *Tracker)                        { t.Begin() }
func row(t *Tracker)                          { t.Row() }
func commit(end pglogrepl.LSN) func(*Tracker) { return func(t *Tracker) { t.Commit(end) } }
func flushed(end pglogrepl.LSN) func(*Tracker) {
	return func(t *Tracker) { t.Flushed(end) }
}
func keepalive(end pglogrepl.LSN) func(*Tracker) { return func(t *Tracker) { t.ServerEnd(end) } }

func TestTracker(t *testing.T) {
	tests := []struct {
		name  string
		start pglogrepl.LSN
		steps []step
	}{
		{
			name:  "flush waits for the sink, then reports the commit end",
			start: 100,
			steps: []step{
				{do: begin, write: 100, flush: 100},
				{do: row, write: 100, flush: 100},
				{do: commit(200), write: 200, flush: 100},
				{do: func(t *Tracker) {}, write: 200, flush: 100},
				{do: nil, sealEnd: 200, checkSeal: true, write: 200, flush: 100},
				{do: keepalive(500), write: 200, flush: 100},
				{do: flushed(200), write: 500, flush: 500, idle: true},
			},
		},
		{
			name:  "a batch cut inside a transaction makes only the previous commit durable",
			start: 100,
			steps: []step{
				{do: begin, write: 100, flush: 100},
				{do: row, write: 100, flush: 100},
				{do: commit(150), write: 150, flush: 100},
				{do: begin, write: 150, flush: 100},
				{do: row, write: 150, flush: 100},
				{do: nil, sealEnd: 150, checkSeal: true, write: 150, flush: 100},
				{do: row, write: 150, flush: 100},
				{do: flushed(150), write: 150, flush: 150},
				{do: commit(300), write: 300, flush: 150},
				{do: nil, sealEnd: 300, checkSeal: true, write: 300, flush: 150},
				{do: flushed(300), write: 300, flush: 300, idle: true},
			},
		},
		{
			name:  "keepalive mid-transaction does not move flush",
			start: 100,
			steps: []step{
				{do: begin, write: 100, flush: 100},
				{do: keepalive(900), write: 100, flush: 100},
				{do: commit(200), write: 900, flush: 900, idle: true},
			},
		},
		{
			name:  "quiet outbox follows the server's WAL end",
			start: 100,
			steps: []step{
				{do: keepalive(400), write: 400, flush: 400, idle: true},
				{do: keepalive(300), write: 400, flush: 400, idle: true},
			},
		},
		{
			// With nothing received since, flush would follow the later,
			// lower keepalive down if the server end could go back.
			name:  "a keepalive behind an earlier one does not move the server end back",
			start: 100,
			steps: []step{
				{do: begin, write: 100, flush: 100},
				{do: keepalive(900), write: 100, flush: 100},
				{do: keepalive(500), write: 100, flush: 100},
				{do: commit(200), write: 900, flush: 900, idle: true},
			},
		},
		{
			name:  "a commit end behind the received one does not move it back",
			start: 100,
			steps: []step{
				{do: begin, write: 100, flush: 100},
				{do: row, write: 100, flush: 100},
				{do: commit(300), write: 300, flush: 100},
				{do: begin, write: 300, flush: 100},
				{do: commit(200), write: 300, flush: 100},
				{do: nil, sealEnd: 300, checkSeal: true, write: 300, flush: 100},
				{do: flushed(300), write: 300, flush: 300, idle: true},
			},
		},
		{
			name:  "a stored end behind the flushed one does not move it back, and an extra one leaves nothing in flight",
			start: 0,
			steps: []step{
				{do: begin},
				{do: row},
				{do: commit(10), write: 10},
				{do: nil, sealEnd: 10, checkSeal: true, write: 10},
				{do: begin, write: 10},
				{do: row, write: 10},
				{do: commit(20), write: 20},
				{do: nil, sealEnd: 20, checkSeal: true, write: 20},
				{do: flushed(20), write: 20, flush: 20},
				{do: begin, write: 20, flush: 20},
				{do: flushed(10), write: 20, flush: 20},
				{do: flushed(10), write: 20, flush: 20},
				{do: commit(30), write: 30, flush: 30, idle: true},
			},
		},
		{
			name:  "two batches in flight: flush follows the stored one only",
			start: 0,
			steps: []step{
				{do: begin},
				{do: row},
				{do: commit(10), write: 10},
				{do: nil, sealEnd: 10, checkSeal: true, write: 10},
				{do: begin, write: 10},
				{do: row, write: 10},
				{do: commit(20), write: 20},
				{do: nil, sealEnd: 20, checkSeal: true, write: 20},
				{do: flushed(10), write: 20, flush: 10},
				{do: keepalive(99), write: 20, flush: 10},
				{do: flushed(20), write: 99, flush: 99, idle: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := New(tt.start)
			for i, s := range tt.steps {
				if s.checkSeal {
					if got := tr.Seal(); got != s.sealEnd {
						t.Fatalf("step %d: Seal() = %d, want %d", i, got, s.sealEnd)
					}
				} else if s.do != nil {
					s.do(tr)
				}
				if got := tr.Idle(); got != s.idle {
					t.Fatalf("step %d: Idle() = %v, want %v", i, got, s.idle)
				}
				w, f := tr.Positions()
				if w != s.write || f != s.flush {
					t.Fatalf("step %d: Positions() = (%d, %d), want (%d, %d)", i, w, f, s.write, s.flush)
				}
			}
		})
	}
}

func TestTracker_MidTransactionBatchesHoldTheCommit(t *testing.T) {
	tr := New(500)
	// counts checks the rows buffered and the batches in flight, which
	// a shutdown reports (rows_unsent, batches_in_flight) and decides by.
	counts := func(when string, buffered, inFlight int) {
		t.Helper()
		if b, f := tr.Buffered(), tr.InFlight(); b != buffered || f != inFlight {
			t.Fatalf("%s: Buffered() = %d, InFlight() = %d; want %d, %d", when, b, f, buffered, inFlight)
		}
	}
	tr.Begin()
	tr.Row()
	tr.Row()
	counts("two rows", 2, 0)
	if end := tr.Seal(); end != 500 {
		t.Fatalf("Seal() mid-transaction = %d, want the previous commit 500", end)
	}
	counts("sealed", 0, 1)
	tr.Row()
	counts("a row after the seal", 1, 1)
	tr.Flushed(500)
	counts("the batch stored", 1, 0)
	tr.ServerEnd(9000)
	if _, f := tr.Positions(); f != 500 {
		t.Fatalf("flush = %d while the transaction is open, want 500", f)
	}
	tr.Commit(600)
	if _, f := tr.Positions(); f != 500 {
		t.Fatalf("flush = %d with its last row still buffered, want 500", f)
	}
	if end := tr.Seal(); end != 600 {
		t.Fatalf("Seal() = %d, want 600", end)
	}
	counts("the last row sealed", 0, 1)
	tr.Flushed(600)
	counts("all stored", 0, 0)
	if _, f := tr.Positions(); f != 9000 {
		t.Fatalf("flush = %d once idle, want the server end 9000", f)
	}
}
