package replication

import (
	"context"
	"encoding/binary"
	"runtime"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/sink"
)

// countSink holds, at each commit LSN, rows 1..n with the event of
// cheapEvent, and reads them back as ClickHouse does: with a sink.Reader.
// peak is the most heap in use it saw at the start of a read, after a
// collection: what the caller still held of the reads before.
type countSink struct {
	Sink
	stored map[pglogrepl.LSN]uint64
	peak   uint64
}

func (s *countSink) Written(_ context.Context, from, to pglogrepl.LSN) (*sink.Positions, error) {
	s.peak = max(s.peak, heapInUse())
	var r sink.Reader
	for lsn, n := range s.stored {
		if lsn < from || lsn >= to {
			continue
		}
		for seq := uint64(1); seq <= n; seq++ {
			r.Add(sink.Position{CommitLSN: lsn, Seq: seq}, sink.EventHash(cheapEvent(lsn, seq)))
		}
	}
	return r.Set(), nil
}

func cheapEvent(lsn pglogrepl.LSN, seq uint64) uuid.UUID {
	var id uuid.UUID
	binary.BigEndian.PutUint64(id[:8], uint64(lsn))
	binary.BigEndian.PutUint64(id[8:], seq)
	return id
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func eventRow(rel *decoder.Relation, id uuid.UUID) decoder.Message {
	return decoder.Message{Kind: decoder.KindInsert, Relation: rel,
		Values: []decoder.Value{{Kind: decoder.ValueText, Data: []byte(id.String())}}}
}

// A session that begins while several large streamed transactions are
// open — a restart, or the reconnect after a transaction was waited out —
// reads, at the first row of each, which of its rows an earlier session
// stored. Each transaction keeps that set until its commit, and the
// transactions are streamed interleaved, so all the sets live at once:
// they must cost about their runs, not an event per position read (32
// bytes for each of up to 512 Ki positions, 16 MiB a transaction), or
// memory grows with the number of such transactions, past every setting.
func TestStreamedRow_StoredSetsOfOpenTransactionsAreSmall(t *testing.T) {
	const txs, rows = 6, 600_000
	firsts := make([]pglogrepl.LSN, txs)
	s := &countSink{stored: map[pglogrepl.LSN]uint64{}}
	for i := range firsts {
		firsts[i] = pglogrepl.LSN(0x1000_0000 + i*0x100_0000)
		s.stored[firsts[i]] = rows
	}
	r := &Replicator{sink: s, log: zap.NewNop(), cfg: Config{BatchMaxRows: 1000, BatchMaxBytes: 1 << 20}}
	st := newStream(r, nil, 0x100, &sink.Positions{})
	st.startWAL = 0x9000_0000
	st.nextStatus = time.Now().Add(time.Hour) // no status: there is no connection
	rel := &decoder.Relation{Columns: []decoder.Column{{Name: "id"}}}

	before := heapInUse()
	for i, first := range firsts {
		tx := &streamedTx{xid: uint32(100 + i)}
		st.streams[tx.xid] = tx
		pos, stored, err := st.streamedRow(context.Background(), tx, first, eventRow(rel, cheapEvent(first, 1)))
		if err != nil {
			t.Fatal(err)
		}
		if !stored || pos != (sink.Position{CommitLSN: first, Seq: 1}) {
			t.Fatalf("transaction %d's first row: %v, stored %v; want %s#1, stored", i, pos, stored, first)
		}
	}
	held := int64(heapInUse()) - int64(before)
	const bound = 4 << 20
	if held > bound {
		t.Errorf("%d open streamed transactions hold %d MiB of stored positions (%d rows stored each), want at most %d MiB",
			txs, held>>20, rows, bound>>20)
	}

	// What the sets are for still holds: each row stored is skipped, with
	// its own event, and the first row not stored is not.
	for i, first := range firsts {
		tx := st.streams[uint32(100+i)]
		for seq := uint64(2); seq <= rows+1; seq++ {
			_, stored, err := st.streamedRow(context.Background(), tx, first, eventRow(rel, cheapEvent(first, seq)))
			if err != nil {
				t.Fatal(err)
			}
			if want := seq <= rows; stored != want {
				t.Fatalf("transaction %d, row %d: stored %v, want %v", i, seq, stored, want)
			}
		}
	}
	runtime.KeepAlive(st)
}

// A batch whose INSERT failed is checked against what the sink holds, one
// read per span of its commit LSNs. Rows of several large streamed
// transactions open at once, placed by their first rows far apart in the
// WAL, make as many spans, each read holding the events of up to 512 Ki
// positions (16 MiB): they must be let go one by one, not all kept until
// the last is read, or a retry during a ClickHouse outage holds 16 MiB a
// transaction, in each writer.
func TestUnstored_SpansReadOneAtATime(t *testing.T) {
	const spans, rows = 6, 600_000
	s := &countSink{stored: map[pglogrepl.LSN]uint64{}}
	r := &Replicator{sink: s, log: zap.NewNop()}
	rel := &decoder.Relation{Columns: []decoder.Column{{Name: "id"}}}
	row := func(lsn pglogrepl.LSN, seq uint64) sink.Row {
		return sink.Row{Relation: rel, Pos: sink.Position{CommitLSN: lsn, Seq: seq},
			Values: []decoder.Value{{Kind: decoder.ValueText, Data: []byte(cheapEvent(lsn, seq).String())}}}
	}
	b := &sink.Batch{}
	for i := range spans {
		lsn := pglogrepl.LSN(0x1000_0000 + i*2*spanGap)
		s.stored[lsn] = rows
		b.Rows = append(b.Rows, row(lsn, rows), row(lsn, rows+1))
	}
	before := heapInUse()
	rest, err := r.unstored(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if held := int64(s.peak) - int64(before); held > 8<<20 {
		t.Errorf("checking a retried batch of %d spans held %d MiB of earlier spans' positions at the last read, want at most 8 MiB", spans, held>>20)
	}
	if len(rest.Rows) != spans {
		t.Fatalf("%d rows left to write, want %d", len(rest.Rows), spans)
	}
	for _, row := range rest.Rows {
		if row.Pos.Seq != rows+1 {
			t.Errorf("row %s left to write; it is stored", row.Pos)
		}
	}
}
