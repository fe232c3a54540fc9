package decoder

import (
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
)

// Decoder decodes the messages of one replication stream in order. It keeps
// the relations the stream announced, since Insert messages name their table
// by OID only. The zero value is ready to use.
type Decoder struct {
	rels map[uint32]*Relation
	// inStream is set between a Stream Start and its Stream Stop, where
	// protocol version 2 puts the (sub)transaction's xid after the type
	// byte of every data message.
	inStream bool
	// The unused rest of the chunks rows are carved from (see detach), and
	// the tuple being read.
	valueChunk []Value
	byteChunk  []byte
	scratch    []Value
}

// New returns a Decoder with an empty relation cache.
func New() *Decoder {
	return &Decoder{rels: make(map[uint32]*Relation)}
}

// Relation returns the cached relation with that ID, or nil.
func (d *Decoder) Relation(id uint32) *Relation {
	return d.rels[id]
}

// Decode parses one message. It does not retain data: an Insert's values are
// copied into ONE new buffer per message (Values[i].Data alias that buffer),
// so the caller may reuse data after Decode returns. A Relation message
// replaces the cached relation with a NEW *Relation (one already handed out is
// never mutated: batches in flight still hold it). An Insert for a relation
// never announced is an error.
func (d *Decoder) Decode(data []byte) (Message, error) {
	if len(data) == 0 {
		return Message{}, errors.New("decode: empty message")
	}
	r := reader{b: data, off: 1}
	var (
		m   Message
		err error
		xid uint32
	)
	if d.inStream && streamedData[data[0]] {
		xid = r.uint32("xid")
	}
	// A plain switch rather than a table of method values: binding d into
	// a func value could cost an allocation per message.
	switch data[0] {
	case 'B':
		m, err = decodeBegin(&r)
	case 'C':
		m, err = decodeCommit(&r)
	case 'R':
		m, err = d.decodeRelation(&r)
	case 'I':
		m, err = d.decodeInsert(&r)
	case 'U':
		m, err = d.decodeUpdate(&r)
	case 'D':
		m, err = d.decodeDelete(&r)
	case 'T':
		m, err = d.decodeTruncate(&r)
	case 'Y':
		m, err = decodeType(&r)
	case 'O':
		m, err = decodeOrigin(&r)
	case 'M':
		m, err = decodeLogicalMessage(&r)
	case 'S':
		m, err = d.decodeStreamStart(&r)
	case 'E':
		m, err = d.decodeStreamStop(&r)
	case 'c':
		m, err = d.decodeStreamCommit(&r)
	case 'A':
		m, err = d.decodeStreamAbort(&r)
	default:
		return Message{}, fmt.Errorf("decode: unknown message type %q", data[0])
	}
	if err != nil {
		return Message{}, fmt.Errorf("decode %s: %w", messageNames[data[0]], err)
	}
	if xid != 0 {
		m.Xid = xid
	}
	return m, nil
}

// streamedData are the messages that carry an xid inside a stream.
var streamedData = [256]bool{'R': true, 'Y': true, 'I': true, 'U': true, 'D': true, 'T': true, 'M': true}

// messageNames names the message types for errors.
var messageNames = map[byte]string{
	'B': "begin", 'C': "commit", 'R': "relation", 'I': "insert", 'U': "update",
	'D': "delete", 'T': "truncate", 'Y': "type", 'O': "origin", 'M': "message",
	'S': "stream start", 'E': "stream stop", 'c': "stream commit", 'A': "stream abort",
}

// Sizes of the fixed-size messages, type byte included.
const (
	beginSize        = 1 + 8 + 8 + 4
	commitSize       = 1 + 1 + 8 + 8 + 8
	streamStartSize  = 1 + 4 + 1
	streamStopSize   = 1
	streamCommitSize = 1 + 4 + 1 + 8 + 8 + 8
	streamAbortSize  = 1 + 4 + 4 // protocol 2 and 3; 4 adds the abort LSN and time
)

// decodeStreamStart opens a block of a transaction PostgreSQL sends before
// its commit (protocol version 2, streaming on).
func (d *Decoder) decodeStreamStart(r *reader) (Message, error) {
	if d.inStream {
		return Message{}, errors.New("stream start inside a stream")
	}
	if err := exactSize(r.b, streamStartSize); err != nil {
		return Message{}, err
	}
	m := Message{Kind: KindStreamStart, Xid: r.uint32("xid")}
	m.FirstSegment = r.uint8("first segment") == 1
	d.inStream = true
	return m, nil
}

func (d *Decoder) decodeStreamStop(r *reader) (Message, error) {
	if !d.inStream {
		return Message{}, errors.New("stream stop outside a stream")
	}
	if err := exactSize(r.b, streamStopSize); err != nil {
		return Message{}, err
	}
	d.inStream = false
	return Message{Kind: KindStreamStop}, nil
}

func (d *Decoder) decodeStreamCommit(r *reader) (Message, error) {
	if d.inStream {
		return Message{}, errors.New("stream commit inside a stream")
	}
	if err := exactSize(r.b, streamCommitSize); err != nil {
		return Message{}, err
	}
	m := Message{Kind: KindStreamCommit, Xid: r.uint32("xid")}
	r.uint8("flags")
	m.LSN = pglogrepl.LSN(r.uint64("commit lsn"))
	m.EndLSN = pglogrepl.LSN(r.uint64("end lsn"))
	m.CommitTime = pgTime(r.uint64("commit time"))
	return m, nil
}

func (d *Decoder) decodeStreamAbort(r *reader) (Message, error) {
	if d.inStream {
		return Message{}, errors.New("stream abort inside a stream")
	}
	if err := exactSize(r.b, streamAbortSize); err != nil {
		return Message{}, err
	}
	m := Message{Kind: KindStreamAbort, Xid: r.uint32("xid")}
	m.SubXid = r.uint32("subtransaction xid")
	return m, nil
}

func decodeBegin(r *reader) (Message, error) {
	if err := exactSize(r.b, beginSize); err != nil {
		return Message{}, err
	}
	m := Message{Kind: KindBegin}
	m.LSN = pglogrepl.LSN(r.uint64("final lsn"))
	m.CommitTime = pgTime(r.uint64("commit time"))
	m.Xid = r.uint32("xid")
	return m, nil
}

func decodeCommit(r *reader) (Message, error) {
	if err := exactSize(r.b, commitSize); err != nil {
		return Message{}, err
	}
	r.uint8("flags") // unused by protocol version 1
	m := Message{Kind: KindCommit}
	m.LSN = pglogrepl.LSN(r.uint64("commit lsn"))
	m.EndLSN = pglogrepl.LSN(r.uint64("end lsn"))
	m.CommitTime = pgTime(r.uint64("commit time"))
	return m, nil
}

func exactSize(b []byte, want int) error {
	switch {
	case len(b) < want:
		return fmt.Errorf("message too short: %d bytes, want %d", len(b), want)
	case len(b) > want:
		return fmt.Errorf("message too long: %d bytes, want %d", len(b), want)
	}
	return nil
}

// pgEpochUnix is 2000-01-01 00:00:00 UTC in Unix seconds: pgoutput
// timestamps count microseconds from there.
const pgEpochUnix = 946684800

func pgTime(raw uint64) time.Time {
	us := int64(raw)
	return time.Unix(pgEpochUnix+us/1e6, us%1e6*1e3).UTC()
}

// minColumnSize is the smallest a Relation message column can be: flags,
// an empty name's terminator, type OID and type modifier.
const minColumnSize = 1 + 1 + 4 + 4

func (d *Decoder) decodeRelation(r *reader) (Message, error) {
	rel := &Relation{ID: r.uint32("relation id")}
	namespace := r.cstring("namespace")
	name := r.cstring("relation name")
	r.uint8("replica identity")
	n := r.int16("column count")
	if r.err != nil {
		return Message{}, r.err
	}
	if n < 0 {
		return Message{}, fmt.Errorf("negative column count %d", n)
	}
	// Check before allocating, so a bogus count cannot make us allocate
	// for columns that are not there.
	if left := len(r.b) - r.off; int(n)*minColumnSize > left {
		return Message{}, fmt.Errorf("%d columns need at least %d bytes, %d left", n, int(n)*minColumnSize, left)
	}
	rel.Namespace, rel.Name = string(namespace), string(name)
	rel.Columns = make([]Column, n)
	for i := range rel.Columns {
		rel.Columns[i] = readColumn(r)
		if r.err != nil {
			return Message{}, fmt.Errorf("column %d: %w", i, r.err)
		}
	}
	if r.end("the columns"); r.err != nil {
		return Message{}, r.err
	}
	if d.rels == nil {
		d.rels = make(map[uint32]*Relation)
	}
	d.rels[rel.ID] = rel
	return Message{Kind: KindRelation, Relation: rel}, nil
}

func readColumn(r *reader) Column {
	flags := r.uint8("column flags")
	name := r.cstring("column name")
	typ := r.uint32("column type")
	r.int32("column type modifier")
	return Column{Name: string(name), TypeOID: typ, Key: flags&1 != 0}
}

func (d *Decoder) decodeInsert(r *reader) (Message, error) {
	id := r.uint32("relation id")
	marker := r.uint8("tuple marker")
	if r.err != nil {
		return Message{}, r.err
	}
	rel := d.rels[id]
	if rel == nil {
		return Message{}, fmt.Errorf("relation %d not announced", id)
	}
	if marker != 'N' {
		return Message{}, fmt.Errorf("tuple marker %q, want 'N'", marker)
	}
	values, size, err := d.readTuple(r, rel)
	if err != nil {
		return Message{}, err
	}
	return Message{Kind: KindInsert, Relation: rel, Values: values, Size: size}, nil
}

func (d *Decoder) decodeUpdate(r *reader) (Message, error) {
	id := r.uint32("relation id")
	marker := r.uint8("tuple marker")
	// The old tuple is there only when the key changed ('K') or the
	// table has REPLICA IDENTITY FULL ('O').
	if marker == 'K' || marker == 'O' {
		skipTuple(r, "old tuple")
		marker = r.uint8("new tuple marker")
	}
	if r.err != nil {
		return Message{}, r.err
	}
	if marker != 'N' {
		return Message{}, fmt.Errorf("tuple marker %q, want 'K', 'O' or 'N'", marker)
	}
	skipTuple(r, "new tuple")
	if r.end("the new tuple"); r.err != nil {
		return Message{}, r.err
	}
	return Message{Kind: KindIgnored, Relation: d.rels[id]}, nil
}

func (d *Decoder) decodeDelete(r *reader) (Message, error) {
	id := r.uint32("relation id")
	marker := r.uint8("tuple marker")
	if r.err != nil {
		return Message{}, r.err
	}
	if marker != 'K' && marker != 'O' {
		return Message{}, fmt.Errorf("tuple marker %q, want 'K' or 'O'", marker)
	}
	skipTuple(r, "old tuple")
	if r.end("the old tuple"); r.err != nil {
		return Message{}, r.err
	}
	return Message{Kind: KindIgnored, Relation: d.rels[id]}, nil
}

// decodeTruncate reports the first truncated relation (pgoutput announces
// each before truncating it, so it is known in a well-formed stream).
func (d *Decoder) decodeTruncate(r *reader) (Message, error) {
	n := r.int32("relation count")
	r.uint8("options")
	if r.err != nil {
		return Message{}, r.err
	}
	if n < 0 {
		return Message{}, fmt.Errorf("negative relation count %d", n)
	}
	// int64: n*4 could overflow a 32-bit int.
	if need, left := int64(n)*4, int64(len(r.b)-r.off); need != left {
		return Message{}, fmt.Errorf("%d relations need %d bytes, %d left", n, need, left)
	}
	if n == 0 {
		return Message{Kind: KindIgnored}, nil
	}
	return Message{Kind: KindIgnored, Relation: d.rels[r.uint32("relation id")]}, nil
}

func decodeType(r *reader) (Message, error) {
	r.uint32("type id")
	r.cstring("namespace")
	r.cstring("type name")
	if r.end("the type name"); r.err != nil {
		return Message{}, r.err
	}
	return Message{Kind: KindIgnored}, nil
}

func decodeOrigin(r *reader) (Message, error) {
	r.uint64("origin lsn")
	r.cstring("origin name")
	if r.end("the origin name"); r.err != nil {
		return Message{}, r.err
	}
	return Message{Kind: KindIgnored}, nil
}

// decodeLogicalMessage checks a pg_logical_emit_message record. Its xid,
// inside a stream, was read by Decode.
func decodeLogicalMessage(r *reader) (Message, error) {
	r.uint8("flags")
	r.uint64("lsn")
	r.cstring("prefix")
	r.bytes(r.int32("content length"), "content")
	if r.end("the content"); r.err != nil {
		return Message{}, r.err
	}
	return Message{Kind: KindIgnored}, nil
}
