package replication

import (
	"time"

	"github.com/jackc/pglogrepl"
)

// set sets *v to d for a test and returns the function that puts it back.
func set(v *time.Duration, d time.Duration) (restore func()) {
	old := *v
	*v = d
	return func() { *v = old }
}

// SetLookupTimeout sets the bound of a transaction status lookup for a
// test and returns the function that puts it back.
func SetLookupTimeout(d time.Duration) (restore func()) { return set(&lookupTimeout, d) }

// SetSetupTimeout sets the bound of each session set-up step for a test
// and returns the function that puts it back.
func SetSetupTimeout(d time.Duration) (restore func()) { return set(&setupTimeout, d) }

// SetSlowInsert sets how long an INSERT runs before it is logged as slow,
// for a test, and returns the function that puts it back.
func SetSlowInsert(d time.Duration) (restore func()) { return set(&slowInsert, d) }

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
	return set(&publicationCheckEvery, d)
}

// SetDeadLetterTimeout sets how long one attempt to set refused rows
// aside may take.
func SetDeadLetterTimeout(d time.Duration) (restore func()) { return set(&deadLetterTimeout, d) }

// SetSinkRetryMax sets the longest wait between two attempts to reach
// the sink.
func SetSinkRetryMax(d time.Duration) (restore func()) { return set(&sinkRetryMax, d) }

// SetSlotPluginColumn sets the expression a session reads its slot's
// plugin with, for a test, and returns the function that puts it back.
func SetSlotPluginColumn(expr string) (restore func()) {
	old := slotPluginColumn
	slotPluginColumn = expr
	return func() { slotPluginColumn = old }
}
