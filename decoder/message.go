package decoder

import (
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"
)

// Kind says which of the messages the pipeline cares about a Message is.
type Kind uint8

const (
	KindBegin Kind = iota + 1
	KindCommit
	KindRelation
	KindInsert
	// KindIgnored covers Update, Delete, Truncate, Type, Origin and logical
	// decoding Message: decoded far enough to know they are well formed,
	// then dropped, since cdc ships inserts only.
	KindIgnored
	// The stream kinds frame a transaction PostgreSQL sends in blocks
	// before it commits (protocol version 2, streaming on): each block
	// between a StreamStart and a StreamStop, then one StreamCommit or
	// StreamAbort.
	KindStreamStart
	KindStreamStop
	KindStreamCommit
	KindStreamAbort
)

var kindNames = [...]string{
	KindBegin:    "begin",
	KindCommit:   "commit",
	KindRelation: "relation",
	KindInsert:   "insert",
	KindIgnored:  "ignored",

	KindStreamStart:  "stream start",
	KindStreamStop:   "stream stop",
	KindStreamCommit: "stream commit",
	KindStreamAbort:  "stream abort",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Message is one decoded pgoutput message. Returned by value so decoding does
// not box.
type Message struct {
	Kind       Kind
	LSN        pglogrepl.LSN // Begin: final LSN (of the commit record); Commit, StreamCommit: commit LSN
	EndLSN     pglogrepl.LSN // Commit, StreamCommit: end LSN of the transaction (what a consumer acknowledges)
	CommitTime time.Time     // Begin, Commit and StreamCommit, in UTC
	// Xid: Begin, the stream kinds, and every message inside a stream,
	// where it is the xid of the subtransaction that made the change (or
	// of the transaction itself).
	Xid          uint32
	SubXid       uint32    // StreamAbort: the subtransaction rolled back; equal to Xid when the whole transaction was
	FirstSegment bool      // StreamStart: the transaction's first block
	Relation     *Relation // Relation, Insert (and Update/Delete/Truncate when known, else nil)
	Values       []Value   // Insert: the new tuple, one per Relation.Columns entry, same order
	Size         int       // Insert: total bytes of the values' Data (for batch byte accounting)
}

// Relation is a table as pgoutput announced it. A Decoder never changes a
// Relation it has handed out: a later Relation message for the same table
// yields a new one, so rows already decoded keep the shape they were
// decoded with.
type Relation struct {
	ID        uint32 // the table's OID
	Namespace string // schema; empty for pg_catalog
	Name      string
	Columns   []Column // published columns, in tuple order
}

// Index returns the position of the column with that name, or -1.
func (r *Relation) Index(name string) int {
	if r == nil {
		return -1
	}
	for i := range r.Columns {
		if r.Columns[i].Name == name {
			return i
		}
	}
	return -1
}

// qualifiedName is for error messages.
func (r *Relation) qualifiedName() string {
	if r.Namespace == "" {
		return strconv.Quote(r.Name)
	}
	return strconv.Quote(r.Namespace + "." + r.Name)
}

// Column is one published column of a Relation.
type Column struct {
	Name    string
	TypeOID uint32
	Key     bool // flags bit 1: part of the replica identity key
}

// ValueKind is the TupleData tag of one column value.
type ValueKind byte

const (
	ValueNull      ValueKind = 'n'
	ValueUnchanged ValueKind = 'u' // unchanged TOASTed value
	ValueText      ValueKind = 't'
	ValueBinary    ValueKind = 'b'
)

// Value is one column of a tuple. Data is nil for ValueNull and
// ValueUnchanged and non-nil (possibly empty) for ValueText and ValueBinary.
type Value struct {
	Kind ValueKind
	Data []byte
}
