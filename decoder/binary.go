package decoder

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
)

// pgoutput sends a column in binary (its type's send function) instead of
// text when the session asks for `binary 'true'`. Formatting text is a large
// part of what the walsender spends per row — timestamptz_out most of all —
// and the binary forms of the outbox's own types are trivial to print. So
// cdc asks for binary when every published column has one of the types
// below, and prints each value here exactly as PostgreSQL's output function
// would under the session's settings (TimeZone UTC, DateStyle ISO:
// replication.TextParams). Everything after the decoder — conversion for
// the sink, dead letters, and backfill, which reads the output functions'
// text from the table — sees the same text as in a session without
// binary.

// PostgreSQL type OIDs (pg_type.dat) of the types printed here.
const (
	oidBool        = 16
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidText        = 25
	oidJSON        = 114
	oidBpchar      = 1042
	oidVarchar     = 1043
	oidDate        = 1082
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidUUID        = 2950
	oidJSONB       = 3802
)

// ReadsBinary reports whether the decoder prints a binary value of the type
// with this OID as its text. A session may ask for binary values only when
// every published column's type is one of these.
func ReadsBinary(oid uint32) bool {
	_, ok := textBound(oid, 0)
	return ok
}

// BinaryError is a binary value the decoder cannot print: of a type it does
// not know (a column added since the session chose binary), or malformed.
// The replication session starts again without binary values.
type BinaryError struct {
	Column  string
	TypeOID uint32
	Reason  string
}

func (e *BinaryError) Error() string {
	return fmt.Sprintf("column %q (type oid %d): binary value %s", e.Column, e.TypeOID, e.Reason)
}

// textBound is the most bytes the text of a binary value of n bytes takes;
// false for a type the decoder does not print.
func textBound(oid uint32, n int) (int, bool) {
	switch oid {
	case oidBool:
		return 1, true
	case oidInt2:
		return len("-32768"), true
	case oidInt4:
		return len("-2147483648"), true
	case oidInt8:
		return len("-9223372036854775808"), true
	case oidUUID:
		return 36, true
	case oidDate:
		return len("5874897-12-31 BC"), true
	case oidTimestamp, oidTimestamptz:
		return len("294276-12-31 23:59:59.999999+00 BC"), true
	case oidText, oidVarchar, oidBpchar, oidJSON:
		return n, true
	case oidJSONB:
		return max(n-1, 0), true
	}
	return 0, false
}

// secondsDay is the seconds of a day. Binary dates count days, and binary
// timestamps microseconds, from PostgreSQL's epoch, 2000-01-01 (civil);
// their infinities are the extreme values of each form (DATE_NOBEGIN,
// DATE_NOEND, DT_NOBEGIN, DT_NOEND).
const secondsDay = 86400

// appendText appends the text PostgreSQL prints for the binary value data
// of type oid.
func appendText(buf []byte, oid uint32, data []byte) ([]byte, string) {
	fixed := func(n int) bool { return len(data) == n }
	switch oid {
	case oidText, oidVarchar, oidBpchar, oidJSON:
		// textsend and json_send send the text itself.
		return append(buf, data...), ""
	case oidJSONB:
		// jsonb_send: a version byte, then jsonb_out's text.
		if len(data) == 0 || data[0] != 1 {
			return buf, "is not jsonb of version 1"
		}
		return append(buf, data[1:]...), ""
	case oidBool:
		if !fixed(1) || data[0] > 1 {
			return buf, "is not a bool"
		}
		if data[0] == 1 {
			return append(buf, 't'), ""
		}
		return append(buf, 'f'), ""
	case oidInt2:
		if !fixed(2) {
			return buf, "is not 2 bytes"
		}
		return strconv.AppendInt(buf, int64(int16(binary.BigEndian.Uint16(data))), 10), ""
	case oidInt4:
		if !fixed(4) {
			return buf, "is not 4 bytes"
		}
		return strconv.AppendInt(buf, int64(int32(binary.BigEndian.Uint32(data))), 10), ""
	case oidInt8:
		if !fixed(8) {
			return buf, "is not 8 bytes"
		}
		return strconv.AppendInt(buf, int64(binary.BigEndian.Uint64(data)), 10), ""
	case oidUUID:
		if !fixed(16) {
			return buf, "is not 16 bytes"
		}
		return appendUUID(buf, data), ""
	case oidDate:
		if !fixed(4) {
			return buf, "is not 4 bytes"
		}
		switch days := int32(binary.BigEndian.Uint32(data)); days {
		case math.MinInt32:
			return append(buf, "-infinity"...), ""
		case math.MaxInt32:
			return append(buf, "infinity"...), ""
		default:
			y, m, d := civil(int64(days))
			return appendEra(appendDate(buf, y, m, d), y), ""
		}
	case oidTimestamp, oidTimestamptz:
		if !fixed(8) {
			return buf, "is not 8 bytes"
		}
		switch us := int64(binary.BigEndian.Uint64(data)); us {
		case math.MinInt64:
			return append(buf, "-infinity"...), ""
		case math.MaxInt64:
			return append(buf, "infinity"...), ""
		default:
			sec, frac := floorDiv(us, 1e6)
			days, clock := floorDiv(sec, secondsDay)
			y, m, d := civil(days)
			buf = appendDate(buf, y, m, d)
			buf = append(buf, ' ')
			buf = append2(buf, int(clock/3600))
			buf = append(buf, ':')
			buf = append2(buf, int(clock/60%60))
			buf = append(buf, ':')
			buf = append2(buf, int(clock%60))
			if frac != 0 {
				// Six digits, trailing zeros dropped, as
				// AppendSeconds prints them.
				var digits [7]byte
				digits[0] = '.'
				for i, f := 6, frac; i > 0; i-- {
					digits[i] = byte('0' + f%10)
					f /= 10
				}
				n := 7
				for digits[n-1] == '0' {
					n--
				}
				buf = append(buf, digits[:n]...)
			}
			if oid == oidTimestamptz {
				buf = append(buf, "+00"...) // the session's TimeZone is UTC
			}
			return appendEra(buf, y), ""
		}
	}
	return buf, "of a type cdc reads only as text"
}

// floorDiv is a / b rounded toward minus infinity, and the remainder (0 <=
// rem < b): a timestamp before 2000 is a negative count of microseconds
// whose fraction still counts up from the second before.
func floorDiv(a, b int64) (q, rem int64) {
	q, rem = a/b, a%b
	if rem < 0 {
		q--
		rem += b
	}
	return q, rem
}

// civil is the proleptic Gregorian date of a day counted from PostgreSQL's
// epoch, 2000-01-01, as PostgreSQL's j2date computes it: the year
// astronomical (0 is 1 BC). Howard Hinnant's days_from_civil inverse, in
// 400-year eras of 146,097 days counted from 0000-03-01.
func civil(days int64) (year int64, month, day int) {
	z := days + 10957 + 719468 // to days from 1970-01-01, then from 0000-03-01
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := z - era*146097                                  // [0, 146096]
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365 // [0, 399]
	doy := doe - (365*yoe + yoe/4 - yoe/100)               // [0, 365]
	mp := (5*doy + 2) / 153                                // [0, 11], March first
	day = int(doy - (153*mp+2)/5 + 1)
	month = int(mp + 3)
	if month > 12 {
		month -= 12
	}
	year = yoe + era*400
	if month <= 2 {
		year++
	}
	return year, month, day
}

// appendDate appends ISO year-month-day as PostgreSQL prints it: the year
// at least four digits, years before 1 as BC years (astronomical year 0 is
// 1 BC), the era itself added by appendEra after the time.
func appendDate(buf []byte, year int64, month, day int) []byte {
	if year <= 0 {
		year = 1 - year
	}
	for div := int64(1000); div > 1 && year < div; div /= 10 {
		buf = append(buf, '0')
	}
	buf = strconv.AppendInt(buf, year, 10)
	buf = append(buf, '-')
	buf = append2(buf, month)
	buf = append(buf, '-')
	return append2(buf, day)
}

func appendEra(buf []byte, year int64) []byte {
	if year <= 0 {
		return append(buf, " BC"...)
	}
	return buf
}

func append2(buf []byte, v int) []byte {
	return append(buf, byte('0'+v/10), byte('0'+v%10))
}

func appendUUID(buf []byte, u []byte) []byte {
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:36], u[10:16])
	return append(buf, s[:]...)
}
