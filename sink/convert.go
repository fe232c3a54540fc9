package sink

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/eventcdc/cdc/decoder"
)

// converter turns one pgoutput text value into the Go value clickhouse-go
// takes for a column type. Conversion happens before Append, on purpose:
// clickhouse-go poisons the whole batch when a single Append fails, and a
// row that cannot be converted must become a dead letter, not a stuck batch.
type converter func(v decoder.Value) (any, error)

var errNotText = errors.New("value is not in text format")

// converterFor returns the converter for a ClickHouse type name as the
// server reports it, e.g. "UInt64", "Nullable(String)", "DateTime('UTC')".
func converterFor(chType string) converter {
	if inner, ok := unwrap(chType, "Nullable"); ok {
		conv := converterFor(inner)
		return func(v decoder.Value) (any, error) {
			if v.Kind == decoder.ValueNull {
				return nil, nil
			}
			return conv(v)
		}
	}
	if inner, ok := unwrap(chType, "LowCardinality"); ok {
		return converterFor(inner)
	}
	switch {
	case chType == "String" || strings.HasPrefix(chType, "FixedString("):
		return textOr("", func(b []byte) (any, error) { return b, nil })
	case chType == "UUID":
		return textOr(uuid.UUID{}, func(b []byte) (any, error) {
			u, err := uuid.ParseBytes(b)
			if err != nil {
				return nil, fmt.Errorf("%q is not a UUID", clip(b))
			}
			return u, nil
		})
	case chType == "DateTime" || strings.HasPrefix(chType, "DateTime("):
		return textOr(time.Unix(0, 0).UTC(), func(b []byte) (any, error) { return parseDateTime(b) })
	case chType == "Date":
		return textOr(time.Unix(0, 0).UTC(), func(b []byte) (any, error) { return parseDate(b) })
	case chType == "Bool":
		return textOr(false, func(b []byte) (any, error) { return parseBool(b) })
	case strings.HasPrefix(chType, "UInt"):
		bits, err := strconv.Atoi(strings.TrimPrefix(chType, "UInt"))
		if err != nil || bits > 64 {
			break
		}
		return textOr(zeroUint(bits), func(b []byte) (any, error) { return parseUint(b, bits) })
	case strings.HasPrefix(chType, "Int"):
		bits, err := strconv.Atoi(strings.TrimPrefix(chType, "Int"))
		if err != nil || bits > 64 {
			break
		}
		return textOr(zeroInt(bits), func(b []byte) (any, error) { return parseInt(b, bits) })
	case chType == "Float32" || chType == "Float64":
		bits := 64
		if chType == "Float32" {
			bits = 32
		}
		return textOr(zeroFloat(bits), func(b []byte) (any, error) {
			f, err := strconv.ParseFloat(string(b), bits)
			if err != nil {
				return nil, fmt.Errorf("%q is not a %s", clip(b), chType)
			}
			if bits == 32 {
				return float32(f), nil
			}
			return f, nil
		})
	}
	// A type this connector does not convert: hand clickhouse-go the text
	// and let the server judge it. Such rows cannot be dead-lettered one by
	// one on the client, so say so loudly at schema time (see columnsFor).
	return textOr("", func(b []byte) (any, error) { return string(b), nil })
}

// textOr wraps a parser: NULL becomes the column type's zero value (what
// ClickHouse itself stores for a missing value), and non-text values, which
// an outbox insert never carries, are refused.
func textOr(zero any, parse func([]byte) (any, error)) converter {
	return func(v decoder.Value) (any, error) {
		switch v.Kind {
		case decoder.ValueNull:
			return zero, nil
		case decoder.ValueText:
			return parse(v.Data)
		default:
			return nil, errNotText
		}
	}
}

func unwrap(t, wrapper string) (string, bool) {
	if strings.HasPrefix(t, wrapper+"(") && strings.HasSuffix(t, ")") {
		return t[len(wrapper)+1 : len(t)-1], true
	}
	return "", false
}

// clip keeps error messages short: a value may be megabytes long.
func clip(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "…"
	}
	return string(b)
}

// DateTime is seconds since 1970 in a UInt32 on every server version.
var (
	minDateTime = time.Unix(0, 0)
	maxDateTime = time.Unix(math.MaxUint32, 0)
)

// PostgreSQL's ISO output of timestamptz and timestamp; cdc sets
// TimeZone=UTC and DateStyle=ISO on its replication session.
var timestampLayouts = []string{
	"2006-01-02 15:04:05.999999999Z07",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999Z07:00:00",
	"2006-01-02 15:04:05.999999999",
}

func parseDateTime(b []byte) (any, error) {
	// Fast path for the form cdc's session always produces,
	// "2006-01-02 15:04:05[.ffffff]+00": no layout search, no allocation.
	if t, ok := parseUTCTimestamp(b); ok {
		return t, nil
	}
	s := string(b)
	for _, layout := range timestampLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			if t.Before(minDateTime) || !t.Before(maxDateTime) {
				return nil, fmt.Errorf("%q is outside DateTime's range 1970-01-01 to 2106-02-07", s)
			}
			return t.UTC().Truncate(time.Second), nil
		}
	}
	return nil, fmt.Errorf("%q is not a timestamp", clip(b))
}

// parseUTCTimestamp reads "YYYY-MM-DD hh:mm:ss[.f…]+00", dropping the
// fraction (DateTime has whole seconds); ok is false for anything else, which
// then takes the general path.
func parseUTCTimestamp(b []byte) (time.Time, bool) {
	if len(b) < 22 || b[4] != '-' || b[7] != '-' || b[10] != ' ' || b[13] != ':' || b[16] != ':' {
		return time.Time{}, false
	}
	tz := len(b) - 3
	if b[tz] != '+' || b[tz+1] != '0' || b[tz+2] != '0' {
		return time.Time{}, false
	}
	if tz != 19 {
		if b[19] != '.' || tz == 20 {
			return time.Time{}, false
		}
		for _, c := range b[20:tz] {
			if c < '0' || c > '9' {
				return time.Time{}, false
			}
		}
	}
	num := func(from, to int) (int, bool) {
		n := 0
		for _, c := range b[from:to] {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	y, ok1 := num(0, 4)
	mo, ok2 := num(5, 7)
	d, ok3 := num(8, 10)
	h, ok4 := num(11, 13)
	mi, ok5 := num(14, 16)
	sec, ok6 := num(17, 19)
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 59 {
		return time.Time{}, false
	}
	t := time.Date(y, time.Month(mo), d, h, mi, sec, 0, time.UTC)
	if t.Day() != d || t.Before(minDateTime) || !t.Before(maxDateTime) {
		return time.Time{}, false // Feb 30 and out-of-range years take the general path and its error
	}
	return t, true
}

func parseDate(b []byte) (any, error) {
	t, err := time.Parse("2006-01-02", string(b))
	if err != nil {
		v, err2 := parseDateTime(b)
		if err2 != nil {
			return nil, fmt.Errorf("%q is not a date", clip(b))
		}
		t = v.(time.Time)
	}
	return t, nil
}

func parseBool(b []byte) (any, error) {
	switch string(b) {
	case "t", "true", "1":
		return true, nil
	case "f", "false", "0":
		return false, nil
	}
	return nil, fmt.Errorf("%q is not a boolean", clip(b))
}

func parseUint(b []byte, bits int) (any, error) {
	s := string(b)
	if s == "t" || s == "f" { // PostgreSQL boolean into a UInt8 flag
		if s == "t" {
			return castUint(1, bits), nil
		}
		return castUint(0, bits), nil
	}
	n, err := strconv.ParseUint(s, 10, bits)
	if err != nil {
		return nil, fmt.Errorf("%q does not fit UInt%d", clip(b), bits)
	}
	return castUint(n, bits), nil
}

func parseInt(b []byte, bits int) (any, error) {
	n, err := strconv.ParseInt(string(b), 10, bits)
	if err != nil {
		return nil, fmt.Errorf("%q does not fit Int%d", clip(b), bits)
	}
	return castInt(n, bits), nil
}

func zeroUint(bits int) any  { return castUint(0, bits) }
func zeroInt(bits int) any   { return castInt(0, bits) }
func zeroFloat(bits int) any { return map[int]any{32: float32(0), 64: float64(0)}[bits] }

func castUint(n uint64, bits int) any {
	switch bits {
	case 8:
		return uint8(n)
	case 16:
		return uint16(n)
	case 32:
		return uint32(n)
	}
	return n
}

func castInt(n int64, bits int) any {
	switch bits {
	case 8:
		return int8(n)
	case 16:
		return int16(n)
	case 32:
		return int32(n)
	}
	return n
}

// traceID extracts the trace id from a W3C traceparent
// ("00-<32 hex trace id>-<16 hex span id>-<2 hex flags>"); anything else
// yields "" — trace context is advisory and never a reason to refuse a row.
func traceID(v decoder.Value) string {
	b := v.Data
	if v.Kind != decoder.ValueText || len(b) != 55 || b[2] != '-' || b[35] != '-' || b[52] != '-' {
		return ""
	}
	id, zero := b[3:35], true
	for _, c := range id {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return ""
		}
		zero = zero && c == '0'
	}
	if zero {
		return ""
	}
	return string(id)
}
