package sink

import (
	"context"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
)

// unwrittenChunk is how many event ids one query of Unwritten asks about.
// They go as an external table, data rather than query text, so
// max_query_size does not bound them; the chunk bounds what the server
// holds for the IN.
var unwrittenChunk = 100_000 // a var for tests

// Unwritten is a read-back (WithReadBack) for writers whose rows are not
// placed by the WAL: cdc backfill's (commit LSN 0 and an ordinal of the
// run) and cdc deadletter replay's (a letter's position, or LSN 0 and its
// id), which lie anywhere in event_log and cannot be read as a range the
// way the replicator reads its own (Written). It returns the rows of which
// event_log holds no row at the same position with the same event, asked
// by the rows' event ids. A row with no event id, or one that is no UUID,
// cannot be asked about and is returned; so is every row when event_log
// has no position columns. As Written, it first waits for cdc's INSERTs
// still running on the server (settle): the broken INSERT may still be
// storing a block.
//
// It reads event_log's whole event_id column, as cdc verify does: the
// sink asks it only when an INSERT broke after blocks that the server may
// have stored went out (storedNone), which with ClickHouse's default
// min_insert_block_size settings no batch of the default size does; cdc backfill
// asks it before it tries a failed write again.
func (c *ClickHouse) Unwritten(ctx context.Context, rows []Row) ([]Row, error) {
	if len(rows) == 0 {
		return rows, nil
	}
	if has, err := c.hasPositions(ctx); err != nil || !has {
		if err != nil {
			return nil, err
		}
		return rows, nil
	}
	if err := c.settle(ctx); err != nil {
		return nil, err
	}
	ids := make([]uuid.UUID, 0, len(rows))
	seen := make(map[uuid.UUID]bool, len(rows))
	for i := range rows {
		if id, ok := rows[i].eventID(); ok && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	stored := make(map[storedRow]bool, len(rows))
	for start := 0; start < len(ids); start += unwrittenChunk {
		if err := c.readStored(ctx, ids[start:min(start+unwrittenChunk, len(ids))], stored); err != nil {
			return nil, err
		}
	}
	lacked := make([]Row, 0, len(rows))
	for i := range rows {
		id, ok := rows[i].eventID()
		if !ok || !stored[storedRow{rows[i].Pos, id}] {
			lacked = append(lacked, rows[i])
		}
	}
	return lacked, nil
}

// storedRow is a row of event_log as Unwritten tells them apart.
type storedRow struct {
	pos Position
	id  uuid.UUID
}

// readStored adds to stored every row event_log holds of the events ids.
func (c *ClickHouse) readStored(ctx context.Context, ids []uuid.UUID, stored map[storedRow]bool) error {
	t, err := ext.NewTable("cdc_unwritten_ids", ext.Column("id", "UUID"))
	if err != nil {
		return fmt.Errorf("read which of %d events %s holds: %w", len(ids), Table, err)
	}
	for _, id := range ids {
		if err := t.Append(id.String()); err != nil {
			return fmt.Errorf("read whether %s holds event %s: %w", Table, id, err)
		}
	}
	qctx := clickhouse.Context(ctx, clickhouse.WithExternalTable(t))
	found, err := c.conn.Query(qctx, fmt.Sprintf("SELECT %s, %s, %s FROM %s WHERE %s IN cdc_unwritten_ids",
		colCommitLSN, colSeq, colEventID, Table, colEventID))
	if err != nil {
		return fmt.Errorf("read which of %d events %s holds: %w", len(ids), Table, err)
	}
	defer found.Close()
	for found.Next() {
		var lsn, seq uint64
		var id uuid.UUID
		if err := found.Scan(&lsn, &seq, &id); err != nil {
			return fmt.Errorf("read which of %d events %s holds: %w", len(ids), Table, err)
		}
		stored[storedRow{Position{CommitLSN: pglogrepl.LSN(lsn), Seq: seq}, id}] = true
	}
	if err := found.Err(); err != nil {
		return fmt.Errorf("read which of %d events %s holds: %w", len(ids), Table, err)
	}
	return nil
}
