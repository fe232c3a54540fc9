// Package decoder turns pgoutput logical replication messages (protocol
// versions 1 and 2, the WALData of each XLogData a PostgreSQL replication
// slot sends) into Messages the pipeline acts on: transaction boundaries
// (Begin, Commit), table shapes (Relation), the outbox rows to ship
// (Insert), and the framing of transactions sent before their commit
// (StreamStart, StreamStop, StreamCommit, StreamAbort; version 2 with
// streaming on), inside which data messages carry their xid.
// Everything else pgoutput may send (Update, Delete, Truncate, Type, Origin,
// logical decoding Message) is checked for well-formedness and reported as
// KindIgnored, because cdc streams inserts only.
//
// The package is pure: bytes in, messages out. It does no I/O and starts no
// goroutines; its only state is the cache of relations pgoutput announced,
// which Insert messages refer to by OID, and whether it is inside a stream.
// A Decoder is therefore tied to one replication stream and is not safe for
// concurrent use.
//
// Decoding is on the hot path of every replicated row, so it is written by
// hand with encoding/binary rather than through a general-purpose parser: an
// Insert costs two allocations (its []Value and one buffer holding all of its
// values' bytes), and malformed input of any kind is an error, never a panic.
package decoder
