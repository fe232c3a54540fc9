package retention

// SweepBatch is the statement each batch of a sweep runs, for tests that
// EXPLAIN it.
const SweepBatch = sweepBatch
