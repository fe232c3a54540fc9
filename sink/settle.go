package sink

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/google/uuid"
	"go.uber.org/zap"
)

// accessDenied is ClickHouse's ACCESS_DENIED.
const accessDenied = 497

// insertQueryPrefix starts the query id of each of cdc's INSERTs into
// event_log. A tag of the database follows (insertIDPrefix), then a UUID.
const insertQueryPrefix = "cdc-insert-"

// idPrefix is insertIDPrefix of the database the sink's INSERTs go to,
// asked of the server once: the DSN may name it, or leave it to the
// user's default database, and two DSNs that reach one event_log either
// way (a standby's and the old streamer's) must settle for each other's
// INSERTs.
func (c *ClickHouse) idPrefix(ctx context.Context) (string, error) {
	c.mu.Lock()
	prefix := c.insertPrefix
	c.mu.Unlock()
	if prefix != "" {
		return prefix, nil
	}
	var database string
	if err := c.conn.QueryRow(ctx, "SELECT currentDatabase()").Scan(&database); err != nil {
		return "", fmt.Errorf("read the current database: %w", err)
	}
	prefix = insertIDPrefix(database)
	c.mu.Lock()
	c.insertPrefix = prefix
	c.mu.Unlock()
	return prefix, nil
}

// insertIDPrefix is the start of the query ids of INSERTs into database's
// event_log: insertQueryPrefix, a hash of the database's name, a dash.
// system.processes on 18.16 does not say which database a query runs in,
// and pipelines writing to other databases of one server (one for each
// environment or service) waited on each other's INSERTs at every session
// start, up to read_timeout, with a warning naming INSERTs that were not
// theirs. A hash, not the name: any name is a valid database, quotes and
// all.
func insertIDPrefix(database string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(database))
	return fmt.Sprintf("%s%08x-", insertQueryPrefix, h.Sum32())
}

// ownInsert reports whether the query id is of an INSERT a sink whose
// ids start with prefix (idPrefix) settles for: one into its own
// database, or one of an older build, which named its INSERTs
// insertQueryPrefix and a bare UUID (the process a rolling upgrade
// replaced may have left one running).
func ownInsert(prefix, id string) bool {
	if strings.HasPrefix(id, prefix) {
		return true
	}
	rest, ok := strings.CutPrefix(id, insertQueryPrefix)
	if !ok || len(rest) != 36 {
		return false
	}
	_, err := uuid.Parse(rest)
	return err == nil
}

// settle waits until none of cdc's INSERTs that run on the server now is
// running any more, so that what Written then reads includes every row
// they may still commit — of those the server has begun: an INSERT whose
// bytes still sit in an abandoned socket's buffers is not listed yet,
// and may commit after the read (a raw duplicate then; FINAL shows each
// event once). A client that gives up on an INSERT — a session
// that ended on an error, a shutdown past its budget, a process killed,
// a retry after read_timeout — does not stop the server from committing
// it if all its blocks were sent; read before that, the positions lack
// its rows, and the replay would store them again.
//
// It waits for the INSERTs running when it is called, not for those
// started since: the pipeline's other writers go on meanwhile. It gives
// up after settleFor with a warning (a raw duplicate is possible then;
// FINAL shows each event once), and so does a server whose
// system.processes this user may not read (ACCESS_DENIED; any other
// error is returned). On a DSN of several servers it sees the one its
// query goes to.
func (c *ClickHouse) settle(ctx context.Context) error {
	running, err := c.runningInserts(ctx, nil)
	var ex *clickhouse.Exception
	if errors.As(err, &ex) && ex.Code == accessDenied {
		// A user whose grants leave system.processes out (any may read
		// it by default): the wait is given up, said once.
		if !c.settleBlind.Swap(true) {
			c.log.Warn("cannot read system.processes: an INSERT abandoned while the server was still storing it may be written again on replay (FINAL shows each event once); GRANT SELECT ON system.processes to cdc's user", zap.Error(err))
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("look for running inserts into %s: %w", Table, err)
	}
	start := time.Now()
	for len(running) > 0 {
		if time.Since(start) >= c.settleFor {
			c.log.Warn("INSERTs into event_log still run on the server: the replay may write their rows again (FINAL shows each event once)",
				zap.Strings("query_ids", running), zap.Duration("waited", time.Since(start).Round(time.Millisecond)))
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(c.settleEvery):
		}
		if running, err = c.runningInserts(ctx, running); err != nil {
			return fmt.Errorf("wait for running inserts into %s: %w", Table, err)
		}
	}
	if waited := time.Since(start); waited > c.settleEvery {
		c.log.Info("waited for INSERTs into event_log still running on the server before reading what it holds", zap.Duration("waited", waited.Round(time.Millisecond)))
	}
	return nil
}

// runningInserts lists the query ids of cdc's INSERTs into this sink's
// database the server is running (ownInsert); of those in among alone when it
// is not nil. They are matched here, not in the query: the ids come from
// the server, and another client may have named a query of its own with
// cdc's prefix and anything after it.
func (c *ClickHouse) runningInserts(ctx context.Context, among []string) ([]string, error) {
	prefix, err := c.idPrefix(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := c.conn.Query(ctx, "SELECT query_id FROM system.processes WHERE query_id LIKE '"+insertQueryPrefix+"%'")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		if ownInsert(prefix, id) && (among == nil || slices.Contains(among, id)) {
			ids = append(ids, id)
		}
	}
	return ids, rows.Err()
}
