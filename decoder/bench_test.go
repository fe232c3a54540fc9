package decoder

import (
	"testing"

	"github.com/eventcdc/cdc/internal/testenv"
)

// benchmarkInsert is an outbox insert as pgoutput sends it in text mode,
// with a 302-byte event_context, like a typical order event.
func benchmarkInsert() []byte {
	eventContext := `{"order_id":"ord_01HQ3Z9K7M2N4P6R8T0V","customer_id":"cus_8f3a2b1c","currency":"EUR",` +
		`"total":"149.90","items":[{"sku":"SKU-1042","qty":2,"price":"49.95"},{"sku":"SKU-2210","qty":1,"price":"50.00"}],` +
		`"shipping":{"method":"express","country":"DE"},"locale":"de-DE","source":"web","campaign":"spring-sale"}`
	return insertMsg(16385,
		text("0195a8e2-7c3d-7a10-9b4e-3f2d1c0b0a01"),
		text("order.created"),
		text("2025-03-01 12:00:00.123456+00"),
		text("production"),
		text(eventContext),
		text("1"),
		text("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
	)
}

func BenchmarkDecodeInsert(b *testing.B) {
	d := primedDecoder(b)
	msg := benchmarkInsert()
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	defer testenv.PerEvent(b, 1)()
	for b.Loop() {
		if _, err := d.Decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeInsertBinary decodes the same insert as pgoutput sends it
// with binary values (what cdc asks for): the uuid, the timestamptz and
// the bigint in their binary forms, printed to text by the decoder.
func BenchmarkDecodeInsertBinary(b *testing.B) {
	d := primedDecoder(b)
	plain := primedDecoder(b)
	ref, err := plain.Decode(benchmarkInsert())
	if err != nil {
		b.Fatal(err)
	}
	id := []byte{0x01, 0x95, 0xa8, 0xe2, 0x7c, 0x3d, 0x7a, 0x10, 0x9b, 0x4e, 0x3f, 0x2d, 0x1c, 0x0b, 0x0a, 0x01}
	vals := []Value{{Kind: ValueBinary, Data: id}, ref.Values[1],
		{Kind: ValueBinary, Data: be64(794145600123456)}, ref.Values[3], ref.Values[4],
		{Kind: ValueBinary, Data: be64(1)}, ref.Values[6]}
	msg := insertMsg(16385, vals...)
	m, err := d.Decode(msg)
	if err != nil {
		b.Fatal(err)
	}
	for i := range m.Values {
		if string(m.Values[i].Data) != string(ref.Values[i].Data) {
			b.Fatalf("column %d: %q, want %q as in text", i, m.Values[i].Data, ref.Values[i].Data)
		}
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	defer testenv.PerEvent(b, 1)()
	for b.Loop() {
		if _, err := d.Decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeBeginCommit(b *testing.B) {
	d := New()
	begin, commit := beginMsg(0x16B3748, commitTime, 777), commitMsg(0x16B3748, 0x16B3778, commitTime)
	b.ReportAllocs()
	defer testenv.PerEvent(b, 1)()
	for b.Loop() {
		if _, err := d.Decode(begin); err != nil {
			b.Fatal(err)
		}
		if _, err := d.Decode(commit); err != nil {
			b.Fatal(err)
		}
	}
}
