package sink

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"

	"github.com/eventcdc/cdc/decoder"
)

// colEventTime is the event_log column a row is partitioned and sorted by.
const colEventTime = "event_date_time"

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
// event_log holds no row at the same position with the same event and,
// where it can tell, under the same second, asked by the rows' event ids.
// A row with no event id, or one that is no UUID, cannot be asked about
// and is returned; so is every row when event_log has no position
// columns. As Written, it first waits for cdc's INSERTs still running on
// the server (settle): the broken INSERT may still be storing a block.
//
// A row stored by an earlier INSERT of the same row is stored under the
// second the same conversion gives its event_date_time, so the ids of
// rows with one are asked within the seconds of their chunk: event_log
// is partitioned by the month of event_date_time, and ClickHouse skips
// the months outside them (within a month, the sort key, event_type
// first, narrows the read little once many types share a part). The
// rest (no event_date_time column in the row, NULL, a value cdc does not
// convert, an event_log column not a DateTime) are asked by id alone,
// which reads event_log's whole event_id column, as cdc verify does. A stored row of the event at the position but under another
// second is not this row stored (a letter repaired in place): it is
// returned and written. The sink asks this only when an INSERT broke
// after blocks that the server may have stored went out (storedNone),
// which with ClickHouse's default min_insert_block_size settings no batch
// of the default size does; cdc backfill asks it before it tries a failed
// write again.
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
	// keys[i] is rows[i] as asked about, if asked[i] (it has an id); sec
	// -1 where it is asked by id alone.
	dated := c.eventTimeIsDateTime()
	keys := make([]timedID, len(rows))
	asked := make([]bool, len(rows))
	var timed []timedID
	var untimed []uuid.UUID
	seen := make(map[timedID]bool, len(rows))
	for i := range rows {
		k := timedID{sec: -1}
		if k.id, asked[i] = rows[i].eventID(); !asked[i] {
			continue
		}
		if sec, ok := rows[i].second(); ok && dated {
			k.sec = sec
		}
		keys[i] = k
		if seen[k] {
			continue
		}
		seen[k] = true
		if k.sec < 0 {
			untimed = append(untimed, k.id)
		} else {
			timed = append(timed, k)
		}
	}
	slices.SortFunc(timed, func(a, b timedID) int { return cmp.Compare(a.sec, b.sec) })
	stored := make(map[storedRow]bool, len(rows))
	for start := 0; start < len(timed); start += unwrittenChunk {
		part := timed[start:min(start+unwrittenChunk, len(timed))]
		ids := make([]uuid.UUID, len(part))
		secs := make([]int64, len(part))
		for i, k := range part {
			ids[i], secs[i] = k.id, k.sec
		}
		if err := c.readStored(ctx, ids, withinSeconds(secs, maxWindows), stored); err != nil {
			return nil, err
		}
	}
	for start := 0; start < len(untimed); start += unwrittenChunk {
		if err := c.readStored(ctx, untimed[start:min(start+unwrittenChunk, len(untimed))], "", stored); err != nil {
			return nil, err
		}
	}
	lacked := make([]Row, 0, len(rows))
	for i, k := range keys {
		if !asked[i] || !stored[storedRow{rows[i].Pos, k.id, k.sec}] {
			lacked = append(lacked, rows[i])
		}
	}
	return lacked, nil
}

// maxWindows is how many ranges of seconds one query of Unwritten names
// at most: rows of many days apart (dead letters replayed together) are
// asked within a range each, up to this many, so that a read of one chunk
// skips the partitions between them; the query's text stays a few KiB,
// well inside max_query_size.
const maxWindows = 64

// withinSeconds is the condition on event_date_time, a prefix ending in
// AND, that holds the sorted seconds secs in at most n ranges: they are
// cut at their n-1 widest gaps. It compares Unix seconds, toUInt32 of the
// column, not the column with toDateTime(N): a constant compared with the
// column can be taken through the partition key's month in a
// session_timezone other than the column's, and a part holding the row
// skipped (ClickHouse issue 86654), which here would write a stored row
// again; toUInt32 goes through no time zone, and being monotonic still
// lets ClickHouse skip parts by their least and greatest time.
func withinSeconds(secs []int64, n int) string {
	second := "toUInt32(" + colEventTime + ")"
	type gap struct {
		at    int // secs[at] starts a range
		width int64
	}
	var gaps []gap
	for i := 1; i < len(secs); i++ {
		if secs[i] > secs[i-1]+1 {
			gaps = append(gaps, gap{i, secs[i] - secs[i-1]})
		}
	}
	slices.SortStableFunc(gaps, func(a, b gap) int { return cmp.Compare(b.width, a.width) })
	cuts := []int{0}
	for _, g := range gaps[:min(len(gaps), n-1)] {
		cuts = append(cuts, g.at)
	}
	slices.Sort(cuts)
	ranges := make([]string, len(cuts))
	for i, from := range cuts {
		to := len(secs) - 1
		if i+1 < len(cuts) {
			to = cuts[i+1] - 1
		}
		if secs[from] == secs[to] {
			ranges[i] = fmt.Sprintf("%s = %d", second, secs[from])
		} else {
			ranges[i] = fmt.Sprintf("%s >= %d AND %s <= %d", second, secs[from], second, secs[to])
		}
	}
	if len(ranges) == 1 {
		return ranges[0] + " AND "
	}
	return "(" + strings.Join(ranges, " OR ") + ") AND "
}

// storedRow is a row of event_log as Unwritten tells them apart.
type storedRow struct {
	pos Position
	id  uuid.UUID
	sec int64 // event_date_time in Unix seconds; -1 where the row was asked by id alone
}

// timedID is an event id asked about, with the second its row is stored
// under (-1: asked by id alone).
type timedID struct {
	id  uuid.UUID
	sec int64
}

// eventTimeIsDateTime reports whether event_log's event_date_time is a
// DateTime, whose seconds Unwritten can compute from a row as its INSERT
// does. A Nullable, a DateTime64 or a column of another type is asked
// about by id alone.
func (c *ClickHouse) eventTimeIsDateTime() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, col := range c.columns {
		if col.name == colEventTime {
			return col.typ == "DateTime" || strings.HasPrefix(col.typ, "DateTime(")
		}
	}
	return false
}

// second is the Unix second a DateTime event_date_time stores row under,
// as its INSERT converts it (parseDateTime); false when the row has no
// event_date_time (event_log's default fills it) or none cdc converts
// (NULL, a value outside DateTime's range): Unwritten asks about such a
// row by id alone.
func (r *Row) second() (int64, bool) {
	if r.Relation == nil {
		return 0, false
	}
	for i, col := range r.Relation.Columns {
		if targetName(col.Name) != colEventTime || i >= len(r.Values) || r.Values[i].Kind != decoder.ValueText {
			continue
		}
		t, err := parseDateTime(r.Values[i].Data)
		return t.Unix(), err == nil
	}
	return 0, false
}

// readStored adds to stored every row event_log holds of the events ids
// under the condition within (a prefix ending in AND, or "": anywhere),
// each with its second where within is a window of seconds.
func (c *ClickHouse) readStored(ctx context.Context, ids []uuid.UUID, within string, stored map[storedRow]bool) error {
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
	second := "toUInt32(0)" // by id alone event_date_time need not even be a DateTime
	if within != "" {
		second = "toUInt32(" + colEventTime + ")"
	}
	found, err := c.conn.Query(qctx, fmt.Sprintf("SELECT %s, %s, %s, %s FROM %s WHERE %s%s IN cdc_unwritten_ids",
		colCommitLSN, colSeq, colEventID, second, Table, within, colEventID))
	if err != nil {
		return fmt.Errorf("read which of %d events %s holds: %w", len(ids), Table, err)
	}
	defer found.Close()
	for found.Next() {
		var lsn, seq uint64
		var id uuid.UUID
		var sec uint32
		if err := found.Scan(&lsn, &seq, &id, &sec); err != nil {
			return fmt.Errorf("read which of %d events %s holds: %w", len(ids), Table, err)
		}
		at := int64(-1)
		if within != "" {
			at = int64(sec)
		}
		stored[storedRow{Position{CommitLSN: pglogrepl.LSN(lsn), Seq: seq}, id, at}] = true
	}
	if err := found.Err(); err != nil {
		return fmt.Errorf("read which of %d events %s holds: %w", len(ids), Table, err)
	}
	return nil
}
