package sink

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/eventcdc/cdc/decoder"
)

// A cell holds one column's value of the row being appended, converted from
// pgoutput text to the Go type clickhouse-go takes for the column.
// Conversion happens before Append, on purpose: clickhouse-go poisons the
// whole batch when a single Append fails, and a row that cannot be
// converted must become a dead letter, not a stuck batch.
//
// batch.Append receives value(): for most types a pointer to the cell's
// value, which fits in an interface without allocating, so handing a row
// over costs no allocation per value (boxing the values themselves cost
// eight allocations per event).
type cell interface {
	// set converts v into the cell; on error the cell's value is stale and
	// the row must not be appended.
	set(v decoder.Value) error
	value() any
}

var errNotText = errors.New("value is not in text format")

// valueCell converts with parse; NULL becomes the column type's zero value
// (what ClickHouse itself stores for a missing value), and non-text values,
// which an outbox insert never carries, are refused.
type valueCell[T any] struct {
	v, zero T
	parse   func([]byte) (T, error)
	// byValue hands clickhouse-go the value instead of a pointer to it, for
	// the column types whose AppendRow takes no pointer (FixedString,
	// LowCardinality, types cdc does not convert).
	byValue bool
}

func (c *valueCell[T]) set(v decoder.Value) error {
	switch v.Kind {
	case decoder.ValueNull:
		c.v = c.zero
		return nil
	case decoder.ValueText:
		x, err := c.parse(v.Data)
		if err != nil {
			return err
		}
		c.v = x
		return nil
	}
	return errNotText
}

func (c *valueCell[T]) value() any {
	if c.byValue {
		return c.v
	}
	return &c.v
}

// nullCell is a Nullable column: NULL stays NULL.
type nullCell struct {
	inner cell
	null  bool
}

func (c *nullCell) set(v decoder.Value) error {
	if c.null = v.Kind == decoder.ValueNull; c.null {
		return nil
	}
	return c.inner.set(v)
}

func (c *nullCell) value() any {
	if c.null {
		return nil
	}
	return c.inner.value()
}

// traceCell is event_log.trace_id: the trace id of a W3C traceparent, or
// "" for anything else.
type traceCell struct {
	v       []byte
	byValue bool // not a String column: hand over a string
}

func (c *traceCell) set(v decoder.Value) error {
	c.v = traceID(v)
	return nil
}

func (c *traceCell) value() any {
	if c.byValue {
		return string(c.v)
	}
	return &c.v
}

// lowCardinalityCell hands a LowCardinality column a string where the
// inner cell holds bytes: clickhouse-go keys its dictionary by the value, and
// a []byte key panics (hash of unhashable type), which would stop the
// connector on every row.
type lowCardinalityCell struct{ inner cell }

func (c *lowCardinalityCell) set(v decoder.Value) error { return c.inner.set(v) }

func (c *lowCardinalityCell) value() any {
	v := c.inner.value()
	if b, ok := v.([]byte); ok {
		return string(b)
	}
	return v
}

// serverTypes is what the server's version changes in the conversion of
// values into its types.
type serverTypes struct {
	// dateEnd is the first day a Date column does not hold: 2149-06-07,
	// or 2106-02-08 on a server (18.16) that reads the days from then on
	// back as 1970-01-01 (they are stored; every function and format
	// reads them wrong).
	dateEnd time.Time
}

// fullDates is a server whose Date holds every day of its UInt16
// (23.8 does).
var fullDates = serverTypes{dateEnd: maxDate}

// cellFor returns the cell for a ClickHouse type name as the server reports
// it, e.g. "UInt64", "Nullable(String)", "DateTime('UTC')".
func (st serverTypes) cellFor(chType string) cell { return st.newCell(chType, false) }

func (st serverTypes) newCell(chType string, byValue bool) cell {
	if inner, ok := unwrap(chType, "Nullable"); ok {
		return &nullCell{inner: st.newCell(inner, byValue)}
	}
	if inner, ok := unwrap(chType, "LowCardinality"); ok {
		return &lowCardinalityCell{inner: st.newCell(inner, true)}
	}
	switch {
	case chType == "String":
		return &valueCell[[]byte]{parse: parseString, byValue: byValue}
	case strings.HasPrefix(chType, "FixedString("):
		return &valueCell[[]byte]{parse: parseFixedString(chType), byValue: true}
	case chType == "UUID":
		return &valueCell[uuid.UUID]{parse: parseUUID, byValue: byValue}
	case strings.HasPrefix(chType, "DateTime64("):
		return &valueCell[time.Time]{zero: epoch, parse: parseDateTime64(dateTime64Precision(chType)), byValue: byValue}
	case chType == "DateTime" || strings.HasPrefix(chType, "DateTime("):
		return &valueCell[time.Time]{zero: epoch, parse: parseDateTime, byValue: byValue}
	case chType == "Date":
		return &valueCell[time.Time]{zero: epoch, parse: parseDate(st.dateEnd), byValue: byValue}
	case chType == "Bool":
		return &valueCell[bool]{parse: parseBool, byValue: byValue}
	case chType == "UInt8":
		return &valueCell[uint8]{parse: parseUint[uint8](8), byValue: byValue}
	case chType == "UInt16":
		return &valueCell[uint16]{parse: parseUint[uint16](16), byValue: byValue}
	case chType == "UInt32":
		return &valueCell[uint32]{parse: parseUint[uint32](32), byValue: byValue}
	case chType == "UInt64":
		return &valueCell[uint64]{parse: parseUint[uint64](64), byValue: byValue}
	case chType == "Int8":
		return &valueCell[int8]{parse: parseInt[int8](8), byValue: byValue}
	case chType == "Int16":
		return &valueCell[int16]{parse: parseInt[int16](16), byValue: byValue}
	case chType == "Int32":
		return &valueCell[int32]{parse: parseInt[int32](32), byValue: byValue}
	case chType == "Int64":
		return &valueCell[int64]{parse: parseInt[int64](64), byValue: byValue}
	case chType == "Float32":
		return &valueCell[float32]{parse: parseFloat[float32](32, chType), byValue: byValue}
	case chType == "Float64":
		return &valueCell[float64]{parse: parseFloat[float64](64, chType), byValue: byValue}
	}
	if strings.HasPrefix(chType, "Array(") {
		return st.newArrayCell(chType)
	}
	if composite(chType) {
		return refusedCell{fmt.Errorf("cdc does not convert values into %s: make the event_log column a String (json arrives as JSON text)", chType)}
	}
	return newTextCell(chType)
}

// composite is a Map, Tuple or Nested type, which cdc does not fill.
func composite(chType string) bool {
	for _, prefix := range []string{"Map(", "Tuple(", "Nested("} {
		if strings.HasPrefix(chType, prefix) {
			return true
		}
	}
	return false
}

// refusedCell is a column type cdc does not fill (Map, Tuple, Nested):
// each row that has the column is refused, as a dead letter, rather than
// handed to clickhouse-go as text, which it does not parse for them — an
// Array given '{1,2,3}' stored the text's bytes, [123,49,44,...], without
// an error.
type refusedCell struct{ err error }

func (c refusedCell) set(decoder.Value) error { return c.err }
func (c refusedCell) value() any              { return nil }

// textCell is a column type this connector does not convert (Decimal,
// Enum8, IPv4, Date32, …): clickhouse-go gets the text and parses it. Each
// value is first appended to a column of the same type that is never sent,
// so a value clickhouse-go refuses refuses its row here, as a dead letter,
// instead of failing batch.Append, which would cost the whole batch and a
// connection per bad row. NULL, and a column the row does not have, go as
// nil: clickhouse-go's zero value for the type (0 for a Decimal) — except
// for an Enum, where that would store 0, which need not be an element and
// then breaks reading the row; NULL is refused there. The server may still
// refuse a value; write then bisects the INSERT to the rows it refuses.
//
// Where clickhouse-go would alter a value it takes, conv checks it first:
// a Decimal with more digits than the column keeps (clickhouse-go cuts
// them), a Date32 outside its range (ClickHouse clamps it). conv also
// gives clickhouse-go what it takes for a type it cannot parse from text
// (a *big.Int for Int128 to UInt256).
type textCell struct {
	typ    string
	v      any // what set made of the text: the text itself unless conv says otherwise
	null   bool
	noNull bool                      // an Enum: NULL has no value
	conv   func([]byte) (any, error) // nil: the text goes as it is
	probe  column.Interface          // nil when clickhouse-go does not know the type: the INSERT will say
}

func newTextCell(chType string) *textCell {
	probe, err := column.Type(chType).Column("probe", &column.ServerContext{Timezone: time.UTC})
	if err != nil {
		probe = nil
	}
	return &textCell{typ: chType, probe: probe, noNull: strings.HasPrefix(chType, "Enum"), conv: textConv(chType)}
}

func (c *textCell) set(v decoder.Value) error {
	switch v.Kind {
	case decoder.ValueNull:
		if c.noNull {
			return fmt.Errorf("NULL is not an element of %s: give the outbox column a DEFAULT or make the event_log column Nullable", c.typ)
		}
		c.null = true
	case decoder.ValueText:
		c.null = false
		if c.conv == nil {
			c.v = string(v.Data)
			break
		}
		x, err := c.conv(v.Data)
		if err != nil {
			return err
		}
		c.v = x
	default:
		return errNotText
	}
	if c.probe == nil {
		return nil
	}
	if err := c.tryProbe(); err != nil {
		if c.null {
			return fmt.Errorf("NULL has no value in %s: %w", c.typ, err)
		}
		return fmt.Errorf("%q is not a %s: %w", clip(v.Data), c.typ, err)
	}
	return nil
}

// tryProbe appends the value to the probe column. A value clickhouse-go
// cannot take may panic there instead of returning an error (an IPv6
// address into IPv4 did before v2.51): that row is refused too, not the
// process stopped, which would meet the same row again after every
// restart.
func (c *textCell) tryProbe() (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("clickhouse-go panicked: %v", p)
		}
		c.probe.Reset()
	}()
	return c.probe.AppendRow(c.value())
}

func (c *textCell) value() any {
	if c.null {
		return nil
	}
	return c.v
}

// textConv is the check, and the conversion, a type cdc hands over as
// text needs; nil for none.
func textConv(chType string) func([]byte) (any, error) {
	if precision, scale, ok := decimalType(chType); ok {
		return func(b []byte) (any, error) { return parseDecimal(b, precision, scale, chType) }
	}
	switch chType {
	case "IPv4":
		return parseIPv4
	case "Date32":
		return parseDate32
	case "Int128", "Int256":
		return parseBigInt(chType, true)
	case "UInt128", "UInt256":
		return parseBigInt(chType, false)
	}
	return nil
}

// decimalType reads the precision and scale of "Decimal(P, S)", as servers
// report a Decimal column, or of the aliases Decimal32(S) to Decimal256(S).
func decimalType(chType string) (precision, scale int, ok bool) {
	var err error
	if args, found := unwrap(chType, "Decimal"); found {
		p, s, two := strings.Cut(args, ",")
		if !two {
			return 0, 0, false
		}
		if precision, err = strconv.Atoi(strings.TrimSpace(p)); err != nil {
			return 0, 0, false
		}
		if scale, err = strconv.Atoi(strings.TrimSpace(s)); err != nil {
			return 0, 0, false
		}
		return precision, scale, precision > 0 && scale >= 0 && scale <= precision
	}
	for _, alias := range []struct {
		name      string
		precision int
	}{{"Decimal32", 9}, {"Decimal64", 18}, {"Decimal128", 38}, {"Decimal256", 76}} {
		if args, found := unwrap(chType, alias.name); found {
			if scale, err = strconv.Atoi(strings.TrimSpace(args)); err != nil {
				return 0, 0, false
			}
			return alias.precision, scale, scale >= 0 && scale <= alias.precision
		}
	}
	return 0, 0, false
}

// parseDecimal refuses what a Decimal(precision, scale) cannot hold
// exactly: clickhouse-go cuts the digits past the scale (19.999 into
// Decimal(10, 2) would be 19.99) and checks the integer part only against
// the type's 32 to 256 bits, not its precision. Trailing zeros past the
// scale change nothing and pass.
func parseDecimal(b []byte, precision, scale int, chType string) (any, error) {
	d, err := decimal.NewFromString(string(b))
	if err != nil {
		return nil, fmt.Errorf("%q is not a %s", clip(b), chType)
	}
	if !d.Equal(d.Truncate(int32(scale))) {
		return nil, fmt.Errorf("%q has more than %d decimal places: %s would cut it", clip(b), scale, chType)
	}
	if !d.Abs().LessThan(decimal.New(1, int32(precision-scale))) {
		return nil, fmt.Errorf("%q has more than %d digits before the point: it does not fit %s", clip(b), precision-scale, chType)
	}
	return d, nil
}

// Date32 holds 1900-01-01 to 2299-12-31; ClickHouse clamps a day outside
// that range to its ends, and clickhouse-go does not check.
var (
	minDate32 = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)
	maxDate32 = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC) // exclusive
)

// parseDate32 hands a plain date over as its midnight in UTC, which
// clickhouse-go turns into the day number as it is. Handed the text,
// clickhouse-go read it as midnight in the server's time zone, and where
// that midnight does not exist (a DST change at 00:00: Santiago, São
// Paulo, Havana, the Azores) Go moves it to 23:00 the day before, which
// was the day stored.
func parseDate32(b []byte) (any, error) {
	t, err := time.Parse("2006-01-02", string(b))
	if err != nil && farYear(b) {
		return nil, fmt.Errorf("%q is outside Date32's range 1900-01-01 to 2299-12-31", clip(b))
	}
	if err != nil {
		return string(b), nil // not a plain date: clickhouse-go's parse decides
	}
	if t.Before(minDate32) || !t.Before(maxDate32) {
		return nil, fmt.Errorf("%q is outside Date32's range 1900-01-01 to 2299-12-31", clip(b))
	}
	return t, nil
}

// parseBigInt reads a whole number for a 128- or 256-bit column, which
// clickhouse-go takes as a *big.Int only; it checks the range itself.
func parseBigInt(chType string, signed bool) func([]byte) (any, error) {
	return func(b []byte) (any, error) {
		n, ok := new(big.Int).SetString(string(b), 10)
		if !ok {
			return nil, fmt.Errorf("%q is not a whole number for %s", clip(b), chType)
		}
		if !signed && n.Sign() < 0 {
			return nil, fmt.Errorf("%q is negative: it does not fit %s", clip(b), chType)
		}
		return n, nil
	}
}

func parseString(b []byte) ([]byte, error) { return b, nil }

// parseFixedString refuses a value longer than FixedString(N)'s N bytes,
// which clickhouse-go would refuse at Append, poisoning the whole INSERT.
// A shorter one is padded with zero bytes by ClickHouse, as its own
// INSERT does.
func parseFixedString(chType string) func([]byte) ([]byte, error) {
	n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(chType, "FixedString("), ")"))
	if err != nil || n < 0 {
		return parseString // a form this reading does not know: the server judges
	}
	return func(b []byte) ([]byte, error) {
		if len(b) > n {
			return nil, fmt.Errorf("%q is %d bytes: it does not fit %s", clip(b), len(b), chType)
		}
		return b, nil
	}
}

// parseIPv4 refuses an IPv6 address, saying so (clickhouse-go's IPv4
// column panicked on one before v2.51, and says only that it is no IPv4
// address since), and takes an IPv4-mapped one
// (::ffff:192.0.2.1, as dual-stack servers log clients) as its IPv4
// address; other text goes to clickhouse-go's parse as it is.
func parseIPv4(b []byte) (any, error) {
	a, err := netip.ParseAddr(string(b))
	switch {
	case err != nil || a.Is4():
		return string(b), nil
	case a.Is4In6():
		return a.Unmap().String(), nil
	}
	return nil, fmt.Errorf("%q is an IPv6 address: it does not fit IPv4", clip(b))
}

func parseUUID(b []byte) (uuid.UUID, error) {
	u, err := uuid.ParseBytes(b)
	if err != nil {
		return uuid.UUID{}, fmt.Errorf("%q is not a UUID", clip(b))
	}
	return u, nil
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

// DateTime is seconds since 1970 in a UInt32 on every server version; 18.16
// reads the last hours of that range, from 2106-02-07 on, back as 1970, so
// the range ends a day early. Date is days since 1970 in a UInt16.
// DateTime64 is ticks in an Int64, and 23.8 supports 1900 to 2299 for it;
// clickhouse-go computes the ticks from nanoseconds since 1970, which an
// int64 holds only until 2262-04-11, so the range ends the day before.
var (
	minDateTime   = time.Unix(0, 0)
	maxDateTime   = time.Date(2106, 2, 7, 0, 0, 0, 0, time.UTC)
	maxDate       = time.Unix((math.MaxUint16+1)*86400, 0).UTC() // 2149-06-07, exclusive
	maxDate1816   = time.Date(2106, 2, 8, 0, 0, 0, 0, time.UTC)  // exclusive; serverTypes
	minDateTime64 = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)
	maxDateTime64 = time.Date(2262, 4, 11, 0, 0, 0, 0, time.UTC)
	epoch         = time.Unix(0, 0).UTC() // a NULL DateTime, DateTime64 or Date
)

// PostgreSQL's ISO output of timestamptz and timestamp; cdc sets
// TimeZone=UTC and DateStyle=ISO on its replication session.
// A date alone (an outbox column of type date) is its midnight, in UTC,
// like a timestamp without a zone.
var timestampLayouts = []string{
	"2006-01-02 15:04:05.999999999Z07",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999Z07:00:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02",
}

func parseDateTime(b []byte) (time.Time, error) {
	// Fast path for the form cdc's session always produces,
	// "2006-01-02 15:04:05[.ffffff]+00": no layout search, no allocation.
	if t, ok := parseUTCTimestamp(b); ok {
		return t, nil
	}
	t, err := parseTimestamp(b)
	if err != nil && !farYear(b) {
		return time.Time{}, err
	}
	if err != nil || t.Before(minDateTime) || !t.Before(maxDateTime) {
		return time.Time{}, fmt.Errorf("%q is outside DateTime's range 1970-01-01 to 2106-02-06", b)
	}
	return t.Truncate(time.Second), nil
}

// parseTimestamp reads any of PostgreSQL's ISO timestamp forms, in UTC.
func parseTimestamp(b []byte) (time.Time, error) {
	s := string(b)
	for _, layout := range timestampLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a timestamp", clip(b))
}

// farYear reports whether b is a date or timestamp PostgreSQL prints
// with a year Go's layouts cannot read: one before year 1 ("… BC") or
// after 9999 (five or six digits). Every ClickHouse date type ends long
// before either, so such a value is outside its range, not malformed.
func farYear(b []byte) bool {
	if bytes.HasSuffix(b, []byte(" BC")) {
		return true
	}
	digits := 0
	for digits < len(b) && b[digits] >= '0' && b[digits] <= '9' {
		digits++
	}
	return digits > 4 && digits < len(b) && b[digits] == '-'
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

// parseDateTime64 keeps the fraction down to the column's precision (0 to
// 9 digits), cut toward the past: clickhouse-go divides nanoseconds since
// 1970, which rounds a time before 1970 toward it instead
// (1969-12-31 23:59:59.9995 would become 1970-01-01 00:00:00.000 at 3).
func parseDateTime64(precision int) func([]byte) (time.Time, error) {
	tick := time.Duration(1)
	for range 9 - precision {
		tick *= 10
	}
	return func(b []byte) (time.Time, error) {
		t, err := parseTimestamp(b)
		if err != nil && !farYear(b) {
			return time.Time{}, err
		}
		if err != nil || t.Before(minDateTime64) || !t.Before(maxDateTime64) {
			return time.Time{}, fmt.Errorf("%q is outside DateTime64's range 1900-01-01 to 2262-04-10", b)
		}
		return t.Truncate(tick), nil
	}
}

// dateTime64Precision reads p from "DateTime64(p)" or "DateTime64(p,
// 'zone')"; 3, ClickHouse's default, when it cannot.
func dateTime64Precision(chType string) int {
	args := strings.TrimSuffix(strings.TrimPrefix(chType, "DateTime64("), ")")
	p, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(args, ",", 2)[0]))
	if err != nil || p < 0 || p > 9 {
		return 3
	}
	return p
}

// parseDate takes a date, or a timestamp's day in UTC, before the day end.
func parseDate(end time.Time) func([]byte) (time.Time, error) {
	last := end.AddDate(0, 0, -1).Format("2006-01-02")
	return func(b []byte) (time.Time, error) {
		t, err := time.Parse("2006-01-02", string(b))
		if err != nil {
			if t, err = parseTimestamp(b); err != nil && !farYear(b) {
				return time.Time{}, fmt.Errorf("%q is not a date", clip(b))
			}
			t = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
		}
		// ClickHouse would wrap a day outside its range into it, silently.
		if err != nil || t.Before(minDateTime) || !t.Before(end) {
			return time.Time{}, fmt.Errorf("%q is outside Date's range 1970-01-01 to %s", clip(b), last)
		}
		return t, nil
	}
}

func parseBool(b []byte) (bool, error) {
	switch string(b) {
	case "t", "true", "1":
		return true, nil
	case "f", "false", "0":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean", clip(b))
}

func parseUint[T uint8 | uint16 | uint32 | uint64](bits int) func([]byte) (T, error) {
	return func(b []byte) (T, error) {
		if bits == 8 { // a PostgreSQL boolean into a UInt8 flag
			switch string(b) {
			case "t":
				return 1, nil
			case "f":
				return 0, nil
			}
		}
		n, err := strconv.ParseUint(string(b), 10, bits)
		if err != nil {
			return 0, fmt.Errorf("%q does not fit UInt%d", clip(b), bits)
		}
		return T(n), nil
	}
}

func parseInt[T int8 | int16 | int32 | int64](bits int) func([]byte) (T, error) {
	return func(b []byte) (T, error) {
		n, err := strconv.ParseInt(string(b), 10, bits)
		if err != nil {
			return 0, fmt.Errorf("%q does not fit Int%d", clip(b), bits)
		}
		return T(n), nil
	}
}

// parseFloat rounds to the column's precision, as ClickHouse's own cast
// does, but refuses a value the rounding would turn into 0 or infinity:
// that is not the value rounded, it is lost.
func parseFloat[T float32 | float64](bits int, name string) func([]byte) (T, error) {
	return func(b []byte) (T, error) {
		f, err := strconv.ParseFloat(string(b), bits)
		if err != nil {
			return 0, fmt.Errorf("%q is not a %s", clip(b), name)
		}
		if f == 0 && nonZeroMantissa(b) {
			return 0, fmt.Errorf("%q is too small for a %s: it would be stored as 0", clip(b), name)
		}
		return T(f), nil
	}
}

// nonZeroMantissa says whether a number's digits before its exponent are
// not all zeros: a value ParseFloat turned into 0 was not 0 then. A hex
// float (0x1.8p-3, which ParseFloat reads too) has hex digits and a p
// before its exponent.
func nonZeroMantissa(b []byte) bool {
	s := strings.TrimLeft(string(b), "+-")
	exp, digits := "eE", "123456789"
	if len(s) > 1 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		s, exp, digits = s[2:], "pP", "123456789abcdefABCDEF"
	}
	if i := strings.IndexAny(s, exp); i >= 0 {
		s = s[:i]
	}
	return strings.ContainsAny(s, digits)
}

// traceID extracts the trace id from a W3C traceparent
// ("00-<32 hex trace id>-<16 hex span id>-<2 hex flags>"); anything else
// yields "" — trace context is advisory and never a reason to refuse a row.
// The id is a slice of v's bytes, not a copy.
func traceID(v decoder.Value) []byte {
	b := v.Data
	if v.Kind != decoder.ValueText || len(b) != 55 || b[2] != '-' || b[35] != '-' || b[52] != '-' {
		return nil
	}
	id, zero := b[3:35], true
	for _, c := range id {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return nil
		}
		zero = zero && c == '0'
	}
	if zero {
		return nil
	}
	return id
}
