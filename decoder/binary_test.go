package decoder

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func be16(v int16) []byte { return binary.BigEndian.AppendUint16(nil, uint16(v)) }
func be32(v int32) []byte { return binary.BigEndian.AppendUint32(nil, uint32(v)) }
func be64(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

// The text of binary values, as PostgreSQL prints them with TimeZone UTC
// and DateStyle ISO (replication's TestBinaryValuesDecodeToPostgreSQLsText
// compares thousands more against a real server), and the malformed ones.
func TestAppendText(t *testing.T) {
	const day = 86400 * 1e6 // microseconds
	for _, tc := range []struct {
		name string
		oid  uint32
		in   []byte
		want string
		bad  string
	}{
		{"true", oidBool, []byte{1}, "t", ""},
		{"false", oidBool, []byte{0}, "f", ""},
		{"bool 2", oidBool, []byte{2}, "", "is not a bool"},
		{"bool of 2 bytes", oidBool, []byte{0, 1}, "", "is not a bool"},
		{"int2 min", oidInt2, be16(math.MinInt16), "-32768", ""},
		{"int4 max", oidInt4, be32(math.MaxInt32), "2147483647", ""},
		{"int4 of 8 bytes", oidInt4, be64(1), "", "is not 4 bytes"},
		{"int8 min", oidInt8, be64(math.MinInt64), "-9223372036854775808", ""},
		{"int2 of 1 byte", oidInt2, []byte{1}, "", "is not 2 bytes"},
		{"int8 of 4 bytes", oidInt8, be32(1), "", "is not 8 bytes"},
		{"text", oidText, []byte("ünï ✓"), "ünï ✓", ""},
		{"empty varchar", oidVarchar, []byte{}, "", ""},
		{"char(5)", oidBpchar, []byte("ab   "), "ab   ", ""},
		{"json as sent", oidJSON, []byte(`{"a" : 1}`), `{"a" : 1}`, ""},
		{"jsonb", oidJSONB, append([]byte{1}, `{"a": 1}`...), `{"a": 1}`, ""},
		{"jsonb version 2", oidJSONB, append([]byte{2}, `{}`...), "", "is not jsonb of version 1"},
		{"jsonb empty", oidJSONB, []byte{}, "", "is not jsonb of version 1"},
		{"uuid", oidUUID, []byte{0x01, 0x95, 0xa8, 0xe2, 0x7c, 0x3d, 0x7a, 0x10, 0x9b, 0x4e, 0x3f, 0x2d, 0x1c, 0x0b, 0x0a, 0xff}, "0195a8e2-7c3d-7a10-9b4e-3f2d1c0b0aff", ""},
		{"uuid of 15 bytes", oidUUID, make([]byte, 15), "", "is not 16 bytes"},
		{"date epoch", oidDate, be32(0), "2000-01-01", ""},
		{"date day before", oidDate, be32(-1), "1999-12-31", ""},
		{"date 1 BC", oidDate, be32(-730120), "0001-12-31 BC", ""},
		{"date infinity", oidDate, be32(math.MaxInt32), "infinity", ""},
		{"date -infinity", oidDate, be32(math.MinInt32), "-infinity", ""},
		{"date of 8 bytes", oidDate, be64(0), "", "is not 4 bytes"},
		{"timestamptz epoch", oidTimestamptz, be64(0), "2000-01-01 00:00:00+00", ""},
		{"timestamptz a microsecond before", oidTimestamptz, be64(-1), "1999-12-31 23:59:59.999999+00", ""},
		{"timestamptz trailing zeros", oidTimestamptz, be64(1_120_000), "2000-01-01 00:00:01.12+00", ""},
		{"timestamptz one microsecond", oidTimestamptz, be64(1), "2000-01-01 00:00:00.000001+00", ""},
		{"timestamp has no zone", oidTimestamp, be64(day + 3_600_000_000), "2000-01-02 01:00:00", ""},
		{"timestamptz 1 BC", oidTimestamptz, be64(-730120*day + 500_000), "0001-12-31 00:00:00.5+00 BC", ""},
		{"timestamptz year 10000", oidTimestamptz, be64(2921940 * day), "10000-01-01 00:00:00+00", ""},
		{"timestamptz infinity", oidTimestamptz, be64(math.MaxInt64), "infinity", ""},
		{"timestamp -infinity", oidTimestamp, be64(math.MinInt64), "-infinity", ""},
		{"timestamptz of 4 bytes", oidTimestamptz, be32(0), "", "is not 8 bytes"},
		{"numeric", 1700, []byte{0, 0}, "", "of a type cdc reads only as text"},
	} {
		got, bad := appendText([]byte("prefix:"), tc.oid, tc.in)
		if bad != tc.bad || tc.bad == "" && string(got) != "prefix:"+tc.want {
			t.Errorf("%s: appendText = %q, %q; want %q, %q", tc.name, got, bad, "prefix:"+tc.want, tc.bad)
		}
		if bound, ok := textBound(tc.oid, len(tc.in)); tc.bad == "" && (!ok || len(tc.want) > bound) {
			t.Errorf("%s: %q is longer than its bound %d, %v", tc.name, tc.want, bound, ok)
		}
	}
}

// No value's text is longer than textBound says: detach sizes a row's
// buffer by it.
func TestTextBound(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	values := func(n int, gen func() []byte) [][]byte {
		var out [][]byte
		for i := 0; i < n; i++ {
			out = append(out, gen())
		}
		return out
	}
	cases := map[uint32][][]byte{
		oidInt2: values(1000, func() []byte { return be16(int16(r.Uint32())) }),
		oidInt4: values(1000, func() []byte { return be32(int32(r.Uint32())) }),
		oidInt8: values(1000, func() []byte { return be64(int64(r.Uint64())) }),
		// Dates and timestamps over PostgreSQL's whole range: 4714-11-24
		// BC to 5874897-12-31 (days -2451545 to 2145031948 from 2000-01-01)
		// and to 294276-12-31.
		oidDate:        values(1000, func() []byte { return be32(int32(r.Int64N(2145031948+2451545+1) - 2451545)) }),
		oidTimestamptz: values(1000, func() []byte { return be64(r.Int64N(9223371331200000000) - 211813488000000000) }),
		oidTimestamp:   values(1000, func() []byte { return be64(r.Int64N(9223371331200000000) - 211813488000000000) }),
	}
	cases[oidDate] = append(cases[oidDate], be32(-2451545), be32(2145031948))
	cases[oidTimestamptz] = append(cases[oidTimestamptz], be64(-211813488000000000), be64(9223371331199999999))
	for oid, vs := range cases {
		for _, v := range vs {
			text, bad := appendText(nil, oid, v)
			bound, _ := textBound(oid, len(v))
			if bad != "" || len(text) > bound {
				t.Fatalf("oid %d: %x prints %q (%s), bound %d", oid, v, text, bad, bound)
			}
		}
	}
	if ReadsBinary(1700) || !ReadsBinary(oidTimestamptz) {
		t.Error("ReadsBinary: numeric read, or timestamptz not")
	}
}

// A binary value the decoder cannot print ends the decoding with a
// BinaryError naming the column; the rows before it are not affected.
func TestDecode_BinaryValueOfAnUnknownType(t *testing.T) {
	d := New()
	rel := outboxRelation(16385)
	rel.Columns = append(rel.Columns, Column{Name: "price", TypeOID: 1700})
	if _, err := d.Decode(relationMsg(rel)); err != nil {
		t.Fatal(err)
	}
	row := []Value{text("0195a8e2-7c3d-7a10-9b4e-3f2d1c0b0a01"), text("t"), text("2025-03-01 12:00:00+00"), text("prod"), text("{}"), text("1"), null}
	for _, tc := range []struct {
		name string
		last Value
		want string
	}{
		{"numeric in binary", Value{Kind: ValueBinary, Data: []byte{0, 0, 0, 0, 0, 0, 0, 0}}, `decode insert: column "price" (type oid 1700): binary value of a type cdc reads only as text`},
		{"malformed timestamptz", Value{Kind: ValueBinary, Data: []byte{1}}, `decode insert: column "event_date_time" (type oid 1184): binary value is not 8 bytes`},
	} {
		vals := append(append([]Value(nil), row...), tc.last)
		if tc.name == "malformed timestamptz" {
			vals[2], vals[7] = tc.last, text("1.5")
		}
		_, err := d.Decode(insertMsg(16385, vals...))
		var be *BinaryError
		if !errors.As(err, &be) || err.Error() != tc.want {
			t.Errorf("%s: Decode = %v; want the BinaryError %q", tc.name, err, tc.want)
		}
	}
	ok := append(append([]Value(nil), row...), text("1.5"))
	ok[2] = Value{Kind: ValueBinary, Data: be64(0)}
	m, err := d.Decode(insertMsg(16385, ok...))
	if err != nil || string(m.Values[2].Data) != "2000-01-01 00:00:00+00" || m.Values[2].Kind != ValueText || m.Size != 36+1+22+4+2+1+3 {
		t.Fatalf("Decode after the errors = %+v, %v", m, err)
	}
}

// civil agrees with Go's proleptic Gregorian calendar on every day from
// before PostgreSQL's first date to past its last, sampled densely around
// the era and century boundaries.
func TestCivil(t *testing.T) {
	check := func(days int64) {
		y, m, d := civil(days)
		want := time.Unix(pgEpochUnix+days*secondsDay, 0).UTC()
		if y != int64(want.Year()) || m != int(want.Month()) || d != want.Day() {
			t.Fatalf("civil(%d) = %d-%02d-%02d, want %s", days, y, m, d, want.Format("2006-01-02"))
		}
	}
	for days := int64(-2451545 - 400); days < 2147483494+400; days += 997 {
		check(days)
	}
	for _, centre := range []int64{0, -730120, -730485, 36524, -146097, 146097, 2921940} {
		for days := centre - 800; days <= centre+800; days++ {
			check(days)
		}
	}
}
