package sink

import (
	"context"
	"time"
)

// SetBlockSize lets tests send an INSERT as many small blocks.
func SetBlockSize(c *ClickHouse, bytes, rows int) { c.blockBytes, c.blockRows = bytes, rows }

// Dials is how many connections c has opened.
func Dials(c *ClickHouse) int64 { return c.live.dials.Load() }

// SetMaxConns sets the pool size of sinks opened from now on, for a test,
// and returns the function that puts it back.
func SetMaxConns(n int) (restore func()) {
	old := maxConns
	maxConns = n
	return func() { maxConns = old }
}

// SetReadBounds sets the bounds of a set of positions read from storage
// and the rows of one page of such a read, for a test, and returns the
// function that puts them back.
func SetReadBounds(rows, runs, page int) (restore func()) {
	oldRows, oldRuns, oldPage := maxReadRows, maxReadRuns, readPageRows
	maxReadRows, maxReadRuns, readPageRows = rows, runs, page
	return func() { maxReadRows, maxReadRuns, readPageRows = oldRows, oldRuns, oldPage }
}

// SetExactLimit sets how many rows a read keeps each event of, for a test,
// and returns the function that puts it back.
func SetExactLimit(n int) (restore func()) {
	old := exactLimit
	exactLimit = n
	return func() { exactLimit = old }
}

// SetInsertSettings sets what c's INSERTs send, until it reads
// event_log's columns again; InsertSettings reads it.
func SetInsertSettings(c *ClickHouse, s map[string]any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.insertSettings = s
}

func InsertSettings(c *ClickHouse) map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.insertSettings
}

// SetSettle sets how long Written waits for INSERTs still running, and how
// often it looks.
func SetSettle(c *ClickHouse, wait, every time.Duration) { c.settleFor, c.settleEvery = wait, every }

// InsertIDPrefix is how the query ids of INSERTs into database start.
var InsertIDPrefix = insertIDPrefix

// IDPrefix is how c's INSERTs' query ids start.
func IDPrefix(ctx context.Context, c *ClickHouse) (string, error) { return c.idPrefix(ctx) }

// AgeColumns makes what c knows of event_log's columns older than the 30 s
// after which an outbox column left uncarried has it look again.
func AgeColumns(c *ClickHouse) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.loadedAt = c.loadedAt.Add(-time.Minute)
}

// SetUnwrittenChunk sets how many event ids one query of Unwritten asks
// about, for a test, and returns the function that puts it back.
func SetUnwrittenChunk(n int) (restore func()) {
	old := unwrittenChunk
	unwrittenChunk = n
	return func() { unwrittenChunk = old }
}
