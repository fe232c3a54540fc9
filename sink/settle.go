package sink

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"go.uber.org/zap"
)

// accessDenied is ClickHouse's ACCESS_DENIED.
const accessDenied = 497

// insertQueryPrefix starts the query id of each of cdc's INSERTs into
// event_log.
const insertQueryPrefix = "cdc-insert-"

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

// runningInserts lists the query ids of cdc's INSERTs the server is
// running; of those in among alone when it is not nil. among is matched
// here, not in the query: the ids come from the server, and another
// client may have named a query of its own with cdc's prefix and
// anything after it.
func (c *ClickHouse) runningInserts(ctx context.Context, among []string) ([]string, error) {
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
		if among == nil || slices.Contains(among, id) {
			ids = append(ids, id)
		}
	}
	return ids, rows.Err()
}
