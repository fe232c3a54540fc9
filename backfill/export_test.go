package backfill

import "time"

// PageQuery is the query and arguments the scanner's next page runs, for
// tests that EXPLAIN it.
func (s *Scanner) PageQuery() (string, []any) { return s.query() }

// SetRetryWaits sets the pauses between tries of a failed write, for a
// test, and returns the function that puts them back.
func SetRetryWaits(w []time.Duration) (restore func()) {
	old := retryWaits
	retryWaits = w
	return func() { retryWaits = old }
}

// SetByIDChunk sets how many ids a lookup by id alone takes, for a test,
// and returns the function that puts it back.
func SetByIDChunk(n int) (restore func()) {
	old := byIDChunk
	byIDChunk = n
	return func() { byIDChunk = old }
}
