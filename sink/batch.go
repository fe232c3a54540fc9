// Package sink stores batches of outbox rows in ClickHouse, the one store cdc
// writes today. It knows ClickHouse's types and errors; what it accepts —
// decoded rows with their WAL positions — is store-neutral, so another store
// can implement the same Write and Written behind the pipeline's interface.
package sink

import (
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/eventcdc/cdc/decoder"
)

// Position is a row's place in the WAL: the commit LSN of its transaction
// and its ordinal within that transaction (from 1). Positions order rows
// exactly as PostgreSQL replays them, so a replay can skip what is stored.
type Position struct {
	CommitLSN pglogrepl.LSN
	Seq       uint64
}

// LastLSN is the greatest LSN: Written(ctx, from, LastLSN) reads every
// position from from on.
const LastLSN = pglogrepl.LSN(1<<64 - 1)

func (p Position) String() string { return fmt.Sprintf("%s#%d", p.CommitLSN, p.Seq) }

// Less orders positions as the WAL does.
func (p Position) Less(q Position) bool {
	return p.CommitLSN < q.CommitLSN || (p.CommitLSN == q.CommitLSN && p.Seq < q.Seq)
}

// Row is one outbox insert.
type Row struct {
	Relation   *decoder.Relation
	Values     []decoder.Value // aligned with Relation.Columns
	Pos        Position
	CommitTime time.Time
	Size       int // bytes of Values, for batch accounting
}

// Batch is what one flush hands to the sink.
type Batch struct {
	Rows  []Row
	Bytes int
	// End is the WAL position the batch makes durable once stored: the end
	// of the last transaction received in full when it was sealed.
	End pglogrepl.LSN
}

// Part returns a batch of rows, some of b's (those a failed or broken
// INSERT of b did not store), ending where b does: storing it makes b's
// End as durable as storing b.
func (b *Batch) Part(rows []Row) *Batch {
	part := &Batch{End: b.End, Rows: rows}
	for i := range rows {
		part.Bytes += rows[i].Size
	}
	return part
}

// Footprint estimates the memory a batch holds while ClickHouse.Write
// inserts it: the decoded values, plus the client's three copies of the
// block being sent (column buffers, encoded and compressed block). Rows are
// sent in blocks of at most blockBytes, and a row larger than that is a
// block of its own (write), so a batch of one 10 MiB event holds it about
// four times.
func (b *Batch) Footprint() int {
	largest := 0
	for i := range b.Rows {
		largest = max(largest, b.Rows[i].Size)
	}
	return b.Bytes + 3*max(blockBytes, largest)
}

// InsertBudget is the memory the writer may give INSERTs in flight: per
// INSERT, a full batch and its block copies. Concurrent INSERTs stay within
// it, so a batch of ordinary events overlaps another while events of many
// MB go one at a time.
func InsertBudget(inserts, batchMaxBytes int) int {
	return inserts * (batchMaxBytes + 3*blockBytes)
}

// Rejected is a row the store refused for its content, with the reason.
// Such rows are set aside (dead letters) instead of stopping the stream.
type Rejected struct {
	Row Row
	Err error
}
