package decoder

import (
	"bytes"
	"maps"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to a decoder that knows the outbox
// relations, seeded with every recorded and hand-built message. Decode must
// never panic, and whatever it accepts must be internally consistent and
// independent of the input buffer.
//
//	go test -run x -fuzz FuzzDecode -fuzztime 60s ./decoder/
func FuzzDecode(f *testing.F) {
	for _, msg := range readRecorded(f) {
		f.Add(msg)
	}
	for _, tc := range allCases() {
		f.Add(tc.data)
	}
	f.Add(benchmarkInsert())
	primed := primedDecoder(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		// A Relation input changes the cache: start each run from a copy.
		d := &Decoder{rels: maps.Clone(primed.rels)}
		m, err := d.Decode(data)
		if err != nil {
			if m.Kind != 0 {
				t.Fatalf("error %v with a message of kind %s", err, m.Kind)
			}
			return
		}
		switch m.Kind {
		case KindInsert:
			checkInsert(t, m, data)
		case KindRelation:
			if d.Relation(m.Relation.ID) != m.Relation {
				t.Fatal("decoded relation not cached")
			}
		}
	})
}

func checkInsert(t *testing.T, m Message, data []byte) {
	if len(m.Values) != len(m.Relation.Columns) {
		t.Fatalf("%d values for %d columns", len(m.Values), len(m.Relation.Columns))
	}
	size := 0
	kept := make([][]byte, len(m.Values))
	for i, v := range m.Values {
		hasData := v.Kind == ValueText || v.Kind == ValueBinary
		if hasData != (v.Data != nil) {
			t.Fatalf("value %d of kind %c: data nil = %t", i, v.Kind, v.Data == nil)
		}
		size += len(v.Data)
		kept[i] = bytes.Clone(v.Data)
	}
	if size != m.Size {
		t.Fatalf("Size %d, values hold %d bytes", m.Size, size)
	}
	for i := range data {
		data[i] ^= 0xFF
	}
	for i, v := range m.Values {
		if !bytes.Equal(v.Data, kept[i]) {
			t.Fatalf("value %d changed with the input buffer", i)
		}
	}
}
