package decoder

import (
	"encoding/binary"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// recordedFile holds real pgoutput messages; record_test.go (build tag
// record) says how it is made.
const recordedFile = "testdata/pgoutput.bin"

// maybeRecord re-records recordedFile first when built with -tags record
// and run with -record.
var maybeRecord = func(*testing.T) {}

// recordedOID is the outbox table's OID in the recording database.
const recordedOID = 16414

// recordedTime is a commit time of the recording, 2026-11-25 12:16:12 UTC
// plus micros.
func recordedTime(micros int) time.Time {
	return time.Date(2026, 11, 25, 12, 16, 12, micros*1000, time.UTC)
}

// recordedOutbox is the outbox table as sql/postgres.sql creates it,
// with ADD COLUMN tenant text when withTenant.
func recordedOutbox(withTenant bool) *Relation {
	rel := outboxRelation(recordedOID)
	if withTenant {
		rel.Columns = append(rel.Columns, Column{Name: "tenant", TypeOID: oidText})
	}
	return rel
}

// recordedStream is what testdata/pgoutput.bin decodes to, message by
// message, with the pgoutput type byte each was sent as. See record_test.go
// for the statements that produced it.
func recordedStream() []struct {
	typ  byte
	want Message
} {
	v1, v2 := recordedOutbox(false), recordedOutbox(true)
	t1, t2, t3, t4, t5 := recordedTime(361503), recordedTime(362349),
		recordedTime(362617), recordedTime(363470), recordedTime(367554)
	return []struct {
		typ  byte
		want Message
	}{
		// INSERT of two rows in one transaction, the second without traceparent.
		{'B', Message{Kind: KindBegin, LSN: 0x1D5CEE8, CommitTime: t1, Xid: 737}},
		{'R', Message{Kind: KindRelation, Relation: v1}},
		{'I', Message{Kind: KindInsert, Relation: v1, Size: 198, Values: []Value{
			text("0195a8e2-7c3d-7a10-9b4e-3f2d1c0b0a01"),
			text("order.created"),
			text("2025-03-01 12:00:00.123456+00"),
			text("production"),
			text(`{"order_id": 42, "customer": "c-17", "total": "19.99"}`),
			text("1"),
			text("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
		}}},
		{'I', Message{Kind: KindInsert, Relation: v1, Size: 114, Values: []Value{
			text("0195a8e2-7c3d-7a10-9b4e-3f2d1c0b0a02"),
			text("order.paid"),
			text("2025-03-01 12:00:01+00"),
			text("production"),
			text(`{"order_id": 42, "amount": "19.99"}`),
			text("1"),
			null,
		}}},
		{'C', Message{Kind: KindCommit, LSN: 0x1D5CEE8, EndLSN: 0x1D5CF18, CommitTime: t1}},
		// UPDATE
		{'B', Message{Kind: KindBegin, LSN: 0x1D5D008, CommitTime: t2, Xid: 738}},
		{'U', Message{Kind: KindIgnored, Relation: v1}},
		{'C', Message{Kind: KindCommit, LSN: 0x1D5D008, EndLSN: 0x1D5D038, CommitTime: t2}},
		// DELETE
		{'B', Message{Kind: KindBegin, LSN: 0x1D5D088, CommitTime: t3, Xid: 739}},
		{'D', Message{Kind: KindIgnored, Relation: v1}},
		{'C', Message{Kind: KindCommit, LSN: 0x1D5D088, EndLSN: 0x1D5D0B8, CommitTime: t3}},
		// TRUNCATE: its catalog changes invalidate pgoutput's cache entry
		// for the table, so the (unchanged) relation is announced again.
		{'B', Message{Kind: KindBegin, LSN: 0x1D5DF78, CommitTime: t4, Xid: 740}},
		{'R', Message{Kind: KindRelation, Relation: v1}},
		{'T', Message{Kind: KindIgnored, Relation: v1}},
		{'C', Message{Kind: KindCommit, LSN: 0x1D5DF78, EndLSN: 0x1D5E158, CommitTime: t4}},
		// ALTER TABLE ADD COLUMN (xid 741, no rows: not sent), then INSERT
		// with the new shape.
		{'B', Message{Kind: KindBegin, LSN: 0x1D5E6B8, CommitTime: t5, Xid: 742}},
		{'R', Message{Kind: KindRelation, Relation: v2}},
		{'I', Message{Kind: KindInsert, Relation: v2, Size: 120, Values: []Value{
			text("0195a8e2-7c3d-7a10-9b4e-3f2d1c0b0a03"),
			text("order.shipped"),
			text("2025-03-02 08:30:00+00"),
			text("production"),
			text(`{"order_id": 42, "carrier": "dhl"}`),
			text("1"),
			null,
			text("acme"),
		}}},
		{'C', Message{Kind: KindCommit, LSN: 0x1D5E6B8, EndLSN: 0x1D5E6E8, CommitTime: t5}},
	}
}

func TestRecordedStream(t *testing.T) {
	maybeRecord(t)
	msgs := readRecorded(t)
	want := recordedStream()
	if len(msgs) != len(want) {
		t.Fatalf("%d recorded messages, want %d", len(msgs), len(want))
	}
	d := New()
	var got []Message
	for i, data := range msgs {
		m, err := d.Decode(data)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if data[0] != want[i].typ {
			t.Errorf("message %d is %q, want %q", i, data[0], want[i].typ)
		}
		if !reflect.DeepEqual(m, want[i].want) {
			t.Errorf("message %d:\ngot  %s\nwant %s", i, describe(m), describe(want[i].want))
		}
		got = append(got, m)
	}
	if t.Failed() {
		return
	}
	// Inserts share their transaction's announced relation; every
	// Relation message brings a new one and leaves the older ones as
	// they were.
	if got[2].Relation != got[1].Relation || got[3].Relation != got[1].Relation {
		t.Error("inserts do not share the relation announced before them")
	}
	if got[12].Relation == got[1].Relation || got[16].Relation == got[12].Relation {
		t.Error("a relation message reused the previous *Relation")
	}
	if got[17].Relation != got[16].Relation || d.Relation(recordedOID) != got[16].Relation {
		t.Error("insert after ALTER TABLE does not use the new relation")
	}
	if !reflect.DeepEqual(got[2].Relation, recordedOutbox(false)) {
		t.Errorf("first relation changed after re-announcement: %+v", got[2].Relation)
	}
	if i := got[17].Relation.Index("traceparent"); i != 6 || got[17].Values[i].Kind != ValueNull {
		t.Errorf("traceparent at %d, want 6 and NULL", i)
	}
}

// readRecorded returns the messages in testdata/pgoutput.bin: each is a
// 4-byte big-endian length followed by that many bytes of WALData.
func readRecorded(tb testing.TB) [][]byte {
	tb.Helper()
	b, err := os.ReadFile(recordedFile)
	if err != nil {
		tb.Fatal(err)
	}
	var msgs [][]byte
	for len(b) > 0 {
		if len(b) < 4 || int(binary.BigEndian.Uint32(b)) > len(b)-4 {
			tb.Fatalf("%s: corrupt length prefix after %d messages", recordedFile, len(msgs))
		}
		n := int(binary.BigEndian.Uint32(b))
		msgs = append(msgs, b[4:4+n])
		b = b[4+n:]
	}
	return msgs
}

// describe renders a message fully and readably, for logs and failure output.
func describe(m Message) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s", m.Kind)
	if m.LSN != 0 || m.EndLSN != 0 {
		fmt.Fprintf(&b, " lsn=%s end=%s", m.LSN, m.EndLSN)
	}
	if !m.CommitTime.IsZero() {
		fmt.Fprintf(&b, " time=%s", m.CommitTime.Format("2006-01-02T15:04:05.999999Z07:00"))
	}
	if m.Xid != 0 {
		fmt.Fprintf(&b, " xid=%d", m.Xid)
	}
	if r := m.Relation; r != nil {
		fmt.Fprintf(&b, " rel=%d %s.%s %+v", r.ID, r.Namespace, r.Name, r.Columns)
	}
	for i, v := range m.Values {
		fmt.Fprintf(&b, "\n  [%d] %c nil=%t %q", i, v.Kind, v.Data == nil, v.Data)
	}
	if m.Size != 0 {
		fmt.Fprintf(&b, "\n  size=%d", m.Size)
	}
	return b.String()
}
