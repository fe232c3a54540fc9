package replication

import (
	"time"

	"github.com/jackc/pglogrepl"
)

// SetLookupTimeout sets the bound of a transaction status lookup for a
// test and returns the function that puts it back.
func SetLookupTimeout(d time.Duration) (restore func()) {
	old := lookupTimeout
	lookupTimeout = d
	return func() { lookupTimeout = old }
}

// SetSetupTimeout sets the bound of each session set-up step for a test
// and returns the function that puts it back.
func SetSetupTimeout(d time.Duration) (restore func()) {
	old := setupTimeout
	setupTimeout = d
	return func() { setupTimeout = old }
}

// SetPartial and Partials reach Replicator.partial for a test, while Run
// is not running.
func (r *Replicator) SetPartial(xid uint32, end pglogrepl.LSN) {
	r.rememberPartial(xid)
	r.partial[xid] = end
}

func (r *Replicator) Partials() map[uint32]pglogrepl.LSN { return r.partial }

// SetLastCommit sets what State.LastCommit returns, as a session that
// received a transaction committed at t would.
func (s *State) SetLastCommit(t time.Time) { s.received.Store(t.UnixNano()) }

// SetPublicationCheckEvery sets how often a session looks at its
// publication for a test and returns the function that puts it back.
func SetPublicationCheckEvery(d time.Duration) (restore func()) {
	old := publicationCheckEvery
	publicationCheckEvery = d
	return func() { publicationCheckEvery = old }
}

// SetDeadLetterTimeout sets how long one attempt to set refused rows
// aside may take.
func SetDeadLetterTimeout(d time.Duration) (restore func()) {
	old := deadLetterTimeout
	deadLetterTimeout = d
	return func() { deadLetterTimeout = old }
}

// SetSinkRetryMax sets the longest wait between two attempts to reach
// the sink.
func SetSinkRetryMax(d time.Duration) (restore func()) {
	old := sinkRetryMax
	sinkRetryMax = d
	return func() { sinkRetryMax = old }
}
