package replication

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/eventcdc/cdc/decoder"
)

// A streamed transaction with a million subtransactions keeps at most
// maxCommittedXacts committed ones, and every aborted one, with their
// answers right.
func TestEndedXacts_BoundedByTheCommittedOnesKept(t *testing.T) {
	var e endedXacts
	const n = 1_000_000
	aborted := 0
	for xid := uint32(1); xid <= n; xid++ {
		committed := xid%1000 != 0
		if !committed {
			aborted++
		}
		e.put(xid, committed)
		if c, ok := e.get(xid); !ok || c != committed {
			t.Fatalf("get(%d) = %v, %v right after put(%v)", xid, c, ok, committed)
		}
		if len(e.m) > maxCommittedXacts+aborted {
			t.Fatalf("after %d xids the map holds %d, want at most %d committed + %d aborted", xid, len(e.m), maxCommittedXacts, aborted)
		}
	}
	for xid := uint32(1000); xid <= n; xid += 1000 {
		if c, ok := e.get(xid); !ok || c {
			t.Fatalf("aborted xid %d: get = %v, %v; want aborted, known", xid, c, ok)
		}
	}
	if c, ok := e.get(n - 1); !ok || !c {
		t.Fatalf("the last committed xid: get = %v, %v; want committed, known", c, ok)
	}
	if _, ok := e.get(2); ok {
		t.Fatal("xid 2, committed a million xids ago, is still remembered")
	}
	// Put again as it is looked up again: counted once.
	e.put(n-1, true)
	if e.committed > maxCommittedXacts {
		t.Fatalf("committed count %d over %d", e.committed, maxCommittedXacts)
	}
}

// A subtransaction's abort, streamed, drops it from its transaction's
// ended set: a transaction that rolls back a savepoint per row (Django's
// atomic() per item, most items failing) would otherwise hold one entry
// per savepoint until it ends. The transaction's own abort, its other
// subtransactions and other transactions are left alone.
func TestStreamAbort_ForgetsTheAbortedSubtransaction(t *testing.T) {
	abort := func(xid, sub uint32) []byte {
		return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32([]byte{'A'}, xid), sub)
	}
	tx := &streamedTx{xid: 7}
	other := &streamedTx{xid: 20}
	for _, x := range []uint32{8, 9, 10} {
		tx.ended.put(x, x != 8) // 8 aborted; 9, 10 committed
		other.ended.put(x, false)
	}
	s := &stream{dec: decoder.New(), streams: map[uint32]*streamedTx{7: tx, 20: other}}
	for _, sub := range []uint32{8, 9, 11} {
		if err := s.handleWAL(context.Background(), 0, abort(7, sub)); err != nil {
			t.Fatalf("stream abort of %d in 7: %v", sub, err)
		}
	}
	if len(tx.ended.m) != 1 || tx.ended.committed != 1 {
		t.Fatalf("ended set %v (%d committed) after the aborts of 8, 9 and 11; want only 10, committed", tx.ended.m, tx.ended.committed)
	}
	if c, ok := tx.ended.get(10); !ok || !c {
		t.Fatalf("subtransaction 10: get = %v, %v; want committed, known", c, ok)
	}
	if len(other.ended.m) != 3 || s.streams[7] != tx {
		t.Fatalf("another transaction's set %v, the transaction %v: want both untouched", other.ended.m, s.streams[7])
	}
}
