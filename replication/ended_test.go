package replication

import "testing"

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
