package decoder

import (
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

// Fixed points used across the hand-built cases. commitTime is
// commitMicros microseconds after 2000-01-01 UTC, worked out by hand:
// 2025-03-01T12:00:00Z is Unix 1740830400, 794145600 s after the epoch.
const commitMicros = 794145600123456

var commitTime = time.Date(2025, 3, 1, 12, 0, 0, 123456000, time.UTC)

// A relation with every kind of column flag, an empty (pg_catalog)
// namespace and a type modifier, written out byte by byte.
var (
	catalogRelationMsg = wire{'R'}.u32(16390).str("").str("pg_thing").u8('f').i16(2).
				u8(1).str("a").u32(23).i32(-1).
				u8(0).str("b").u32(1043).i32(36)
	catalogRelation = &Relation{ID: 16390, Namespace: "", Name: "pg_thing", Columns: []Column{
		{Name: "a", TypeOID: 23, Key: true},
		{Name: "b", TypeOID: 1043},
	}}
)

// allCases are the hand-built messages, each with what it must decode to.
func allCases() []decodeCase {
	var cases []decodeCase
	cases = append(cases, transactionCases()...)
	cases = append(cases, relationCases()...)
	cases = append(cases, insertCases()...)
	cases = append(cases, streamCases()...)
	return append(cases, ignoredCases()...)
}

// announced announces the outbox table as relation 16385.
func announced() [][]byte { return [][]byte{relationMsg(outboxRelation(16385))} }

type decodeCase struct {
	name    string
	before  [][]byte // decoded first, to announce relations
	data    []byte
	want    Message
	wantErr string
}

func TestDecode(t *testing.T) {
	for _, tc := range allCases() {
		t.Run(tc.name, func(t *testing.T) {
			d := New()
			for _, b := range tc.before {
				if _, err := d.Decode(b); err != nil {
					t.Fatalf("setup: %v", err)
				}
			}
			got, err := d.Decode(tc.data)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				if !reflect.DeepEqual(got, Message{}) {
					t.Errorf("message on error: %s", describe(got))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got\n%s\nwant\n%s", describe(got), describe(tc.want))
			}
		})
	}
}

func transactionCases() []decodeCase {
	return []decodeCase{
		{
			name: "begin",
			data: wire{'B'}.u64(0x1_0000_0028).u64(commitMicros).u32(0xFFFF_FFFF),
			want: Message{Kind: KindBegin, LSN: 0x1_0000_0028, CommitTime: commitTime, Xid: 4294967295},
		},
		{
			name: "begin at the postgres epoch",
			data: wire{'B'}.u64(1).u64(0).u32(3),
			want: Message{Kind: KindBegin, LSN: 1, CommitTime: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), Xid: 3},
		},
		{
			name: "begin before the postgres epoch",
			data: wire{'B'}.u64(1).u64(^uint64(0)).u32(3), // -1 µs
			want: Message{Kind: KindBegin, LSN: 1, CommitTime: time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC), Xid: 3},
		},
		{
			name: "commit",
			data: wire{'C'}.u8(0).u64(0x16B_3748).u64(0x16B_3778).u64(commitMicros),
			want: Message{Kind: KindCommit, LSN: 0x16B_3748, EndLSN: 0x16B_3778, CommitTime: commitTime},
		},
		{name: "empty", data: nil, wantErr: "decode: empty message"},
		{name: "unknown type", data: []byte("Z"), wantErr: "decode: unknown message type 'Z'"},
		{
			name:    "begin too short",
			data:    wire{'B'}.u64(1).u8(0).u8(0).u8(0),
			wantErr: "decode begin: message too short: 12 bytes, want 21",
		},
		{
			name:    "begin too long",
			data:    wire{'B'}.u64(1).u64(2).u32(3).u8(0),
			wantErr: "decode begin: message too long: 22 bytes, want 21",
		},
		{name: "commit type byte only", data: []byte("C"), wantErr: "decode commit: message too short: 1 bytes, want 26"},
		{
			name:    "commit too long",
			data:    wire{'C'}.u8(0).u64(1).u64(2).u64(3).u32(0),
			wantErr: "decode commit: message too long: 30 bytes, want 26",
		},
	}
}

func relationCases() []decodeCase {
	outbox := outboxRelation(16385)
	return []decodeCase{
		{
			name: "relation outbox",
			data: relationMsg(outbox),
			want: Message{Kind: KindRelation, Relation: outbox},
		},
		{
			name: "relation with empty namespace and type modifier",
			data: catalogRelationMsg,
			want: Message{Kind: KindRelation, Relation: catalogRelation},
		},
		{
			name: "relation without columns",
			data: wire{'R'}.u32(7).str("s").str("t").u8('n').i16(0),
			want: Message{Kind: KindRelation, Relation: &Relation{ID: 7, Namespace: "s", Name: "t", Columns: []Column{}}},
		},
		{
			name:    "relation without id",
			data:    wire{'R'}.u8(0),
			wantErr: "decode relation: truncated reading relation id: need 4 bytes at offset 1, message is 2 bytes",
		},
		{
			name:    "relation namespace unterminated",
			data:    wire{'R'}.u32(7).raw("public"),
			wantErr: "decode relation: unterminated namespace string at offset 5",
		},
		{
			name:    "relation negative column count",
			data:    wire{'R'}.u32(7).str("s").str("t").u8('d').i16(-1),
			wantErr: "decode relation: negative column count -1",
		},
		{
			name:    "relation column count beyond the message",
			data:    wire{'R'}.u32(7).str("s").str("t").u8('d').i16(3).u8(1).str("a").u32(23).i32(-1),
			wantErr: "decode relation: 3 columns need at least 30 bytes, 11 left",
		},
		{
			name:    "relation column cut short",
			data:    wire{'R'}.u32(7).str("s").str("t").u8('d').i16(2).u8(1).str("a").u32(23).i32(-1).u8(0).str("bb").u32(25).u8(0),
			wantErr: "decode relation: column 1: truncated reading column type modifier: need 4 bytes at offset 31, message is 32 bytes",
		},
		{
			name:    "relation trailing bytes",
			data:    wire{'R'}.u32(7).str("s").str("t").u8('d').i16(0).raw("xyz"),
			wantErr: "decode relation: 3 unexpected bytes after the columns",
		},
	}
}

// streamCases are protocol version 2's streamed transactions: the framing
// messages, and data messages that carry an xid inside a stream only.
func streamCases() []decodeCase {
	const id, xid, sub = 16385, 7001, 7002
	start := wire{'S'}.u32(xid).u8(1)
	rel := outboxRelation(id)
	inStreamRel := append(wire{'R'}.u32(sub), relationMsg(rel)[1:]...)
	row := []Value{text("0195a8e2-7c3d-7a10-9b4e-3f2d1c0b0a01"), text("order.created"), null, text("prod"), text("{}"), text("1"), null}
	return []decodeCase{
		{name: "stream start, first segment", data: start, want: Message{Kind: KindStreamStart, Xid: xid, FirstSegment: true}},
		{name: "stream start, later segment", data: wire{'S'}.u32(xid).u8(0), want: Message{Kind: KindStreamStart, Xid: xid}},
		{name: "stream stop", before: [][]byte{start}, data: wire{'E'}, want: Message{Kind: KindStreamStop}},
		{
			name: "stream commit",
			data: wire{'c'}.u32(xid).u8(0).u64(0x16B_3748).u64(0x16B_3778).u64(commitMicros),
			want: Message{Kind: KindStreamCommit, Xid: xid, LSN: 0x16B_3748, EndLSN: 0x16B_3778, CommitTime: commitTime},
		},
		{name: "stream abort of a subtransaction", data: wire{'A'}.u32(xid).u32(sub), want: Message{Kind: KindStreamAbort, Xid: xid, SubXid: sub}},
		{name: "stream abort of the transaction", data: wire{'A'}.u32(xid).u32(xid), want: Message{Kind: KindStreamAbort, Xid: xid, SubXid: xid}},
		{
			name:   "relation inside a stream carries the xid",
			before: [][]byte{start},
			data:   inStreamRel,
			want:   Message{Kind: KindRelation, Relation: rel, Xid: sub},
		},
		{
			name:   "insert inside a stream carries the xid",
			before: [][]byte{start, inStreamRel},
			data:   append(wire{'I'}.u32(sub), insertMsg(id, row...)[1:]...),
			want: Message{Kind: KindInsert, Relation: rel, Xid: sub, Size: 36 + 13 + 4 + 2 + 1, Values: []Value{
				text("0195a8e2-7c3d-7a10-9b4e-3f2d1c0b0a01"), text("order.created"), null, text("prod"), text("{}"), text("1"), null,
			}},
		},
		// Every data message pgoutput streams carries the xid, not only
		// Relation and Insert: an update, delete or truncate of the outbox,
		// a type a column uses and a transactional logical message in a
		// large transaction come inside the stream too.
		{
			name:   "update inside a stream carries the xid",
			before: [][]byte{start, inStreamRel},
			data:   append(wire{'U'}.u32(sub).u32(id).u8('N'), wire{}.tuple(row...)...),
			want:   Message{Kind: KindIgnored, Relation: rel, Xid: sub},
		},
		{
			name:   "delete inside a stream carries the xid",
			before: [][]byte{start, inStreamRel},
			data:   append(wire{'D'}.u32(sub).u32(id).u8('K'), wire{}.tuple(text("k"), null, null, null, null, null, null)...),
			want:   Message{Kind: KindIgnored, Relation: rel, Xid: sub},
		},
		{
			name:   "truncate inside a stream carries the xid",
			before: [][]byte{start, inStreamRel},
			data:   wire{'T'}.u32(sub).i32(1).u8(0).u32(id),
			want:   Message{Kind: KindIgnored, Relation: rel, Xid: sub},
		},
		{
			name:   "type inside a stream carries the xid",
			before: [][]byte{start},
			data:   wire{'Y'}.u32(sub).u32(16400).str("public").str("mood"),
			want:   Message{Kind: KindIgnored, Xid: sub},
		},
		{
			name:   "logical message inside a stream carries the xid",
			before: [][]byte{start},
			data:   wire{'M'}.u32(sub).u8(1).u64(0x16B_3748).str("cdc").i32(5).raw("hello"),
			want:   Message{Kind: KindIgnored, Xid: sub},
		},
		{
			name:   "insert after the stream stopped has no xid",
			before: [][]byte{start, inStreamRel, wire{'E'}},
			data:   insertMsg(id, row...),
			want: Message{Kind: KindInsert, Relation: rel, Size: 36 + 13 + 4 + 2 + 1, Values: []Value{
				text("0195a8e2-7c3d-7a10-9b4e-3f2d1c0b0a01"), text("order.created"), null, text("prod"), text("{}"), text("1"), null,
			}},
		},
		{
			name:   "insert inside a stream without its xid",
			before: [][]byte{start, inStreamRel},
			data:   insertMsg(id, row...),
			// The relation id is read as the xid, and 'N', the column
			// count (7) and the first value's 't' as the relation id.
			wantErr: "decode insert: relation 1308624756 not announced", // 0x4E_0007_74
		},
		{name: "stream stop outside a stream", data: wire{'E'}, wantErr: "decode stream stop: stream stop outside a stream"},
		{name: "stream start inside a stream", before: [][]byte{start}, data: start, wantErr: "decode stream start: stream start inside a stream"},
		{name: "stream commit inside a stream", before: [][]byte{start}, data: wire{'c'}.u32(xid).u8(0).u64(1).u64(2).u64(3), wantErr: "decode stream commit: stream commit inside a stream"},
		{name: "stream abort inside a stream", before: [][]byte{start}, data: wire{'A'}.u32(xid).u32(xid), wantErr: "decode stream abort: stream abort inside a stream"},
		{name: "stream start too short", data: wire{'S'}.u32(xid), wantErr: "decode stream start: message too short: 5 bytes, want 6"},
		{name: "stream stop too long", before: [][]byte{start}, data: wire{'E'}.u8(0), wantErr: "decode stream stop: message too long: 2 bytes, want 1"},
		{name: "stream commit too short", data: wire{'c'}.u32(xid).u8(0).u64(1), wantErr: "decode stream commit: message too short: 14 bytes, want 30"},
		{name: "stream abort with protocol 4's fields", data: wire{'A'}.u32(xid).u32(xid).u64(1).u64(2), wantErr: "decode stream abort: message too long: 25 bytes, want 9"},
	}
}

func insertCases() []decodeCase {
	const id = 16385
	row := []Value{
		text("0195a8e2-7c3d-7a10-9b4e-3f2d1c0b0a01"), text("order.created"), text("2025-03-01 12:00:00.123456+00"),
		text(""), {Kind: ValueBinary, Data: []byte(`{"a":1}`)}, unchanged, null,
	}
	good := insertMsg(id, row...)
	return []decodeCase{
		{
			name:   "insert",
			before: announced(),
			data:   good,
			want: Message{Kind: KindInsert, Relation: outboxRelation(id), Size: 36 + 13 + 29 + 0 + 7, Values: []Value{
				{Kind: ValueText, Data: []byte("0195a8e2-7c3d-7a10-9b4e-3f2d1c0b0a01")},
				{Kind: ValueText, Data: []byte("order.created")},
				{Kind: ValueText, Data: []byte("2025-03-01 12:00:00.123456+00")},
				{Kind: ValueText, Data: []byte{}},          // empty, not NULL
				{Kind: ValueText, Data: []byte(`{"a":1}`)}, // json_send sends the text
				{Kind: ValueUnchanged},
				{Kind: ValueNull},
			}},
		},
		{
			name:   "insert of nulls only",
			before: announced(),
			data:   insertMsg(id, null, null, null, null, null, null, null),
			want: Message{Kind: KindInsert, Relation: outboxRelation(id), Values: []Value{
				{Kind: ValueNull}, {Kind: ValueNull}, {Kind: ValueNull}, {Kind: ValueNull},
				{Kind: ValueNull}, {Kind: ValueNull}, {Kind: ValueNull},
			}},
		},
		{name: "insert before its relation", data: good, wantErr: "decode insert: relation 16385 not announced"},
		{
			name:    "insert for another relation",
			before:  announced(),
			data:    insertMsg(16386, row...),
			wantErr: "decode insert: relation 16386 not announced",
		},
		{name: "insert type byte only", data: []byte("I"), wantErr: "decode insert: truncated reading relation id: need 4 bytes at offset 1, message is 1 bytes"},
		{
			name:    "insert without tuple marker",
			before:  announced(),
			data:    wire{'I'}.u32(id),
			wantErr: "decode insert: truncated reading tuple marker: need 1 bytes at offset 5, message is 5 bytes",
		},
		{
			name:    "insert with old key marker",
			before:  announced(),
			data:    wire{'I'}.u32(id).u8('K').tuple(row...),
			wantErr: "decode insert: tuple marker 'K', want 'N'",
		},
		{
			name:    "insert with fewer columns than the relation",
			before:  announced(),
			data:    insertMsg(id, row[:6]...),
			wantErr: `decode insert: tuple has 6 columns, relation 16385 "public.outbox" has 7`,
		},
		{
			name:    "insert with negative column count",
			before:  announced(),
			data:    wire{'I'}.u32(id).u8('N').i16(-7),
			wantErr: `decode insert: tuple has -7 columns, relation 16385 "public.outbox" has 7`,
		},
		{
			name:    "insert with negative value length",
			before:  announced(),
			data:    wire{'I'}.u32(id).u8('N').i16(7).u8('n').u8('t').i32(-1),
			wantErr: `decode insert: column 1 "event_type": negative value length -1`,
		},
		{
			name:    "insert with value length beyond the message",
			before:  announced(),
			data:    wire{'I'}.u32(id).u8('N').i16(7).u8('n').u8('t').i32(100).raw("abc"),
			wantErr: `decode insert: column 1 "event_type": value length 100 exceeds the 3 bytes left`,
		},
		{
			name:    "insert with unknown value kind",
			before:  announced(),
			data:    wire{'I'}.u32(id).u8('N').i16(7).u8('n').u8('x'),
			wantErr: `decode insert: column 1 "event_type": unknown value kind 'x'`,
		},
		{
			name:    "insert cut after a column",
			before:  announced(),
			data:    wire{'I'}.u32(id).u8('N').i16(7).u8('n').u8('n'),
			wantErr: `decode insert: column 2 "event_date_time": truncated reading value kind: need 1 bytes at offset 10, message is 10 bytes`,
		},
		{
			name:    "insert with a cut value length",
			before:  announced(),
			data:    wire{'I'}.u32(id).u8('N').i16(7).u8('t').u8(0).u8(0),
			wantErr: `decode insert: column 0 "id": truncated reading value length: need 4 bytes at offset 9, message is 11 bytes`,
		},
		{
			name:    "insert trailing bytes",
			before:  announced(),
			data:    append(insertMsg(id, row...), 0, 0),
			wantErr: "decode insert: 2 unexpected bytes after the tuple",
		},
	}
}

func ignoredCases() []decodeCase {
	const id = 16385
	outbox := outboxRelation(id)
	newRow := wire{}.tuple(text("k"), text("x"), null, null, null, null, unchanged)
	key := wire{}.tuple(text("k"), null, null, null, null, null, null)
	return []decodeCase{
		{
			name:   "update of a non-key column",
			before: announced(),
			data:   append(wire{'U'}.u32(id).u8('N'), newRow...),
			want:   Message{Kind: KindIgnored, Relation: outbox},
		},
		{
			name:   "update of the key",
			before: announced(),
			data:   append(append(wire{'U'}.u32(id).u8('K'), key...).u8('N'), newRow...),
			want:   Message{Kind: KindIgnored, Relation: outbox},
		},
		{
			name:   "update with replica identity full",
			before: announced(),
			data:   append(append(wire{'U'}.u32(id).u8('O'), newRow...).u8('N'), newRow...),
			want:   Message{Kind: KindIgnored, Relation: outbox},
		},
		{
			name: "update of an unknown relation",
			data: append(wire{'U'}.u32(99).u8('N'), wire{}.tuple(text("x"))...),
			want: Message{Kind: KindIgnored},
		},
		{
			name:   "delete",
			before: announced(),
			data:   append(wire{'D'}.u32(id).u8('K'), key...),
			want:   Message{Kind: KindIgnored, Relation: outbox},
		},
		{
			name:   "delete with replica identity full",
			before: announced(),
			data:   append(wire{'D'}.u32(id).u8('O'), newRow...),
			want:   Message{Kind: KindIgnored, Relation: outbox},
		},
		{
			name:   "truncate",
			before: announced(),
			data:   wire{'T'}.i32(1).u8(0).u32(id),
			want:   Message{Kind: KindIgnored, Relation: outbox},
		},
		{
			name:   "truncate cascade of two tables reports the first",
			before: append([][]byte{catalogRelationMsg}, announced()...),
			data:   wire{'T'}.i32(2).u8(1 | 2).u32(id).u32(16390),
			want:   Message{Kind: KindIgnored, Relation: outbox},
		},
		{
			name: "truncate of no tables",
			data: wire{'T'}.i32(0).u8(0),
			want: Message{Kind: KindIgnored},
		},
		{
			name: "type",
			data: wire{'Y'}.u32(16400).str("public").str("mood"),
			want: Message{Kind: KindIgnored},
		},
		{
			name: "origin",
			data: wire{'O'}.u64(0x16B_3748).str("upstream"),
			want: Message{Kind: KindIgnored},
		},
		{
			name: "logical message",
			data: wire{'M'}.u8(1).u64(0x16B_3748).str("cdc").i32(5).raw("hello"),
			want: Message{Kind: KindIgnored},
		},
		{
			name: "empty non-transactional logical message",
			data: wire{'M'}.u8(0).u64(0x16B_3748).str("").i32(0),
			want: Message{Kind: KindIgnored},
		},
		{
			name:    "update with an unknown marker",
			data:    append(wire{'U'}.u32(id).u8('X'), newRow...),
			wantErr: "decode update: tuple marker 'X', want 'K', 'O' or 'N'",
		},
		{
			name:    "update without new tuple",
			data:    append(wire{'U'}.u32(id).u8('K'), key...),
			wantErr: "decode update: truncated reading new tuple marker: need 1 bytes at offset 20, message is 20 bytes",
		},
		{
			name:    "update old tuple cut short",
			data:    wire{'U'}.u32(id).u8('O').i16(2).u8('t').i32(4).raw("ab"),
			wantErr: "decode update: old tuple column 0: value length 4 exceeds the 2 bytes left",
		},
		{
			name:    "update new tuple with negative column count",
			data:    wire{'U'}.u32(id).u8('N').i16(-2),
			wantErr: "decode update: new tuple: negative column count -2",
		},
		{
			name:    "update trailing bytes",
			data:    append(wire{'U'}.u32(id).u8('N'), newRow...).u8('N'),
			wantErr: "decode update: 1 unexpected bytes after the new tuple",
		},
		{
			name:    "delete with a new tuple",
			data:    append(wire{'D'}.u32(id).u8('N'), newRow...),
			wantErr: "decode delete: tuple marker 'N', want 'K' or 'O'",
		},
		{
			name:    "delete without tuple",
			data:    wire{'D'}.u32(id).u8('K'),
			wantErr: "decode delete: old tuple: truncated reading column count: need 2 bytes at offset 6, message is 6 bytes",
		},
		{
			name:    "truncate negative count",
			data:    wire{'T'}.i32(-1).u8(0),
			wantErr: "decode truncate: negative relation count -1",
		},
		{
			name:    "truncate count beyond the message",
			data:    wire{'T'}.i32(1 << 30).u8(0).u32(id),
			wantErr: "decode truncate: 1073741824 relations need 4294967296 bytes, 4 left",
		},
		{
			name:    "truncate relation id cut short",
			data:    wire{'T'}.i32(1).u8(0).u8(0).u8(0),
			wantErr: "decode truncate: 1 relations need 4 bytes, 2 left",
		},
		{
			name:    "type name unterminated",
			data:    wire{'Y'}.u32(16400).str("public").raw("mood"),
			wantErr: "decode type: unterminated type name string at offset 12",
		},
		{
			name:    "origin trailing bytes",
			data:    wire{'O'}.u64(1).str("upstream").u8(0),
			wantErr: "decode origin: 1 unexpected bytes after the origin name",
		},
		{
			name:    "logical message content beyond the message",
			data:    wire{'M'}.u8(1).u64(1).str("cdc").i32(6).raw("hello"),
			wantErr: "decode message: content length 6 exceeds the 5 bytes left",
		},
		{
			name:    "logical message negative content length",
			data:    wire{'M'}.u8(1).u64(1).str("cdc").i32(-6),
			wantErr: "decode message: negative content length -6",
		},
	}
}

// Every strict prefix of a well-formed message must be rejected, however it
// is cut: pgoutput messages carry their own lengths and counts.
// A hand-built case is cut where its own messages before it put the
// decoder: inside a stream, a data message's first 4 bytes are the xid.
func TestDecodeTruncated(t *testing.T) {
	type cut struct {
		before [][]byte
		msg    []byte
	}
	var msgs []cut
	for _, msg := range readRecorded(t) {
		msgs = append(msgs, cut{msg: msg})
	}
	for _, tc := range allCases() {
		if tc.wantErr == "" {
			msgs = append(msgs, cut{before: tc.before, msg: tc.data})
		}
	}
	for i, c := range msgs {
		d := primedDecoder(t)
		for _, b := range c.before {
			if _, err := d.Decode(b); err != nil {
				t.Fatalf("message %d: setup: %v", i, err)
			}
		}
		msg := c.msg
		for n := range len(msg) {
			if _, err := d.Decode(msg[:n]); err == nil {
				t.Errorf("message %d (%q) cut to %d of %d bytes: no error", i, msg[0], n, len(msg))
			} else if !strings.HasPrefix(err.Error(), "decode") {
				t.Errorf("message %d cut to %d bytes: error %q does not say it is from decode", i, n, err)
			}
		}
	}
}

// primedDecoder knows the hand-built relations and the recorded ones, so
// inserts for either get past the relation lookup.
func primedDecoder(tb testing.TB) *Decoder {
	tb.Helper()
	d := New()
	for _, msg := range append(readRecorded(tb), relationMsg(outboxRelation(16385)), catalogRelationMsg) {
		if msg[0] != 'R' {
			continue
		}
		if _, err := d.Decode(msg); err != nil {
			tb.Fatal(err)
		}
	}
	return d
}

func TestRelationReplacementKeepsOldRelation(t *testing.T) {
	d := New()
	v1, err := d.Decode(relationMsg(outboxRelation(16385)))
	if err != nil {
		t.Fatal(err)
	}
	row, err := d.Decode(insertMsg(16385, text("a"), text("b"), text("c"), text("d"), text("{}"), text("1"), null))
	if err != nil {
		t.Fatal(err)
	}
	wider := outboxRelation(16385)
	wider.Columns = append(wider.Columns, Column{Name: "tenant", TypeOID: oidText})
	v2, err := d.Decode(relationMsg(wider))
	if err != nil {
		t.Fatal(err)
	}

	if v1.Relation == v2.Relation {
		t.Fatal("relation message reused the cached *Relation")
	}
	if row.Relation != v1.Relation {
		t.Error("insert does not point at the relation it was decoded with")
	}
	if !reflect.DeepEqual(v1.Relation, outboxRelation(16385)) {
		t.Errorf("old relation changed: %+v", v1.Relation)
	}
	if !reflect.DeepEqual(v2.Relation, wider) {
		t.Errorf("new relation %+v, want %+v", v2.Relation, wider)
	}
	if d.Relation(16385) != v2.Relation {
		t.Error("cache does not hold the new relation")
	}
	// The old shape no longer fits: its inserts must be refused, not
	// matched up against the wrong columns.
	_, err = d.Decode(insertMsg(16385, text("a"), text("b"), text("c"), text("d"), text("{}"), text("1"), null))
	if want := `decode insert: tuple has 7 columns, relation 16385 "public.outbox" has 8`; err == nil || err.Error() != want {
		t.Errorf("error %v, want %q", err, want)
	}
}

func TestFailedRelationLeavesCacheAlone(t *testing.T) {
	d := New()
	old, err := d.Decode(relationMsg(outboxRelation(16385)))
	if err != nil {
		t.Fatal(err)
	}
	bad := relationMsg(outboxRelation(16385))
	if _, err := d.Decode(bad[:len(bad)-1]); err == nil {
		t.Fatal("truncated relation decoded")
	}
	if d.Relation(16385) != old.Relation {
		t.Error("a malformed relation message replaced the cached relation")
	}
}

func TestDecodeDoesNotRetainInput(t *testing.T) {
	d := primedDecoder(t)
	msg := insertMsg(16385, text("id-1"), text("type"), text("ts"), text("env"), text("{}"), text("1"), text("tp"))
	m, err := d.Decode(msg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range msg {
		msg[i] = 0xEE
	}
	want := []string{"id-1", "type", "ts", "env", "{}", "1", "tp"}
	for i, v := range m.Values {
		if string(v.Data) != want[i] {
			t.Errorf("value %d = %q after the input was overwritten, want %q", i, v.Data, want[i])
		}
	}
	// Values share one buffer; appending to one must not spill into the next.
	_ = append(m.Values[0].Data, "XXXX"...)
	if string(m.Values[1].Data) != "type" {
		t.Errorf("append to value 0 overwrote value 1: %q", m.Values[1].Data)
	}
}

func TestDecodeInsertAllocations(t *testing.T) {
	d := primedDecoder(t)
	msg := benchmarkInsert()
	m, err := d.Decode(msg)
	if err != nil {
		t.Fatal(err)
	}
	// Rows are carved from chunks: a chunk of values every chunkValues/7
	// rows and one of bytes every chunkBytes/size rows, nothing per row.
	// 1,024 of these inserts span 7.01 chunks of each kind, so a run
	// allocates 14 to 16 objects (2,048 at one []Value and one buffer per
	// row). AllocsPerRun averages over runs, which keeps an allocation by
	// the runtime in the meantime from failing the test.
	const n = 1024
	perChunk := min(chunkValues/7, chunkBytes/m.Size)
	maxAllocs := float64(2 * (n/perChunk + 1))
	if allocs := testing.AllocsPerRun(20, func() {
		for range n {
			if _, err := d.Decode(msg); err != nil {
				t.Fatal(err)
			}
		}
	}); allocs > maxAllocs {
		t.Errorf("%v allocations per %d inserts of %d bytes, want at most %v (the chunks)", allocs, n, m.Size, maxAllocs)
	}
	for _, msg := range [][]byte{beginMsg(1, commitTime, 2), commitMsg(1, 2, commitTime)} {
		if allocs := testing.AllocsPerRun(100, func() { _, _ = d.Decode(msg) }); allocs != 0 {
			t.Errorf("%q: %v allocations, want 0", msg[0], allocs)
		}
	}
}

// Rows carved from shared chunks stay each their own: decoding more rows
// never changes an earlier one, a value cannot grow into its neighbour,
// and a large row does not take chunk space.
func TestDecodedRowsDoNotShareMemory(t *testing.T) {
	d := primedDecoder(t)
	const n = 3000 // several chunks of each kind
	rows := make([][]Value, n)
	for i := range rows {
		ctx := fmt.Sprintf(`{"i":%d}`, i)
		if i%1000 == 999 {
			ctx = strings.Repeat("x", chunkBytes) // its own buffer
		}
		m, err := d.Decode(insertMsg(16385, text(fmt.Sprint("id-", i)), text("type"), text("ts"), null, text(ctx), text("1"), text("tp")))
		if err != nil {
			t.Fatal(err)
		}
		rows[i] = m.Values
		if cap(m.Values) != len(m.Values) {
			t.Fatalf("row %d: values cap %d, len %d: appending would reach the next row", i, cap(m.Values), len(m.Values))
		}
		for j, v := range m.Values {
			if cap(v.Data) != len(v.Data) {
				t.Fatalf("row %d value %d: cap %d, len %d", i, j, cap(v.Data), len(v.Data))
			}
		}
	}
	for i, vals := range rows {
		ctx := fmt.Sprintf(`{"i":%d}`, i)
		if i%1000 == 999 {
			ctx = strings.Repeat("x", chunkBytes)
		}
		want := []string{fmt.Sprint("id-", i), "type", "ts", "", ctx, "1", "tp"}
		for j, v := range vals {
			if string(v.Data) != want[j] {
				t.Fatalf("row %d value %d = %.40q after %d more rows were decoded, want %.40q", i, j, v.Data, n-i-1, want[j])
			}
		}
		if vals[3].Kind != ValueNull {
			t.Fatalf("row %d value 3 is %v, want NULL", i, vals[3].Kind)
		}
	}
}

// A large row must not stay in memory once dropped, whatever rows were
// decoded around it: neither through a chunk of values shared with rows
// still held (the 50 × 10 MiB bench drain peaked at 601 MiB that way) nor
// through the decoder's scratch pointing into the message.
func TestDecoderDoesNotRetainALargeRow(t *testing.T) {
	d := primedDecoder(t)
	small := func() []Value {
		m, err := d.Decode(insertMsg(16385, text("id"), text("type"), text("ts"), null, text("{}"), text("1"), text("tp")))
		if err != nil {
			t.Fatal(err)
		}
		return m.Values
	}
	var held [][]Value
	for range 10 {
		held = append(held, small())
	}
	msg := insertMsg(16385, text("id"), text("type"), text("ts"), null, text(strings.Repeat("x", 1<<20)), text("1"), text("tp"))
	m, err := d.Decode(msg)
	if err != nil {
		t.Fatal(err)
	}
	rowFreed, msgFreed := make(chan struct{}), make(chan struct{})
	runtime.SetFinalizer(&m.Values[4].Data[0], func(*byte) { close(rowFreed) })
	runtime.SetFinalizer(&msg[0], func(*byte) { close(msgFreed) })
	m, msg = Message{}, nil // and nothing decoded since, to overwrite the scratch
	for what, freed := range map[string]chan struct{}{"the decoded row's bytes": rowFreed, "the message": msgFreed} {
		deadline := time.After(5 * time.Second)
	wait:
		for {
			runtime.GC()
			select {
			case <-freed:
				break wait
			case <-deadline:
				t.Fatalf("%s still reachable after the row was dropped, with the %d small rows decoded before it held", what, len(held))
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	runtime.KeepAlive(held)
	runtime.KeepAlive(d) // the decoder lives as long as the session
}

func TestZeroDecoder(t *testing.T) {
	var d Decoder
	if d.Relation(16385) != nil {
		t.Error("zero decoder has a relation")
	}
	if _, err := d.Decode(insertMsg(16385, null)); err == nil {
		t.Error("insert before relation decoded")
	}
	if _, err := d.Decode(relationMsg(outboxRelation(16385))); err != nil {
		t.Fatal(err)
	}
	if d.Relation(16385) == nil {
		t.Error("relation not cached")
	}
}

// A fresh decoder's first row may hold no bytes at all (empty text and
// NULL): its empty text values are still non-nil, unlike NULL's.
func TestDecodeEmptyTextOfTheFirstRow(t *testing.T) {
	var d Decoder
	if _, err := d.Decode(relationMsg(outboxRelation(16385))); err != nil {
		t.Fatal(err)
	}
	m, err := d.Decode(insertMsg(16385, text(""), text(""), null, text(""), null, null, text("")))
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range m.Values {
		if (v.Kind == ValueText) != (v.Data != nil) {
			t.Errorf("value %d of kind %c: Data nil = %t", i, v.Kind, v.Data == nil)
		}
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{
		0: "Kind(0)", KindBegin: "begin", KindCommit: "commit", KindRelation: "relation",
		KindInsert: "insert", KindIgnored: "ignored", KindStreamStart: "stream start", KindStreamStop: "stream stop",
		KindStreamCommit: "stream commit", KindStreamAbort: "stream abort", 10: "Kind(10)", 255: "Kind(255)",
	} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", uint8(k), got, want)
		}
	}
}

func TestRelationIndex(t *testing.T) {
	rel := outboxRelation(1)
	for name, want := range map[string]int{
		"id": 0, "event_type": 1, "event_context": 4, "traceparent": 6, "tenant": -1, "": -1, "ID": -1,
	} {
		if got := rel.Index(name); got != want {
			t.Errorf("Index(%q) = %d, want %d", name, got, want)
		}
	}
	if got := (*Relation)(nil).Index("id"); got != -1 {
		t.Errorf("nil relation Index = %d, want -1", got)
	}
}

// The LSN type is pglogrepl's so the rest of the pipeline can hand it
// straight to pglogrepl.SendStandbyStatusUpdate.
var _ pglogrepl.LSN = Message{}.EndLSN
