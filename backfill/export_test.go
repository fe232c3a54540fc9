package backfill

// PageQuery is the query and arguments the scanner's next page runs, for
// tests that EXPLAIN it.
func (s *Scanner) PageQuery() (string, []any) { return s.query() }
