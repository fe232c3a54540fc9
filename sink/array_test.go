package sink

import (
	"fmt"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/google/uuid"
	"github.com/shopspring/decimal"
)

// plain turns what an arrayCell hands over into comparable values:
// pointers followed, bytes as strings, decimals and big integers as text.
func plain(v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = plain(e)
		}
		return out
	case []byte:
		return string(x)
	case decimal.Decimal:
		return x.String()
	case *big.Int:
		return x.String()
	case time.Time:
		return x.UTC().Format(time.RFC3339)
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer {
		return plain(rv.Elem().Interface())
	}
	return v
}

func TestArrayCell(t *testing.T) {
	tests := []struct {
		typ, in string
		null    bool
		want    []any
		wantErr string
	}{
		{typ: "Array(Int32)", in: "{1,2,3}", want: []any{int32(1), int32(2), int32(3)}},
		{typ: "Array(Int32)", in: "{}", want: []any{}},
		{typ: "Array(Int32)", null: true, want: []any{}}, // ClickHouse has no Nullable(Array)
		{typ: "Array(Int32)", in: "{1,NULL}", want: []any{int32(1), int32(0)}},
		{typ: "Array(Nullable(Int32))", in: "{1,NULL}", want: []any{int32(1), nil}},
		{typ: "Array(String)", in: `{a,"b c","d,e","f\"g","h\\i","","NULL",NULL,"{x}"}`, want: []any{"a", "b c", "d,e", `f"g`, `h\i`, "", "NULL", "", "{x}"}},
		{typ: "Array(Nullable(String))", in: `{"NULL",NULL,null}`, want: []any{"NULL", nil, nil}},
		{typ: "Array(String)", in: `{"{\"a\": 1}","é ☃"}`, want: []any{`{"a": 1}`, "é ☃"}}, // json[] and unicode
		{typ: "Array(Array(Int32))", in: "{{1,2},{3,4}}", want: []any{[]any{int32(1), int32(2)}, []any{int32(3), int32(4)}}},
		{typ: "Array(Array(Int32))", in: "{}", want: []any{}},
		{typ: "Array(Int16)", in: "[0:2]={7,8,9}", want: []any{int16(7), int16(8), int16(9)}},
		{typ: "Array(Array(UInt8))", in: "[0:0][1:2]={{1,2}}", want: []any{[]any{uint8(1), uint8(2)}}},
		{typ: "Array(DateTime)", in: `{"2026-11-25 12:03:16.5+00","2026-11-25 14:03:16+02"}`, want: []any{"2026-11-25T12:03:16Z", "2026-11-25T12:03:16Z"}},
		{typ: "Array(UUID)", in: "{3f2a1e3c-1f3a-4a8e-9d2c-0a1b2c3d4e5f}", want: []any{uuid.MustParse("3f2a1e3c-1f3a-4a8e-9d2c-0a1b2c3d4e5f")}},
		{typ: "Array(Decimal(9, 2))", in: "{1.50,-2}", want: []any{"1.5", "-2"}},
		{typ: "Array(Bool)", in: "{t,f}", want: []any{true, false}},
		{typ: "Array(FixedString(2))", in: "{DE,FR}", want: []any{"DE", "FR"}},
		{typ: "Array(LowCardinality(String))", in: "{a,b}", want: []any{"a", "b"}},
		{typ: "Array(Float64)", in: "{1.5,NaN,-Infinity}", want: []any{1.5, "NaN", "-Inf"}},

		{typ: "Array(Int32)", in: "{1,x,3}", wantErr: `element 2 of "{1,x,3}": "x" does not fit Int32`},
		{typ: "Array(Int16)", in: "{1,2,32768}", wantErr: `element 3 of "{1,2,32768}": "32768" does not fit Int16`},
		{typ: "Array(Array(Int32))", in: "{{1,2},{3,y}}", wantErr: `element 4 of "{{1,2},{3,y}}": "y" does not fit Int32`},
		{typ: "Array(FixedString(2))", in: "{USA}", wantErr: `element 1 of "{USA}": "USA" is 3 bytes: it does not fit FixedString(2)`},
		{typ: "Array(Enum8('a' = 1))", in: "{a,NULL}", wantErr: `element 2 of "{a,NULL}": NULL is not an element of Enum8('a' = 1): give the outbox column a DEFAULT or make the event_log column Nullable`},
		{typ: "Array(Int32)", in: "{{1,2}}", wantErr: `"{{1,2}}" is not a PostgreSQL array for Array(Int32) (it has more dimensions than Array(Int32)): Array(Int32) takes an outbox column of an array type, e.g. text[] or integer[]`},
		{typ: "Array(Array(Int32))", in: "{1,2}", wantErr: `"{1,2}" is not a PostgreSQL array for Array(Array(Int32)) (it has fewer dimensions than Array(Array(Int32))): Array(Array(Int32)) takes an outbox column of an array type, e.g. text[] or integer[]`},
		{typ: "Array(Int32)", in: "[1,2]", wantErr: `"[1,2]" is not a PostgreSQL array for Array(Int32) (no { at byte 0): Array(Int32) takes an outbox column of an array type, e.g. text[] or integer[]`},
		{typ: "Array(String)", in: `{"a":1}`, wantErr: `"{\"a\":1}" is not a PostgreSQL array for Array(String) (':' at byte 4 where a comma or } belongs): Array(String) takes an outbox column of an array type, e.g. text[] or integer[]`},
		{typ: "Array(String)", in: "plain", wantErr: `"plain" is not a PostgreSQL array for Array(String) (no { at byte 0): Array(String) takes an outbox column of an array type, e.g. text[] or integer[]`},
		{typ: "Array(String)", in: "{a,b", wantErr: `"{a,b" is not a PostgreSQL array for Array(String) (no closing }): Array(String) takes an outbox column of an array type, e.g. text[] or integer[]`},
		{typ: "Array(String)", in: `{"a}`, wantErr: `"{\"a}" is not a PostgreSQL array for Array(String) (no closing quote): Array(String) takes an outbox column of an array type, e.g. text[] or integer[]`},
		{typ: "Array(String)", in: "{a}x", wantErr: `"{a}x" is not a PostgreSQL array for Array(String) (text follows the closing brace): Array(String) takes an outbox column of an array type, e.g. text[] or integer[]`},
		{typ: "Array(String)", in: "{a,,b}", wantErr: `"{a,,b}" is not a PostgreSQL array for Array(String) (empty element at byte 3): Array(String) takes an outbox column of an array type, e.g. text[] or integer[]`},
		{typ: "Array(Map(String, UInt8))", in: "{}", wantErr: "cdc does not convert values into Array(Map(String, UInt8)): make the event_log column a String (json arrives as JSON text)"},
	}
	for _, tt := range tests {
		c := cellFor(tt.typ)
		in := text(tt.in)
		if tt.null {
			in = null
		}
		err := c.set(in)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("%s(%s): error %v, want %q", tt.typ, tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s(%s): %v", tt.typ, tt.in, err)
			continue
		}
		got := plain(c.value())
		if f, ok := got.([]any); ok && strings.Contains(tt.typ, "Float") {
			for i, x := range f {
				f[i] = floatText(x.(float64))
			}
			for i, x := range tt.want {
				if v, ok := x.(float64); ok {
					tt.want[i] = floatText(v)
				}
			}
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s(%s) = %#v, want %#v", tt.typ, tt.in, got, tt.want)
		}
	}
}

func floatText(f float64) string { return fmt.Sprint(f) }

// What an arrayCell hands over is what clickhouse-go's Array column
// takes: appended, then read back from the column, it is the array.
func TestArrayCell_AppendsToItsColumn(t *testing.T) {
	tests := []struct {
		typ, in string
		want    any
	}{
		{typ: "Array(Int32)", in: "{1,2,3}", want: []int32{1, 2, 3}},
		{typ: "Array(Nullable(String))", in: `{a,NULL,"b c"}`, want: []*string{ptr("a"), nil, ptr("b c")}},
		{typ: "Array(Array(UInt8))", in: "{{1,2},{3,4}}", want: [][]uint8{{1, 2}, {3, 4}}},
		{typ: "Array(Decimal(9, 2))", in: "{1.50}", want: []decimal.Decimal{decimal.RequireFromString("1.5")}},
		{typ: "Array(FixedString(2))", in: "{DE}", want: []string{"DE"}},
		{typ: "Array(Int32)", in: "{}", want: []int32{}},
	}
	for _, tt := range tests {
		col, err := column.Type(tt.typ).Column("c", &column.ServerContext{Timezone: time.UTC})
		if err != nil {
			t.Fatalf("%s: %v", tt.typ, err)
		}
		c := cellFor(tt.typ)
		// Twice: the second row reuses the first row's element cells.
		for i := 0; i < 2; i++ {
			if err := c.set(text(tt.in)); err != nil {
				t.Fatalf("%s(%s): %v", tt.typ, tt.in, err)
			}
			if err := col.AppendRow(c.value()); err != nil {
				t.Fatalf("%s(%s): AppendRow: %v", tt.typ, tt.in, err)
			}
		}
		for row := 0; row < 2; row++ {
			if got := col.Row(row, false); fmt.Sprintf("%v", deref(got)) != fmt.Sprintf("%v", deref(tt.want)) {
				t.Errorf("%s(%s): row %d reads back %v, want %v", tt.typ, tt.in, row, deref(got), deref(tt.want))
			}
		}
	}
}

func ptr(s string) *string { return &s }

// deref prints []*string as its strings, nil as <nil>.
func deref(v any) any {
	if s, ok := v.([]*string); ok {
		out := make([]string, len(s))
		for i, p := range s {
			out[i] = "<nil>"
			if p != nil {
				out[i] = *p
			}
		}
		return out
	}
	return v
}
