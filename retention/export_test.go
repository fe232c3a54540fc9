package retention

// SweepFirst and SweepBatch are the statements of a sweep's first batch
// and of the batches after it, for tests that EXPLAIN them.
const (
	SweepFirst = sweepFirst
	SweepBatch = sweepBatch
	// SweepTimeouts sets a batch's lock_timeout and statement_timeout.
	SweepTimeouts = sweepTimeouts
)
