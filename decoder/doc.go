// Package decoder turns pgoutput logical replication messages (protocol
// version 1, the WALData of each XLogData a PostgreSQL replication slot
// sends) into Messages the pipeline acts on: transaction boundaries (Begin,
// Commit), table shapes (Relation) and the outbox rows to ship (Insert).
// Everything else pgoutput may send (Update, Delete, Truncate, Type, Origin,
// logical decoding Message) is checked for well-formedness and reported as
// KindIgnored, because cdc streams inserts only.
//
// The package is pure: bytes in, messages out. It does no I/O and starts no
// goroutines; its only state is the cache of relations pgoutput announced,
// which Insert messages refer to by OID. A Decoder is therefore tied to one
// replication stream and is not safe for concurrent use.
//
// Decoding is on the hot path of every replicated row, so it is written by
// hand with encoding/binary rather than through a general-purpose parser: an
// Insert costs two allocations (its []Value and one buffer holding all of its
// values' bytes), and malformed input of any kind is an error, never a panic.
package decoder
