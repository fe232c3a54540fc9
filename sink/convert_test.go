package sink

import (
	"bytes"
	"errors"
	"fmt"
	"math/big"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	chgo "github.com/ClickHouse/ch-go/proto"
	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
	chproto "github.com/ClickHouse/clickhouse-go/v2/lib/proto"
	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/eventcdc/cdc/decoder"
)

func text(s string) decoder.Value { return decoder.Value{Kind: decoder.ValueText, Data: []byte(s)} }

var null = decoder.Value{Kind: decoder.ValueNull}

// cellFor is fullDates.cellFor: the cells of a server whose Date holds
// every day, as the tests of conversion want them.
func cellFor(chType string) cell { return fullDates.cellFor(chType) }

func TestCellFor(t *testing.T) {
	const composite = ": make the event_log column a String (json arrives as JSON text)"
	tests := []struct {
		typ     string
		in      decoder.Value
		want    any
		wantErr string
	}{
		{typ: "String", in: text(`{"a":1}`), want: `{"a":1}`},
		{typ: "String", in: null, want: ""},
		{typ: "UUID", in: text("3f2a1e3c-1f3a-4a8e-9d2c-0a1b2c3d4e5f"), want: uuid.MustParse("3f2a1e3c-1f3a-4a8e-9d2c-0a1b2c3d4e5f")},
		{typ: "UUID", in: text("nope"), wantErr: `"nope" is not a UUID`},
		{typ: "DateTime", in: text("2026-11-25 12:03:16.123456+00"), want: time.Date(2026, 11, 25, 12, 3, 16, 0, time.UTC)},
		{typ: "DateTime", in: text("2026-11-25 14:03:16+02"), want: time.Date(2026, 11, 25, 12, 3, 16, 0, time.UTC)},
		{typ: "DateTime", in: text("2026-11-25 12:03:16+05:30"), want: time.Date(2026, 11, 25, 6, 33, 16, 0, time.UTC)},
		{typ: "DateTime", in: text("2026-11-25 22:03:16+10"), want: time.Date(2026, 11, 25, 12, 3, 16, 0, time.UTC)}, // not +00: not UTC
		{typ: "DateTime", in: text("2026-11-25 02:03:16-10"), want: time.Date(2026, 11, 25, 12, 3, 16, 0, time.UTC)},
		{typ: "DateTime('UTC')", in: text("2026-11-25 12:03:16"), want: time.Date(2026, 11, 25, 12, 3, 16, 0, time.UTC)},
		{typ: "DateTime", in: text("1969-12-31 23:59:59+00"), wantErr: `"1969-12-31 23:59:59+00" is outside DateTime's range 1970-01-01 to 2106-02-06`},
		{typ: "DateTime", in: text("infinity"), wantErr: `"infinity" is not a timestamp`},
		{typ: "DateTime", in: text("2026-02-30 10:00:00+00"), wantErr: `"2026-02-30 10:00:00+00" is not a timestamp`},
		{typ: "DateTime", in: text("2106-02-08 00:00:00+00"), wantErr: `"2106-02-08 00:00:00+00" is outside DateTime's range 1970-01-01 to 2106-02-06`},
		{typ: "DateTime", in: text("2106-02-07 00:00:00+00"), wantErr: `"2106-02-07 00:00:00+00" is outside DateTime's range 1970-01-01 to 2106-02-06`},
		{typ: "DateTime", in: text("2106-02-06 23:59:59+00"), want: time.Date(2106, 2, 6, 23, 59, 59, 0, time.UTC)},
		{typ: "DateTime64(6)", in: text("2026-11-25 12:03:16.123456+00"), want: time.Date(2026, 11, 25, 12, 3, 16, 123456000, time.UTC)},
		{typ: "DateTime64(3, 'UTC')", in: text("1900-01-01 02:00:00.5+02"), want: time.Date(1900, 1, 1, 0, 0, 0, 500000000, time.UTC)},
		{typ: "DateTime64(3)", in: text("1899-12-31 23:59:59+00"), wantErr: `"1899-12-31 23:59:59+00" is outside DateTime64's range 1900-01-01 to 2262-04-10`},
		{typ: "DateTime64(3)", in: text("2262-04-11 00:00:00+00"), wantErr: `"2262-04-11 00:00:00+00" is outside DateTime64's range 1900-01-01 to 2262-04-10`},
		{typ: "DateTime64(3)", in: null, want: time.Unix(0, 0)},
		{typ: "DateTime", in: text("2026-11-25 12:03:16.5+00"), want: time.Date(2026, 11, 25, 12, 3, 16, 0, time.UTC)},
		{typ: "DateTime", in: text("2026-11-25 12:03:16.+00"), wantErr: `"2026-11-25 12:03:16.+00" is not a timestamp`},
		{typ: "DateTime", in: text("2026/11-25 12:03:16+00"), wantErr: `"2026/11-25 12:03:16+00" is not a timestamp`}, // one separator wrong
		{typ: "DateTime", in: text("2026-11/25 12:03:16+00"), wantErr: `"2026-11/25 12:03:16+00" is not a timestamp`}, // one separator wrong
		{typ: "DateTime", in: text("2026-11-25T12:03:16+00"), wantErr: `"2026-11-25T12:03:16+00" is not a timestamp`}, // one separator wrong
		{typ: "DateTime", in: text("2026-11-25 12.03:16+00"), wantErr: `"2026-11-25 12.03:16+00" is not a timestamp`}, // one separator wrong
		{typ: "DateTime", in: text("2026-11-25 12:03.16+00"), wantErr: `"2026-11-25 12:03.16+00" is not a timestamp`}, // one separator wrong
		{typ: "Date", in: text("2026-11-25"), want: time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)},
		{typ: "Date", in: text("2149-06-06"), want: time.Date(2149, 6, 6, 0, 0, 0, 0, time.UTC)},
		{typ: "Date", in: text("2149-06-07"), wantErr: `"2149-06-07" is outside Date's range 1970-01-01 to 2149-06-06`},
		{typ: "Date", in: text("1969-12-31"), wantErr: `"1969-12-31" is outside Date's range 1970-01-01 to 2149-06-06`},
		{typ: "Date", in: text("2120-01-01 10:00:00+00"), want: time.Date(2120, 1, 1, 0, 0, 0, 0, time.UTC)},   // past DateTime's range, within Date's
		{typ: "Date", in: text("2026-11-25 23:30:00-02"), want: time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)}, // the day in UTC
		// Years PostgreSQL prints that Go's layouts cannot read: outside
		// every range, not malformed.
		{typ: "DateTime", in: text("4714-11-24 00:00:00+00 BC"), wantErr: `"4714-11-24 00:00:00+00 BC" is outside DateTime's range 1970-01-01 to 2106-02-06`},
		{typ: "DateTime", in: text("294276-12-31 23:59:59.999999+00"), wantErr: `"294276-12-31 23:59:59.999999+00" is outside DateTime's range 1970-01-01 to 2106-02-06`},
		{typ: "DateTime", in: text("10000-01-01 00:00:00"), wantErr: `"10000-01-01 00:00:00" is outside DateTime's range 1970-01-01 to 2106-02-06`},
		{typ: "DateTime", in: text("10000"), wantErr: `"10000" is not a timestamp`},
		{typ: "DateTime", in: text("BC"), wantErr: `"BC" is not a timestamp`},
		{typ: "DateTime64(3)", in: text("0001-01-01 00:00:00+00 BC"), wantErr: `"0001-01-01 00:00:00+00 BC" is outside DateTime64's range 1900-01-01 to 2262-04-10`},
		{typ: "Date", in: text("0044-03-15 BC"), wantErr: `"0044-03-15 BC" is outside Date's range 1970-01-01 to 2149-06-06`},
		{typ: "Date", in: text("12026-11-25 10:00:00+00"), wantErr: `"12026-11-25 10:00:00+00" is outside Date's range 1970-01-01 to 2149-06-06`},
		{typ: "Date32", in: text("0044-03-15 BC"), wantErr: `"0044-03-15 BC" is outside Date32's range 1900-01-01 to 2299-12-31`},
		{typ: "Date32", in: text("12026-11-25"), wantErr: `"12026-11-25" is outside Date32's range 1900-01-01 to 2299-12-31`},
		{typ: "Date", in: text("2200-01-01 00:00:00+00"), wantErr: `"2200-01-01 00:00:00+00" is outside Date's range 1970-01-01 to 2149-06-06`},
		{typ: "DateTime", in: text("2026-11-25"), want: time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)},
		{typ: "DateTime64(3)", in: text("1950-06-30"), want: time.Date(1950, 6, 30, 0, 0, 0, 0, time.UTC)},
		{typ: "UInt64", in: text("18446744073709551615"), want: uint64(18446744073709551615)},
		{typ: "UInt64", in: text("-1"), wantErr: `"-1" does not fit UInt64`},
		{typ: "UInt8", in: text("255"), want: uint8(255)},
		{typ: "UInt8", in: text("300"), wantErr: `"300" does not fit UInt8`},
		{typ: "UInt8", in: text("t"), want: uint8(1)},
		{typ: "UInt32", in: null, want: uint32(0)},
		{typ: "Int16", in: text("-32768"), want: int16(-32768)},
		{typ: "Int32", in: text("2147483648"), wantErr: `"2147483648" does not fit Int32`},
		{typ: "Float64", in: text("1.5"), want: 1.5},
		{typ: "Float32", in: text("x"), wantErr: `"x" is not a Float32`},
		{typ: "Float32", in: text("0.30000000000000004"), want: float32(0.3)}, // rounded, as ClickHouse's cast does
		{typ: "Float32", in: text("1e-300"), wantErr: `"1e-300" is too small for a Float32: it would be stored as 0`},
		{typ: "Float32", in: text("-0"), want: float32(0)},
		{typ: "Float64", in: text("4.9e-324"), want: 4.9e-324},
		{typ: "Float64", in: text("1e-400"), wantErr: `"1e-400" is too small for a Float64: it would be stored as 0`},
		{typ: "Float64", in: text("0.0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001"), wantErr: `"0.00000000000000000000000000000000000000000000000000000000000000…" is too small for a Float64: it would be stored as 0`},
		{typ: "Float64", in: text("0.000e5"), want: 0.0},
		{typ: "Float64", in: text("0xEp-2000"), wantErr: `"0xEp-2000" is too small for a Float64: it would be stored as 0`},
		{typ: "Float32", in: text("-0x1p-200"), wantErr: `"-0x1p-200" is too small for a Float32: it would be stored as 0`},
		{typ: "Float64", in: text("0x0p+5"), want: 0.0},
		{typ: "Float64", in: text("0x1.8p1"), want: 3.0},
		{typ: "Float32", in: text("0e-300"), want: float32(0)},
		{typ: "Bool", in: text("f"), want: false},
		{typ: "Bool", in: text("t"), want: true},
		{typ: "Bool", in: text("true"), want: true},
		{typ: "Bool", in: text("1"), want: true},
		{typ: "Bool", in: text("0"), want: false},
		{typ: "Bool", in: text("yes"), wantErr: `"yes" is not a boolean`},
		{typ: "UInt8", in: text("f"), want: uint8(0)},
		{typ: "UInt16", in: text("t"), wantErr: `"t" does not fit UInt16`}, // a flag is a UInt8
		{typ: "UInt64", in: text("f"), wantErr: `"f" does not fit UInt64`},
		{typ: "UInt16", in: text("65535"), want: uint16(65535)},
		{typ: "UInt16", in: text("65536"), wantErr: `"65536" does not fit UInt16`},
		{typ: "UInt32", in: text("4294967296"), wantErr: `"4294967296" does not fit UInt32`},
		{typ: "Int8", in: text("-128"), want: int8(-128)},
		{typ: "Int8", in: text("128"), wantErr: `"128" does not fit Int8`},
		{typ: "Int16", in: text("32768"), wantErr: `"32768" does not fit Int16`},
		{typ: "Int64", in: text("-9223372036854775809"), wantErr: `"-9223372036854775809" does not fit Int64`},
		{typ: "Nullable(String)", in: null, want: nil},
		{typ: "Nullable(UInt8)", in: text("7"), want: uint8(7)},
		{typ: "LowCardinality(String)", in: text("prod"), want: "prod"},
		{typ: "LowCardinality(Nullable(String))", in: null, want: nil},
		{typ: "FixedString(4)", in: text("abcd"), want: "abcd"},
		{typ: "FixedString(4)", in: text("ab"), want: "ab"}, // ClickHouse pads it
		{typ: "FixedString(2)", in: text("USA"), wantErr: `"USA" is 3 bytes: it does not fit FixedString(2)`},
		{typ: "Nullable(FixedString(2))", in: text("DE"), want: "DE"},
		{typ: "LowCardinality(FixedString(2))", in: text("USA"), wantErr: `"USA" is 3 bytes: it does not fit FixedString(2)`},
		{typ: "Map(String, UInt64)", in: text(`{"a":1}`), wantErr: "cdc does not convert values into Map(String, UInt64)" + composite},
		{typ: "Tuple(String, UInt8)", in: text("(a,1)"), wantErr: "cdc does not convert values into Tuple(String, UInt8)" + composite},
		{typ: "Map(String, UInt64)", in: null, wantErr: "cdc does not convert values into Map(String, UInt64)" + composite},
		{typ: "IPv4", in: text("192.0.2.1"), want: "192.0.2.1"},
		{typ: "IPv4", in: text("::1"), wantErr: `"::1" is an IPv6 address: it does not fit IPv4`},
		{typ: "Nullable(IPv4)", in: text("2001:db8::1"), wantErr: `"2001:db8::1" is an IPv6 address: it does not fit IPv4`},
		{typ: "IPv4", in: text("10.0.0.0/8"), wantErr: `"10.0.0.0/8" is not a IPv4: clickhouse [Append]: converting  to IPv4 is unsupported. invalid IP format`},
		{typ: "IPv6", in: text("192.0.2.1"), want: "192.0.2.1"},
		{typ: "IPv4", in: text("::ffff:192.0.2.1"), want: "192.0.2.1"},
		{typ: "Decimal(9, 2)", in: text("1.50"), want: "1.5"},
		{typ: "Decimal(9, 2)", in: null, want: nil}, // clickhouse-go's zero: 0
		{typ: "Nullable(Decimal(9, 2))", in: null, want: nil},
		{typ: "Decimal(9, 2)", in: text("abc"), wantErr: `"abc" is not a Decimal(9, 2)`},
		{typ: "Decimal(9, 2)", in: text("NaN"), wantErr: `"NaN" is not a Decimal(9, 2)`},
		{typ: "Decimal(10, 2)", in: text("19.999"), wantErr: `"19.999" has more than 2 decimal places: Decimal(10, 2) would cut it`},
		{typ: "Decimal(10, 2)", in: text("-0.005"), wantErr: `"-0.005" has more than 2 decimal places: Decimal(10, 2) would cut it`},
		{typ: "Decimal(18, 4)", in: text("1.23456789"), wantErr: `"1.23456789" has more than 4 decimal places: Decimal(18, 4) would cut it`},
		{typ: "Decimal(5, 2)", in: text("12345.67"), wantErr: `"12345.67" has more than 3 digits before the point: it does not fit Decimal(5, 2)`},
		{typ: "Decimal(5, 2)", in: text("1000"), wantErr: `"1000" has more than 3 digits before the point: it does not fit Decimal(5, 2)`},
		{typ: "Decimal(5, 2)", in: text("999.99"), want: "999.99"},
		{typ: "Decimal(5, 2)", in: text("-999.9900"), want: "-999.99"}, // zeros past the scale change nothing
		{typ: "Decimal(3, 0)", in: text("99999"), wantErr: `"99999" has more than 3 digits before the point: it does not fit Decimal(3, 0)`},
		{typ: "Decimal(3, 0)", in: text("-999"), want: "-999"},
		// A scale equal to the precision: all digits after the point.
		{typ: "Decimal(3, 3)", in: text("-0.999"), want: "-0.999"},
		{typ: "Decimal(3, 3)", in: text("0.1234"), wantErr: `"0.1234" has more than 3 decimal places: Decimal(3, 3) would cut it`},
		{typ: "Decimal32(9)", in: text("1"), wantErr: `"1" has more than 0 digits before the point: it does not fit Decimal32(9)`},
		{typ: "Decimal32(2)", in: text("1.234"), wantErr: `"1.234" has more than 2 decimal places: Decimal32(2) would cut it`},
		{typ: "Decimal64(3)", in: text("123456789012345.678"), want: "123456789012345.678"},
		{typ: "Date32", in: text("1900-01-01"), want: time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)},
		{typ: "Date32", in: text("2299-12-31"), want: time.Date(2299, 12, 31, 0, 0, 0, 0, time.UTC)},
		{typ: "Date32", in: text("1899-12-31"), wantErr: `"1899-12-31" is outside Date32's range 1900-01-01 to 2299-12-31`},
		{typ: "Date32", in: text("2300-01-01"), wantErr: `"2300-01-01" is outside Date32's range 1900-01-01 to 2299-12-31`},
		{typ: "Int128", in: text("-170141183460469231731687303715884105728"), want: "-170141183460469231731687303715884105728"},
		{typ: "Int128", in: text("170141183460469231731687303715884105728"), wantErr: `"170141183460469231731687303715884105728" is not a Int128: value 170141183460469231731687303715884105728 overflows Int128: value overflows 16-byte signed buffer`},
		{typ: "UInt128", in: text("-1"), wantErr: `"-1" is negative: it does not fit UInt128`},
		{typ: "UInt128", in: text("0"), want: "0"},
		{typ: "UInt256", in: text("-0"), want: "0"},
		{typ: "UInt256", in: text("115792089237316195423570985008687907853269984665640564039457584007913129639935"), want: "115792089237316195423570985008687907853269984665640564039457584007913129639935"},
		{typ: "Int256", in: text("1.5"), wantErr: `"1.5" is not a whole number for Int256`},
		{typ: "Int128", in: null, want: nil}, // clickhouse-go's zero: 0
		{typ: "Enum8('a' = 1, 'b' = 2)", in: text("b"), want: "b"},
		{typ: "Enum16('a' = 0)", in: null, wantErr: "NULL is not an element of Enum16('a' = 0): give the outbox column a DEFAULT or make the event_log column Nullable"},
		{typ: "Nullable(Enum8('a' = 1))", in: null, want: nil},
		{typ: "Enum8('a' = 1, 'b' = 2)", in: text("c"), wantErr: `"c" is not a Enum8('a' = 1, 'b' = 2): Enum8('a' = 1, 'b' = 2): unknown element "c"`},
		{typ: "SomeFutureType", in: text("x"), want: "x"}, // unknown to clickhouse-go too: the server judges
		{typ: "String", in: decoder.Value{Kind: decoder.ValueUnchanged}, wantErr: "value is not in text format"},
		{typ: "UInt64", in: decoder.Value{Kind: decoder.ValueBinary, Data: []byte{1}}, wantErr: "value is not in text format"},
	}
	for _, tt := range tests {
		c := cellFor(tt.typ)
		err := c.set(tt.in)
		got := c.value()
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("%s(%q): error %v, want %q", tt.typ, tt.in.Data, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s(%q): %v", tt.typ, tt.in.Data, err)
			continue
		}
		// Types whose clickhouse-go column takes a pointer get one into the
		// cell (no allocation); the rest get the value.
		// A Decimal is handed over as a decimal.Decimal, a 128- or 256-bit
		// integer as a *big.Int: compared by their text.
		switch v := got.(type) {
		case decimal.Decimal:
			got = v.String()
		case *big.Int:
			got = v.String()
		}
		byValue := strings.HasPrefix(tt.typ, "LowCardinality(") || strings.Contains(tt.typ, "FixedString(") || strings.HasPrefix(tt.typ, "IPv") ||
			strings.HasPrefix(tt.typ, "Decimal") || strings.HasPrefix(tt.typ, "Enum8(") || tt.typ == "SomeFutureType" ||
			strings.Contains(tt.typ, "Int128") || strings.Contains(tt.typ, "Int256") || tt.typ == "Date32"
		if rv := reflect.ValueOf(got); got != nil && (rv.Kind() == reflect.Pointer) == byValue {
			t.Errorf("%s(%q): value() is a %T; a pointer is wanted for all but LowCardinality, FixedString and unconverted types", tt.typ, tt.in.Data, got)
			continue
		} else if got != nil && !byValue {
			got = rv.Elem().Interface()
		}
		if b, ok := got.([]byte); ok {
			got = string(b)
		}
		if tm, ok := got.(time.Time); ok {
			if !tm.Equal(tt.want.(time.Time)) {
				t.Errorf("%s(%q) = %v, want %v", tt.typ, tt.in.Data, tm, tt.want)
			}
			continue
		}
		if got != tt.want {
			t.Errorf("%s(%q) = %#v, want %#v", tt.typ, tt.in.Data, got, tt.want)
		}
	}
}

func TestTraceID(t *testing.T) {
	tests := []struct{ in, want string }{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", ""},
		{"garbage", ""},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736x00f067aa0ba902b7-01", ""},
	}
	for _, tt := range tests {
		if got := traceID(text(tt.in)); string(got) != tt.want {
			t.Errorf("traceID(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := traceID(null); got != nil {
		t.Errorf("traceID(NULL) = %q", got)
	}
}

func TestPosition_Less(t *testing.T) {
	a := Position{CommitLSN: 10, Seq: 2}
	for _, tt := range []struct {
		b    Position
		want bool
	}{{Position{10, 3}, true}, {Position{11, 1}, true}, {Position{10, 2}, false}, {Position{9, 9}, false}} {
		if got := a.Less(tt.b); got != tt.want {
			t.Errorf("%v.Less(%v) = %v, want %v", a, tt.b, got, tt.want)
		}
	}
}

func TestBatchFootprint(t *testing.T) {
	rows := func(sizes ...int) *Batch {
		b := &Batch{}
		for _, n := range sizes {
			b.Rows = append(b.Rows, Row{Size: n})
			b.Bytes += n
		}
		return b
	}
	tests := []struct {
		name  string
		batch *Batch
		want  int
	}{
		{"small rows: values plus three blocks", rows(300, 300, 400), 1000 + 3*blockBytes},
		{"one 10 MiB event: held four times", rows(10 << 20), 4 * (10 << 20)},
		{"a large event among small ones", rows(100, 5<<20, 100), 200 + 5<<20 + 3*(5<<20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.batch.Footprint(); got != tt.want {
				t.Fatalf("Footprint() = %d, want %d", got, tt.want)
			}
		})
	}
	// Two INSERTs of full 16 MiB batches of small events fit the default
	// budget together; two batches of one 10 MiB event each do not.
	budget := InsertBudget(2, 16<<20)
	full := &Batch{Rows: []Row{{Size: 300}}, Bytes: 16 << 20} // payload at the limit
	if full := full.Footprint(); 2*full > budget {
		t.Errorf("two ordinary batches (%d each) exceed the budget %d", full, budget)
	}
	if huge := rows(10 << 20).Footprint(); 2*huge <= budget {
		t.Errorf("two 10 MiB-event batches (%d each) fit the budget %d", huge, budget)
	}
}

// A cell's value goes into clickhouse-go's column of its type and reads
// back as the value the text said: DateTime64 as the same instant cut to
// the column's precision, toward the past. Types 18.16, the server the
// integration tests run, lacks (DateTime64, LowCardinality) stop here, at
// the client.
func TestCellsThroughClickHouseGo(t *testing.T) {
	for _, tt := range []struct {
		typ  string
		in   decoder.Value
		want any
	}{
		{"DateTime64(6)", text("2026-11-25 12:03:16.123456+00"), time.Date(2026, 11, 25, 12, 3, 16, 123456000, time.UTC)},
		{"DateTime64(3)", text("2026-11-25 12:03:16.123456+00"), time.Date(2026, 11, 25, 12, 3, 16, 123000000, time.UTC)},
		{"DateTime64(9, 'UTC')", text("1950-06-01 00:00:00.000000001+00"), time.Date(1950, 6, 1, 0, 0, 0, 1, time.UTC)},
		{"DateTime64(3)", text("1969-12-31 23:59:59.9995+00"), time.Date(1969, 12, 31, 23, 59, 59, 999000000, time.UTC)},
		{"DateTime64(6, 'UTC')", text("2262-04-10 23:59:59.999999+00"), time.Date(2262, 4, 10, 23, 59, 59, 999999000, time.UTC)},
		{"DateTime64(0)", text("1900-01-01 00:00:00.9+00"), time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"String", text("prod"), "prod"},
		{"FixedString(4)", text("abcd"), "abcd"},
		{"FixedString(4)", text("ab"), "ab\x00\x00"},
		{"Date", text("2120-01-01 10:00:00+00"), time.Date(2120, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"DateTime", text("2026-11-25"), time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)},
		{"IPv4", text("192.0.2.1"), "192.0.2.1"},
		{"LowCardinality(String)", text("prod"), "prod"},
		{"LowCardinality(Nullable(String))", text("prod"), "prod"},
		{"LowCardinality(Nullable(String))", null, nil},
		{"LowCardinality(FixedString(4))", text("abcd"), "abcd"},
		{"Nullable(String)", null, nil},
	} {
		c := cellFor(tt.typ)
		if err := c.set(tt.in); err != nil {
			t.Fatalf("%s(%q): %v", tt.typ, tt.in.Data, err)
		}
		block := chproto.NewBlock()
		if err := block.AddColumn("c", column.Type(tt.typ)); err != nil {
			t.Fatal(err)
		}
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("%s Append(%q) panics: %v", tt.typ, tt.in.Data, p)
				}
			}()
			if err := block.Append(c.value()); err != nil {
				t.Errorf("%s Append(%q): %v", tt.typ, tt.in.Data, err)
				return
			}
			// Through the wire format and back, as the server would
			// read it.
			buf := &chgo.Buffer{}
			if err := block.Encode(buf, chproto.DBMS_TCP_PROTOCOL_VERSION); err != nil {
				t.Errorf("%s encode: %v", tt.typ, err)
				return
			}
			read := chproto.NewBlock()
			if err := read.Decode(chgo.NewReader(bytes.NewReader(buf.Buf)), chproto.DBMS_TCP_PROTOCOL_VERSION); err != nil {
				t.Errorf("%s decode: %v", tt.typ, err)
				return
			}
			got := read.Columns[0].Row(0, false)
			if ip, ok := got.(net.IP); ok {
				got = ip.String()
			}
			if p, ok := got.(*string); ok {
				got = nil
				if p != nil {
					got = *p
				}
			}
			if tm, ok := got.(time.Time); ok {
				if !tm.Equal(tt.want.(time.Time)) {
					t.Errorf("%s(%q) reads back %v, want %v", tt.typ, tt.in.Data, tm, tt.want)
				}
				return
			}
			if got != tt.want {
				t.Errorf("%s(%q) reads back %#v, want %#v", tt.typ, tt.in.Data, got, tt.want)
			}
		}()
	}
}

// The day a Date or Date32 column is sent is the day the text names, in
// whatever time zone the server runs (clickhouse-go builds the INSERT's
// columns with the server's zone). A Date32 went as text, which
// clickhouse-go read as midnight in that zone: where a DST change skips
// midnight, the day before was sent.
func TestDatesAreTheDayTheTextNamesInEveryServerZone(t *testing.T) {
	for _, tc := range []struct{ zone, day string }{
		{"UTC", "2024-09-08"},
		{"America/Santiago", "2024-09-08"}, // clocks go from 00:00 to 01:00
		{"America/Sao_Paulo", "2018-11-04"},
		{"America/Havana", "2024-03-10"},
		{"Atlantic/Azores", "2024-03-31"},
		{"America/Santiago", "1969-08-10"},
		{"Pacific/Kiritimati", "1995-01-01"}, // a whole day skipped: 1994-12-31 never was there
	} {
		loc, err := time.LoadLocation(tc.zone)
		if err != nil {
			t.Fatal(err)
		}
		for _, typ := range []string{"Date", "Date32"} {
			if typ == "Date" && tc.day < "1970" {
				continue // before Date's range
			}
			c := cellFor(typ)
			if err := c.set(text(tc.day)); err != nil {
				t.Fatalf("%s(%s): %v", typ, tc.day, err)
			}
			col, err := column.Type(typ).Column("c", &column.ServerContext{Timezone: loc})
			if err != nil {
				t.Fatal(err)
			}
			if err := col.AppendRow(c.value()); err != nil {
				t.Fatalf("%s(%s) with the server in %s: %v", typ, tc.day, tc.zone, err)
			}
			buf := &chgo.Buffer{}
			col.Encode(buf)
			r := chgo.NewReader(bytes.NewReader(buf.Buf))
			var days int64
			if typ == "Date" {
				var d chgo.ColDate
				if err := d.DecodeColumn(r, 1); err != nil {
					t.Fatal(err)
				}
				days = int64(d[0])
			} else {
				var d chgo.ColDate32
				if err := d.DecodeColumn(r, 1); err != nil {
					t.Fatal(err)
				}
				days = int64(d[0])
			}
			if got := time.Unix(days*86400, 0).UTC().Format(time.DateOnly); got != tc.day {
				t.Errorf("%s %s with the server in %s is sent as %s", typ, tc.day, tc.zone, got)
			}
		}
	}
}

// What a cell takes, clickhouse-go's column takes too: a value that
// passed conversion and then failed batch.Append would cost the whole
// INSERT (clickhouse-go poisons the batch) and a restart without the row.
// Every type cdc converts or probes, nullable and low-cardinality forms
// included, against text of many types' shapes, and NULL.
func TestCells_WhatSetTakesAppendTakes(t *testing.T) {
	types := []string{
		"String", "FixedString(2)", "FixedString(3)", "UUID", "Date", "Date32", "DateTime", "DateTime('UTC')",
		"DateTime64(3)", "DateTime64(9, 'UTC')", "Bool", "UInt8", "UInt16", "UInt32", "UInt64", "Int8", "Int16",
		"Int32", "Int64", "Int128", "UInt256", "Float32", "Float64", "Decimal(9, 2)", "Decimal(76, 10)",
		"IPv4", "IPv6", "Enum8('a' = 1)", "Enum16('a' = 1, 'b' = 2)",
		"Nullable(String)", "Nullable(IPv4)", "Nullable(Date)", "Nullable(UUID)", "Nullable(FixedString(2))",
		"LowCardinality(String)", "LowCardinality(FixedString(2))", "LowCardinality(Nullable(String))",
		"LowCardinality(UInt64)", "LowCardinality(Nullable(UUID))",
	}
	values := []string{
		"", "a", "t", "f", "0", "1", "-1", "255", "65536", "1.5", "-0", "1e-400", "1e400", "NaN", "Infinity",
		"abc", "USA", "2026-11-25", "2026-11-25 12:03:16+00", "2120-01-01 10:00:00+00", "1969-12-31",
		"3f2a1e3c-1f3a-4a8e-9d2c-0a1b2c3d4e5f", "192.0.2.1", "::1", "2001:db8::1", "::ffff:192.0.2.1",
		"10.0.0.0/8", "{a,b}", `{"a":1}`, "99999999999999999999999999999999999999999", "é",
	}
	for _, typ := range types {
		for i := 0; i <= len(values); i++ {
			in, name := null, "NULL"
			if i < len(values) {
				in, name = text(values[i]), values[i]
			}
			c := cellFor(typ)
			if err := c.set(in); err != nil {
				continue // refused: a dead letter, as it should be
			}
			block := chproto.NewBlock()
			if err := block.AddColumn("c", column.Type(typ)); err != nil {
				t.Fatalf("%s: %v", typ, err)
			}
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Errorf("%s took %s, and Append panicked: %v", typ, name, p)
					}
				}()
				if err := block.Append(c.value()); err != nil {
					t.Errorf("%s took %s, and Append refused it: %v", typ, name, err)
				}
			}()
		}
	}
}

// One cell serves every row of an INSERT: a NULL leaves no trace on the
// next value, the probe column keeps no row of any, and a value not in
// text form is refused.
func TestTextCell_ReusedAcrossRows(t *testing.T) {
	c := newTextCell("Decimal(9, 2)")
	for i, tc := range []struct {
		in   decoder.Value
		want any
	}{{null, nil}, {text("1.50"), "1.5"}, {null, nil}, {text("2"), "2"}, {text("-0.01"), "-0.01"}} {
		if err := c.set(tc.in); err != nil {
			t.Fatalf("row %d: %v", i, err)
		}
		got := c.value()
		if d, ok := got.(decimal.Decimal); ok {
			got = d.String()
		}
		if got != tc.want {
			t.Errorf("row %d: value %v, want %v", i, got, tc.want)
		}
	}
	if n := c.probe.Rows(); n != 0 {
		t.Errorf("the probe column holds %d rows after five values, want 0", n)
	}
	if err := c.set(decoder.Value{Kind: decoder.ValueBinary, Data: []byte{1}}); !errors.Is(err, errNotText) {
		t.Errorf("a binary value: %v, want errNotText", err)
	}
}

// panicky is a clickhouse-go column whose AppendRow panics on the text
// "boom", as the IPv4 column did on an IPv6 address before v2.51.
type panicky struct{ column.Interface }

func (p panicky) AppendRow(v any) error {
	if v == "boom" {
		panic("index out of range [4] with length 4")
	}
	return p.Interface.AppendRow(v)
}

// A value clickhouse-go panics on, instead of returning an error, refuses
// its row, and the cell takes the next value.
func TestTextCell_ProbePanicRefusesTheRow(t *testing.T) {
	c := newTextCell("String")
	c.probe = panicky{c.probe}
	err := c.set(text("boom"))
	if err == nil || err.Error() != `"boom" is not a String: clickhouse-go panicked: index out of range [4] with length 4` {
		t.Fatalf("set(boom) = %v; want the row refused, saying clickhouse-go panicked", err)
	}
	if err := c.set(text("fine")); err != nil || c.value() != "fine" {
		t.Fatalf("after the panic, set(fine) = %v, %v; want it taken", err, c.value())
	}
	if n := c.probe.Rows(); n != 0 {
		t.Fatalf("the probe column holds %d rows, want 0", n)
	}
}

// An IPv6 address into IPv4 is refused by cdc's own check, and by
// clickhouse-go's without it (v2.51 and later; it panicked before).
func TestTextCell_IPv6IntoIPv4(t *testing.T) {
	c := newTextCell("IPv4")
	if err := c.set(text("::1")); err == nil || err.Error() != `"::1" is an IPv6 address: it does not fit IPv4` {
		t.Fatalf("set(::1) = %v; want it refused as an IPv6 address", err)
	}
	c.conv = nil
	if err := c.set(text("::1")); err == nil || !strings.HasPrefix(err.Error(), `"::1" is not a IPv4: `) || strings.Contains(err.Error(), "panicked") {
		t.Fatalf("without cdc's check, set(::1) = %v; want clickhouse-go's refusal, no panic", err)
	}
	if err := c.set(text("192.0.2.1")); err != nil || c.value() != "192.0.2.1" {
		t.Fatalf("set(192.0.2.1) = %v, %v; want it taken", err, c.value())
	}
}

func TestIsRowError(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"parse error", &clickhouse.Exception{Code: 27, Message: "Cannot parse input"}, true},
		{"wrapped", fmt.Errorf("insert: %w", &clickhouse.Exception{Code: 53, Message: "Type mismatch"}), true},
		{"constraint", &clickhouse.Exception{Code: 469, Message: "Constraint `positive` for table default.event_log is violated"}, true},
		{"a block over too many months", &clickhouse.Exception{Code: 252, Message: "Too many partitions for single INSERT block (more than 100). The limit is controlled by 'max_partitions_per_insert_block' setting."}, true},
		{"merges behind", &clickhouse.Exception{Code: 252, Message: "Too many parts (300). Merges are processing significantly slower than inserts"}, false},
		{"over the query's memory (18.16, 23.8)", &clickhouse.Exception{Code: 241, Message: "Memory limit (for query) exceeded: would use 57.13 MiB (attempt to allocate chunk of 33554416 bytes), maximum: 38.15 MiB"}, true},
		{"over the query's memory (newer servers)", &clickhouse.Exception{Code: 241, Message: "Query memory limit exceeded: would use 57.13 MiB (attempt to allocate chunk of 33554416 bytes), maximum: 38.15 MiB"}, true},
		{"over the user's memory", &clickhouse.Exception{Code: 241, Message: "Memory limit (for user) exceeded: would use 9.32 GiB (attempt to allocate chunk of 4194304 bytes), maximum: 9.31 GiB"}, false},
		{"over the server's memory", &clickhouse.Exception{Code: 241, Message: "Memory limit (total) exceeded: would use 28.00 GiB (attempt to allocate chunk of 4194304 bytes), maximum: 27.94 GiB"}, false},
		{"memory limit", &clickhouse.Exception{Code: 241, Message: "Memory limit (total) exceeded"}, false},
		{"network", errors.New("read: connection reset by peer"), false},
	} {
		if got := IsRowError(tt.err); got != tt.want {
			t.Errorf("%s: IsRowError = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// On a server that reads the days after 2106-02-07 back as 1970 (18.16),
// a Date ends then, in an Array too: such a day is refused as a dead
// letter rather than stored to read back as 1970-01-01.
func TestDateRangeOfAServerWithShortDates(t *testing.T) {
	short := serverTypes{dateEnd: maxDate1816}
	for _, tt := range []struct {
		typ, in, want, wantErr string
	}{
		{typ: "Date", in: "2106-02-07", want: "2106-02-07 00:00:00 +0000 UTC"},
		{typ: "Date", in: "2106-02-08", wantErr: `"2106-02-08" is outside Date's range 1970-01-01 to 2106-02-07`},
		{typ: "Nullable(Date)", in: "2120-01-01 10:00:00+00", wantErr: `"2120-01-01 10:00:00+00" is outside Date's range 1970-01-01 to 2106-02-07`},
		{typ: "Array(Date)", in: "{2106-02-07,2149-06-06}", wantErr: `element 2 of "{2106-02-07,2149-06-06}": "2149-06-06" is outside Date's range 1970-01-01 to 2106-02-07`},
	} {
		c := short.cellFor(tt.typ)
		err := c.set(text(tt.in))
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("%s(%q): error %v, want %q", tt.typ, tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s(%q): %v", tt.typ, tt.in, err)
			continue
		}
		if got := fmt.Sprint(*c.value().(*time.Time)); got != tt.want {
			t.Errorf("%s(%q) = %s, want %s", tt.typ, tt.in, got, tt.want)
		}
	}
}

func TestBatchPart(t *testing.T) {
	b := &Batch{
		Rows:  []Row{{Size: 300, Pos: Position{10, 1}}, {Size: 7, Pos: Position{10, 2}}, {Size: 50, Pos: Position{12, 1}}},
		Bytes: 357,
		End:   0x3000,
	}
	part := b.Part([]Row{b.Rows[0], b.Rows[2]})
	if part.End != 0x3000 || part.Bytes != 350 || len(part.Rows) != 2 || part.Rows[1].Pos != (Position{12, 1}) {
		t.Fatalf("Part = {End %v, Bytes %d, %d rows}, want {End 0/3000, Bytes 350, 2 rows ending at 12/1}", part.End, part.Bytes, len(part.Rows))
	}
	if b.Bytes != 357 || len(b.Rows) != 3 {
		t.Fatalf("Part changed the batch: %d bytes, %d rows", b.Bytes, len(b.Rows))
	}
	if empty := b.Part(nil); empty.Bytes != 0 || empty.End != 0x3000 {
		t.Fatalf("Part(nil) = {End %v, Bytes %d}, want {End 0/3000, Bytes 0}", empty.End, empty.Bytes)
	}
}
