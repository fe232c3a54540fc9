package backfill

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventcdc/cdc/deadletter"
	"github.com/eventcdc/cdc/sink"
)

// VerifyOptions bound a comparison.
type VerifyOptions struct {
	Since time.Time // outbox rows with event_date_time >= Since; zero: every row down to '-infinity'
	Until time.Time // ... and < Until: rows newer may still be on their way
	Page  int       // outbox ids per page; 0 means 10000
	Show  int       // ids listed per kind; the counts are always complete
	// RowFilter, a publication's (RowFilter), leaves the outbox rows it
	// does not pass out of the comparison: cdc run is never sent them.
	RowFilter string
	// Slot names the pipeline whose dead letters account for missing
	// events (deadletter.Store): another pipeline's are not this one's.
	Slot string
}

// VerifyReport is the outcome of a comparison.
type VerifyReport struct {
	Since      time.Time `json:"since"`
	Until      time.Time `json:"until"`
	OutboxRows int64     `json:"outbox_rows"`
	Found      int64     `json:"found"`
	Missing    int64     `json:"missing"`
	MissingIDs []string  `json:"missing_ids"`
	// MissingDeadLettered counts the missing events that wait in
	// cdc_dead_letter: known, and replayable once the cause is fixed.
	MissingDeadLettered int64 `json:"missing_dead_lettered"`
	EventLogRows        int64 `json:"event_log_rows"`
	// NotInOutbox are events in event_log's window whose outbox row is gone:
	// deleted by retention or by the application, which is expected.
	NotInOutbox    int64    `json:"not_in_outbox"`
	NotInOutboxIDs []string `json:"not_in_outbox_ids"`
}

// chChunk is how many ids one lookup within their own seconds takes. They
// go as an external table, not an IN list in the query's text: ClickHouse
// caps that text (max_query_size, 256 KiB by default), and 2000 quoted
// UUIDs, 80 KB, failed every verify of a user whose profile sets it lower
// (64 KiB: "Max query size exceeded").
const chChunk = 2000

// byIDChunk is how many ids one lookup by id alone takes. Each such lookup
// reads event_log's whole event_id column, so they are gathered across
// pages and sent as an external table (data, not query text, so
// max_query_size does not bound them): after a large loss, one scan per
// 100,000 missing events instead of one per chChunk.
var byIDChunk = 100_000 // a var for tests

// Verify compares the outbox rows in [Since, Until) with event_log, by event
// id. Missing: an outbox row whose event_log row is absent (looked up by id
// alone, so an event stored under another time still counts as present).
// NotInOutbox: an event_log row in the window whose id is not in the outbox
// at all. Neither side is loaded whole: outbox ids are paged, event_log ids
// streamed, and each chunk looked up on the other side.
func Verify(ctx context.Context, pool *pgxpool.Pool, ch driver.Conn, opts VerifyOptions) (VerifyReport, error) {
	if opts.Page <= 0 {
		opts.Page = 10000
	}
	rep := VerifyReport{Since: opts.Since, Until: opts.Until, MissingIDs: []string{}, NotInOutboxIDs: []string{}}
	// event_log keeps whole seconds: an event at 10:00:00.7 is stored at
	// 10:00:00, so the window there starts at the second Since falls in
	// (at 1970 for a zero Since: event_log holds nothing earlier). The
	// window's queries compare Unix seconds (toUInt32 of the column), not
	// the column with toDateTime(N): newer servers can take such a
	// constant through the partition key's month in a session_timezone
	// other than the column's and skip a part holding a row of the window
	// (ClickHouse issue 86654); a number goes through no time zone.
	lo := opts.Since.Unix()
	if lo < 0 {
		lo = 0
	}
	hi := opts.Until.Truncate(time.Second).Unix() + 1

	// byID gathers the ids not found in their own second, for lookups by
	// id alone; lookUp settles them.
	var byID []string
	letters := deadletter.New(pool, opts.Slot)
	lookUp := func() error {
		absent, err := absentByID(ctx, ch, byID)
		byID = byID[:0]
		if err != nil {
			return err
		}
		rep.Missing += int64(len(absent))
		rep.MissingIDs = appendUpTo(rep.MissingIDs, absent, opts.Show)
		if len(absent) > 0 {
			n, err := letters.Events(ctx, absent)
			if err != nil {
				return fmt.Errorf("look up missing events: %w", err)
			}
			rep.MissingDeadLettered += n
		}
		return nil
	}
	sc := NewScanner(pool, nil, opts.Since, opts.Until, opts.Page, 0, false).Filter(opts.RowFilter)
	for {
		page, err := sc.Next(ctx)
		if err != nil {
			return rep, err
		}
		if len(page) == 0 {
			break
		}
		rep.OutboxRows += int64(len(page))
		// Most events are stored under their own second: look there first,
		// each chunk within the seconds of its own rows (a bound on the
		// window's start alone would read the whole window again for each
		// chunk), then by id alone for the rest (byID).
		for start := 0; start < len(page); start += chChunk {
			part := page[start:min(start+chChunk, len(page))]
			ids := make([]string, len(part))
			for i, r := range part {
				ids[i] = r.ID
			}
			cond, ok := chunkSeconds(part)
			if !ok { // no row at a finite time: none is in event_log by its time
				byID = append(byID, ids...)
				continue
			}
			a, err := absentFromEventLog(ctx, ch, ids, cond)
			if err != nil {
				return rep, err
			}
			byID = append(byID, a...)
		}
		if len(byID) >= byIDChunk {
			if err := lookUp(); err != nil {
				return rep, err
			}
		}
	}
	if err := lookUp(); err != nil {
		return rep, err
	}
	rep.Found = rep.OutboxRows - rep.Missing

	// FINAL shows each event once even before ClickHouse merged duplicates.
	rows, err := ch.Query(ctx, fmt.Sprintf("SELECT toString(event_id) FROM %s FINAL WHERE toUInt32(event_date_time) >= %d AND toUInt32(event_date_time) < %d", sink.Table, lo, hi))
	if err != nil {
		return rep, fmt.Errorf("read %s ids: %w", sink.Table, err)
	}
	defer rows.Close()
	chunk := make([]string, 0, opts.Page)
	check := func() error {
		gone, err := absentFromOutbox(ctx, pool, chunk)
		if err != nil {
			return err
		}
		rep.NotInOutbox += int64(len(gone))
		rep.NotInOutboxIDs = appendUpTo(rep.NotInOutboxIDs, gone, opts.Show)
		chunk = chunk[:0]
		return nil
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return rep, fmt.Errorf("read %s ids: %w", sink.Table, err)
		}
		rep.EventLogRows++
		if chunk = append(chunk, id); len(chunk) == opts.Page {
			if err := check(); err != nil {
				return rep, err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return rep, fmt.Errorf("read %s ids: %w", sink.Table, err)
	}
	if len(chunk) > 0 {
		if err := check(); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// chunkSeconds is the condition on event_log's seconds that holds the rows
// of part, which come in event_date_time order: from the second of its
// first row at a finite time to that of its last. Rows at ±infinity are
// in no second (they are dead letters); false when part has no other.
func chunkSeconds(part []Record) (string, bool) {
	first, last := -1, -1
	for i, r := range part {
		if r.Time.Valid && r.Time.InfinityModifier == pgtype.Finite {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	if first < 0 {
		return "", false
	}
	lo := max(part[first].Time.Time.Unix(), 0)
	hi := max(part[last].Time.Time.Unix(), 0)
	return fmt.Sprintf("toUInt32(event_date_time) >= %d AND toUInt32(event_date_time) <= %d AND ", lo, hi), true
}

// absentByID returns the ids, in their order, that event_log does not
// hold under any time, byIDChunk at a time.
func absentByID(ctx context.Context, ch driver.Conn, ids []string) ([]string, error) {
	var absent []string
	for start := 0; start < len(ids); start += byIDChunk {
		part := ids[start:min(start+byIDChunk, len(ids))]
		have, err := idsIn(ctx, ch, part, "")
		if err != nil {
			return nil, err
		}
		absent = appendMissing(absent, part, have)
	}
	return absent, nil
}

// idsIn returns which of ids event_log holds under the condition cond (a
// prefix ending in AND, or ""). The ids go as an external table: data,
// not query text, so max_query_size does not bound them.
func idsIn(ctx context.Context, ch driver.Conn, ids []string, cond string) (map[string]bool, error) {
	t, err := ext.NewTable("cdc_verify_ids", ext.Column("id", "UUID"))
	if err != nil {
		return nil, fmt.Errorf("look up %d event ids in %s: %w", len(ids), sink.Table, err)
	}
	for _, id := range ids {
		if err := t.Append(id); err != nil {
			return nil, fmt.Errorf("look up event id %s in %s: %w", id, sink.Table, err)
		}
	}
	qctx := clickhouse.Context(ctx, clickhouse.WithExternalTable(t))
	return eventIDs(qctx, ch, "SELECT DISTINCT toString(event_id) FROM "+sink.Table+" WHERE "+cond+"event_id IN cdc_verify_ids", len(ids))
}

// appendMissing appends to absent the ids of part, in their order, that
// have lacks.
func appendMissing(absent, part []string, have map[string]bool) []string {
	for _, id := range part {
		if !have[id] {
			absent = append(absent, id)
		}
	}
	return absent
}

// eventIDs runs query, which selects event ids as text, and returns them.
func eventIDs(ctx context.Context, ch driver.Conn, query string, n int) (map[string]bool, error) {
	rows, err := ch.Query(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("look up %d event ids in %s: %w", n, sink.Table, err)
	}
	defer rows.Close()
	have := make(map[string]bool, n)
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("look up event ids in %s: %w", sink.Table, err)
		}
		have[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up event ids in %s: %w", sink.Table, err)
	}
	return have, nil
}

// absentFromEventLog returns the ids, in their order, that event_log does
// not hold under the condition cond (a prefix ending in AND).
func absentFromEventLog(ctx context.Context, ch driver.Conn, ids []string, cond string) ([]string, error) {
	var absent []string
	for start := 0; start < len(ids); start += chChunk {
		part := ids[start:min(start+chChunk, len(ids))]
		have, err := idsIn(ctx, ch, part, cond)
		if err != nil {
			return nil, err
		}
		absent = appendMissing(absent, part, have)
	}
	return absent, nil
}

// absentFromOutbox returns the ids, in their order, with no outbox row.
func absentFromOutbox(ctx context.Context, pool *pgxpool.Pool, ids []string) ([]string, error) {
	rows, err := pool.Query(ctx, `SELECT id::text FROM outbox WHERE id = ANY($1::uuid[])`, ids)
	if err != nil {
		return nil, fmt.Errorf("look up %d event ids in outbox: %w", len(ids), err)
	}
	defer rows.Close()
	have := make(map[string]bool, len(ids))
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("look up event ids in outbox: %w", err)
		}
		have[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up event ids in outbox: %w", err)
	}
	var gone []string
	for _, id := range ids {
		if !have[id] {
			gone = append(gone, id)
		}
	}
	return gone, nil
}

func appendUpTo(dst, src []string, limit int) []string {
	for _, s := range src {
		if len(dst) >= limit {
			break
		}
		dst = append(dst, s)
	}
	return dst
}
