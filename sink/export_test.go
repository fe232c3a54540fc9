package sink

// SetBlockSize lets tests send an INSERT as many small blocks.
func SetBlockSize(c *ClickHouse, bytes, rows int) { c.blockBytes, c.blockRows = bytes, rows }
