package decoder

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// reader walks one message front to back. The first read that does not fit
// records an error and every later read returns zero values, so a decode
// function can read a run of fields and check r.err once; nothing ever
// indexes past the end of the message.
type reader struct {
	b   []byte
	off int
	err error
}

// need reports whether n more bytes are there, recording why not otherwise.
func (r *reader) need(n int, what string) bool {
	if r.err != nil {
		return false
	}
	if left := len(r.b) - r.off; n > left {
		r.err = fmt.Errorf("truncated reading %s: need %d bytes at offset %d, message is %d bytes", what, n, r.off, len(r.b))
		return false
	}
	return true
}

func (r *reader) uint8(what string) byte {
	if !r.need(1, what) {
		return 0
	}
	v := r.b[r.off]
	r.off++
	return v
}

func (r *reader) int16(what string) int16 {
	if !r.need(2, what) {
		return 0
	}
	v := binary.BigEndian.Uint16(r.b[r.off:])
	r.off += 2
	return int16(v)
}

func (r *reader) uint32(what string) uint32 {
	if !r.need(4, what) {
		return 0
	}
	v := binary.BigEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v
}

func (r *reader) int32(what string) int32 { return int32(r.uint32(what)) }

func (r *reader) uint64(what string) uint64 {
	if !r.need(8, what) {
		return 0
	}
	v := binary.BigEndian.Uint64(r.b[r.off:])
	r.off += 8
	return v
}

// bytes returns the next n bytes, aliasing the message. The length comes off
// the wire, so a negative or oversized one is an error, not a slice panic.
func (r *reader) bytes(n int32, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 {
		r.err = fmt.Errorf("negative %s length %d", what, n)
		return nil
	}
	if left := len(r.b) - r.off; int(n) > left {
		r.err = fmt.Errorf("%s length %d exceeds the %d bytes left", what, n, left)
		return nil
	}
	v := r.b[r.off : r.off+int(n) : r.off+int(n)]
	r.off += int(n)
	return v
}

// cstring returns a NUL-terminated String field without its terminator,
// aliasing the message.
func (r *reader) cstring(what string) []byte {
	if r.err != nil {
		return nil
	}
	i := bytes.IndexByte(r.b[r.off:], 0)
	if i < 0 {
		r.err = fmt.Errorf("unterminated %s string at offset %d", what, r.off)
		return nil
	}
	v := r.b[r.off : r.off+i]
	r.off += i + 1
	return v
}

// end records an error if bytes are left over: pgoutput never pads, so
// leftovers mean the message is not what we think it is.
func (r *reader) end(after string) {
	if r.err == nil && r.off != len(r.b) {
		r.err = fmt.Errorf("%d unexpected bytes after %s", len(r.b)-r.off, after)
	}
}

// value reads one TupleData column. Data aliases the message.
func (r *reader) value() Value {
	kind := ValueKind(r.uint8("value kind"))
	if r.err != nil {
		return Value{}
	}
	switch kind {
	case ValueNull, ValueUnchanged:
		return Value{Kind: kind}
	case ValueText, ValueBinary:
		n := r.int32("value length")
		return Value{Kind: kind, Data: r.bytes(n, "value")}
	}
	r.err = fmt.Errorf("unknown value kind %q", byte(kind))
	return Value{}
}
