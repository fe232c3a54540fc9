// Package checkpoint decides which WAL position cdc may acknowledge to
// PostgreSQL. It tracks three positions, named as in the streaming
// replication protocol:
//
//   - received: the end of the last transaction read from the slot in full;
//   - written: the end of the last transaction handed to the sink;
//   - flushed: the end of the last transaction the sink has stored.
//
// Only flushed is ever reported as the flush position, so PostgreSQL keeps
// every transaction the sink has not stored. When nothing is buffered or in
// flight, flushed may jump to the server's reported WAL end: a busy database
// with a quiet outbox must not make the slot retain WAL forever.
//
// A Tracker is plain data owned by one goroutine (the one that owns the
// replication connection); it does no I/O and takes no locks.
package checkpoint

import "github.com/jackc/pglogrepl"

// Tracker follows transactions through the pipeline.
type Tracker struct {
	received  pglogrepl.LSN
	written   pglogrepl.LSN
	flushed   pglogrepl.LSN
	serverEnd pglogrepl.LSN

	inTx     bool // between a Begin and its Commit
	buffered int  // rows in the open batch
	inFlight int  // batches handed to the sink and not yet stored
}

// New starts a tracker at the slot's confirmed flush position: everything
// before it is already stored.
func New(confirmed pglogrepl.LSN) *Tracker {
	return &Tracker{received: confirmed, written: confirmed, flushed: confirmed}
}

// Begin records the start of a transaction.
func (t *Tracker) Begin() { t.inTx = true }

// InTx reports whether a transaction has begun and not yet committed.
func (t *Tracker) InTx() bool { return t.inTx }

// Row records a row added to the open batch.
func (t *Tracker) Row() { t.buffered++ }

// Commit records the end of a transaction: end is the LSN just past its
// commit record, the position PostgreSQL resumes after.
func (t *Tracker) Commit(end pglogrepl.LSN) {
	t.inTx = false
	if end > t.received {
		t.received = end
	}
}

// Seal records that the open batch was handed to the sink and returns the
// position that batch makes durable once stored: the end of the last
// transaction received in full. A batch cut inside a large transaction makes
// nothing past the previous commit durable; the transaction's end only
// becomes durable with the batch that holds its last row.
func (t *Tracker) Seal() pglogrepl.LSN {
	t.buffered = 0
	t.inFlight++
	t.written = t.received
	return t.received
}

// Flushed records that the sink stored a batch sealed at end.
func (t *Tracker) Flushed(end pglogrepl.LSN) {
	if t.inFlight > 0 {
		t.inFlight--
	}
	if end > t.flushed {
		t.flushed = end
	}
}

// ServerEnd records the WAL end a keepalive reported.
func (t *Tracker) ServerEnd(lsn pglogrepl.LSN) {
	if lsn > t.serverEnd {
		t.serverEnd = lsn
	}
}

// Idle reports whether nothing is buffered, in flight or half-received.
func (t *Tracker) Idle() bool { return !t.inTx && t.buffered == 0 && t.inFlight == 0 }

// Buffered reports the rows in the open batch.
func (t *Tracker) Buffered() int { return t.buffered }

// InFlight reports the batches handed to the sink and not yet stored.
func (t *Tracker) InFlight() int { return t.inFlight }

// Positions returns what to report in a standby status update. flush never
// passes what the sink stored, except when idle, where it advances to the
// last transaction received and the server's WAL end: there is nothing
// between them that cdc still owes the sink.
func (t *Tracker) Positions() (write, flush pglogrepl.LSN) {
	if t.Idle() {
		t.flushed = max(t.flushed, t.received, t.serverEnd)
		t.received = max(t.received, t.flushed)
		t.written = max(t.written, t.flushed)
	}
	return max(t.received, t.flushed), t.flushed
}

// Received returns the end of the last transaction received in full.
func (t *Tracker) Received() pglogrepl.LSN { return t.received }

// Written returns the end of the last transaction handed to the sink.
func (t *Tracker) Written() pglogrepl.LSN { return t.written }

// Flushed returns the end of the last transaction the sink stored.
func (t *Tracker) FlushedLSN() pglogrepl.LSN { return t.flushed }
