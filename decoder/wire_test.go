package decoder

import (
	"encoding/binary"
	"time"
)

// wire builds pgoutput messages by hand, field by field, the way
// PostgreSQL's proto.c writes them (big-endian, NUL-terminated strings).
type wire []byte

func (w wire) u8(v byte) wire    { return append(w, v) }
func (w wire) i16(v int16) wire  { return binary.BigEndian.AppendUint16(w, uint16(v)) }
func (w wire) u32(v uint32) wire { return binary.BigEndian.AppendUint32(w, v) }
func (w wire) i32(v int32) wire  { return w.u32(uint32(v)) }
func (w wire) u64(v uint64) wire { return binary.BigEndian.AppendUint64(w, v) }
func (w wire) str(s string) wire { return append(append(w, s...), 0) }
func (w wire) raw(s string) wire { return append(w, s...) }

// tuple appends TupleData holding vals.
func (w wire) tuple(vals ...Value) wire {
	w = w.i16(int16(len(vals)))
	for _, v := range vals {
		w = w.u8(byte(v.Kind))
		if v.Kind == ValueText || v.Kind == ValueBinary {
			w = w.i32(int32(len(v.Data))).raw(string(v.Data))
		}
	}
	return w
}

// pgMicros converts t to a pgoutput timestamp.
func pgMicros(t time.Time) uint64 { return uint64(t.UnixMicro() - pgEpochUnix*1e6) }

func beginMsg(final uint64, t time.Time, xid uint32) []byte {
	return wire{'B'}.u64(final).u64(pgMicros(t)).u32(xid)
}

func commitMsg(lsn, end uint64, t time.Time) []byte {
	return wire{'C'}.u8(0).u64(lsn).u64(end).u64(pgMicros(t))
}

// relationMsg announces rel with replica identity default; a key column
// gets flags 1 and every column type modifier -1, as for text.
func relationMsg(rel *Relation) []byte {
	w := wire{'R'}.u32(rel.ID).str(rel.Namespace).str(rel.Name).u8('d').i16(int16(len(rel.Columns)))
	for _, c := range rel.Columns {
		var flags byte
		if c.Key {
			flags = 1
		}
		w = w.u8(flags).str(c.Name).u32(c.TypeOID).i32(-1)
	}
	return w
}

func insertMsg(id uint32, vals ...Value) []byte {
	return wire{'I'}.u32(id).u8('N').tuple(vals...)
}

func text(s string) Value { return Value{Kind: ValueText, Data: []byte(s)} }

var (
	null      = Value{Kind: ValueNull}
	unchanged = Value{Kind: ValueUnchanged}
)

// outboxRelation returns a fresh copy of the outbox table as pgoutput
// announces it (see sql/postgres.sql), with the given OID.
func outboxRelation(id uint32) *Relation {
	return &Relation{ID: id, Namespace: "public", Name: "outbox", Columns: []Column{
		{Name: "id", TypeOID: oidUUID, Key: true},
		{Name: "event_type", TypeOID: oidText},
		{Name: "event_date_time", TypeOID: oidTimestamptz},
		{Name: "environment", TypeOID: oidText},
		{Name: "event_context", TypeOID: oidJSON},
		{Name: "metadata_version", TypeOID: oidInt8},
		{Name: "traceparent", TypeOID: oidText},
	}}
}
