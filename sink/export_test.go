package sink

// SetBlockSize lets tests send an INSERT as many small blocks.
func SetBlockSize(c *ClickHouse, bytes, rows int) { c.blockBytes, c.blockRows = bytes, rows }

// SetMaxConns sets the pool size of sinks opened from now on, for a test,
// and returns the function that puts it back.
func SetMaxConns(n int) (restore func()) {
	old := maxConns
	maxConns = n
	return func() { maxConns = old }
}
