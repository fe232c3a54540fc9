// Package deadletter sets aside, in PostgreSQL, the outbox rows the sink
// refused for their content, with the reason and their WAL position, so an
// operator can see them, fix the cause and replay them; nothing is dropped
// silently and the stream goes on. The table, cdc_dead_letter, is created by
// `cdc migrate`.
package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/sink"
)

// Store writes and reads the dead letters of one pipeline, named by its
// replication slot. Two pipelines of one database (two slots, two
// ClickHouses) share cdc_dead_letter: a row one ClickHouse refused is
// missing from that one only, so each letter carries the slot that set it
// aside (slot_name), and a pipeline reads, counts, skips and replays its
// own. A letter without a slot (set aside by a build before slot_name,
// or on a table an earlier migrate made) is every pipeline's, as it was.
// On such a table, until `cdc migrate` adds the column, every letter is
// every pipeline's.
type Store struct {
	pool *pgxpool.Pool
	slot string

	tagged atomic.Bool // cdc_dead_letter has slot_name: found once, kept
}

// New uses pool, a pool of ordinary (not replication) connections, for the
// pipeline of slot.
func New(pool *pgxpool.Pool, slot string) *Store { return &Store{pool: pool, slot: slot} }

// slotColumnQuery tells whether cdc_dead_letter, as the search path finds
// it, has the slot_name column that `cdc migrate` adds (false without the
// table).
const slotColumnQuery = `SELECT EXISTS (SELECT 1 FROM pg_attribute
	WHERE attrelid = to_regclass('cdc_dead_letter') AND attname = 'slot_name' AND NOT attisdropped)`

// scope reports whether the table has slot_name. Once found the column
// is taken as there for good (migrate never drops it); until then it is
// looked up again at each use, so that the `cdc migrate` an operator runs
// on the start's warning takes effect without a restart. Kept from the
// first look-up, a cdc run started before that migrate set its letters
// aside of no slot, for the other pipeline to skip and replay, and took
// that pipeline's letters, tagged from its own restart on, as its own.
// Without the table the caller's own statement fails, naming it. No lock
// is held across the look-up: callers at once (the writers' Puts) each
// look, each bounded by its own context, none waiting on another's.
func (s *Store) scope(ctx context.Context) (tagged bool, err error) {
	if s.tagged.Load() {
		return true, nil
	}
	tagged, err = SlotColumn(ctx, s.pool)
	if tagged {
		s.tagged.Store(true)
	}
	return tagged, err
}

// SlotColumn reports whether cdc_dead_letter, as q's search path finds
// it, has slot_name (false without the table): whether Mine tells
// pipelines' letters apart. For a reader of the table outside Store.
func SlotColumn(ctx context.Context, q interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}) (bool, error) {
	var tagged bool
	if err := q.QueryRow(ctx, slotColumnQuery).Scan(&tagged); err != nil {
		return false, fmt.Errorf("look up cdc_dead_letter's slot_name column: %w", err)
	}
	return tagged, nil
}

// Mine is the condition on cdc_dead_letter that keeps a pipeline's
// letters, with the slot name as parameter $n: its own and those of no
// slot. Without the column (tagged false: SlotColumn) it keeps every
// letter; the parameter is still referenced, so that PostgreSQL knows its
// type.
func Mine(tagged bool, n int) string {
	if !tagged {
		return fmt.Sprintf("$%d::text IS NOT NULL", n)
	}
	return fmt.Sprintf("(slot_name = $%d OR slot_name IS NULL)", n)
}

// Put stores rejected rows in one transaction. A row already set aside —
// the same event with the same values, by another `cdc backfill` run, by
// backfill and the connector, or by a session replaying what an earlier
// one set aside — is not added again: an operator sees each refused event
// once and replays it once. The letter kept is the first, with its reason
// and position; the row's own position then stays unrecorded, and a
// replay of the WAL sends the row again, to be refused and found here
// again. Rows without an event id are always added.
func (s *Store) Put(ctx context.Context, rejected []sink.Rejected) error {
	if len(rejected) == 0 {
		return nil
	}
	tagged, err := s.scope(ctx)
	if err != nil {
		return fmt.Errorf("store dead letters: %w", err)
	}
	insert := putUntagged
	if tagged {
		insert = putTagged
	}
	// Read committed whatever the role's default: the NOT EXISTS must see
	// a letter committed while this transaction waited for the lock, and
	// under repeatable read its snapshot, taken by the first statement,
	// would not.
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return fmt.Errorf("store dead letters: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit it is a no-op
	b := &pgx.Batch{}
	b.Queue(durableCommit)
	b.Queue(unboundedStatements)
	// Two transactions setting aside the same event at once (backfill
	// beside the connector) would both find it missing: each first takes
	// a lock on its events' ids, held to its commit, all in one statement
	// and in one order so that two such transactions cannot deadlock. The
	// ids share lockBuckets locks: one lock per id would fill PostgreSQL's
	// shared lock table (64 × max_connections entries) with a batch of
	// tens of thousands of refused rows, and fail it — and every other
	// session needing a lock meanwhile — with "out of shared memory".
	var ids []string
	for _, r := range rejected {
		if id := eventID(r.Row); id != nil {
			ids = append(ids, *id)
		}
	}
	if len(ids) > 0 {
		b.Queue(`SELECT count(pg_advisory_xact_lock($1, k)) FROM (SELECT DISTINCT hashtext(id) & $3 AS k FROM unnest($2::text[]) AS id ORDER BY k) AS locks`,
			lockClass, ids, lockBuckets-1)
	}
	// The letters go in batches of about putBatchBytes of row data, in
	// the one transaction: each row's JSON, and pgx's encoding of the
	// batch, are then held for one batch at a time rather than for every
	// refused row of an INSERT at once (a schema change can refuse all
	// of them).
	queued, sent := 0, 0
	send := func() error {
		if b.Len() == 0 {
			return nil
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("store %d dead letters (after %d sent earlier in this transaction, all rolled back): %w", queued, sent, err)
		}
		sent += queued
		b, queued = &pgx.Batch{}, 0
		return nil
	}
	bytes := 0
	for _, r := range rejected {
		data, id := RowData(r.Row)
		b.Queue(insert, id, r.Row.Pos.CommitLSN.String(), int64(r.Row.Pos.Seq), data, r.Err.Error(), s.slot)
		queued++
		if bytes += len(data); bytes >= putBatchBytes {
			if err := send(); err != nil {
				return err
			}
			bytes = 0
		}
	}
	if err := send(); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("store dead letters: %w", err)
	}
	return nil
}

// putTagged sets a refused row aside for the pipeline of slot $6, unless
// that pipeline already has a letter of the same event with the same
// values (one of its own, or one of no slot). Another pipeline's letter of
// the event does not count: its ClickHouse is not this one's.
const putTagged = `INSERT INTO cdc_dead_letter (event_id, commit_lsn, seq, row_data, error, slot_name)
	SELECT $1, $2::pg_lsn, $3, $4, $5, $6
	WHERE $1::uuid IS NULL OR NOT EXISTS (SELECT 1 FROM cdc_dead_letter
		WHERE event_id = $1::uuid AND row_data = $4::jsonb AND (slot_name = $6 OR slot_name IS NULL))`

// putUntagged is putTagged on a table without slot_name.
const putUntagged = `INSERT INTO cdc_dead_letter (event_id, commit_lsn, seq, row_data, error)
	SELECT $1, $2::pg_lsn, $3, $4, $5
	WHERE $6::text IS NOT NULL AND ($1::uuid IS NULL OR NOT EXISTS (SELECT 1 FROM cdc_dead_letter
		WHERE event_id = $1::uuid AND row_data = $4::jsonb))`

// putBatchBytes is about how much row data Put sends in one pgx batch.
const putBatchBytes = 4 << 20

// durableCommit makes Put's commit wait for its WAL to be flushed where
// the role or database sets synchronous_commit = off: the batch is
// acknowledged once its dead letters are stored, and a crash of
// PostgreSQL before the WAL writer flushed them would lose letters whose
// rows the slot no longer sends. A stronger setting (on, remote_apply) is
// left as it is.
const durableCommit = `SELECT set_config('synchronous_commit', 'local', true) WHERE current_setting('synchronous_commit') = 'off'`

// unboundedStatements lifts, for Put's transaction, a statement_timeout
// the role, the database or the server's configuration sets for the
// application's queries. A letter costs time with its size (PostgreSQL
// reads jsonb at tens of ms a MB, and each INSERT compares it with the
// letters of its event), which cdc does not choose: a refused event of
// tens of MB over the timeout failed every try, and the pipeline, which
// acknowledges nothing past a letter not stored, stalled behind it for
// ever. Not the one the DSN sets (its options and PGOPTIONS too:
// pg_settings says "client"): that one is cdc's own, chosen by the
// operator, and the operator commands bound PostgreSQL's silence by it
// (statement_timeout + 15 s). Lifted there, a letter still being stored
// past that bound was cut as a frozen server ("postgres sent nothing"),
// and the command connected no more, in place of the statement_timeout
// error that says to set a longer one in CDC_PG_DSN.
const unboundedStatements = `SELECT set_config('statement_timeout', '0', true) FROM pg_settings
	WHERE name = 'statement_timeout' AND source <> 'client'`

// lockClass is the first key of the advisory locks Put takes on event
// ids, keeping them apart from the application's own two-key locks.
const lockClass = 0x0cdcde1

// replayLock is the second key, with lockClass, of the advisory lock
// that builds before per-slot replay locks took, exclusive, for as long
// as a replay ran: outside Put's buckets. A replay now holds it shared,
// beside its slot's lock (slotReplayClass), so that it and an earlier
// build's replay of the same letters, in a rollout or a rollback, still
// keep each other out.
const replayLock = lockBuckets

// slotReplayClass is the first key of the lock a replay holds for its
// pipeline, the second being the hash of its slot's name. The letters
// two pipelines of one database replay are their own, into their own
// ClickHouses: one lock for the table refused the second pipeline's
// replay while the first's ran, saying letters would be stored twice.
// Letters of no slot are both pipelines' to store, each in its own
// ClickHouse: two replays storing one at once lose nothing.
const slotReplayClass = lockClass + 1

// ErrReplayRunning is a replay refused because another holds the lock.
var ErrReplayRunning = errors.New("another `cdc deadletter replay` is running for this CDC_SLOT_NAME (or one of an earlier build, for any): letters replayed by both at once would be stored twice")

// ErrReplayLockLost ends a replay whose lock went with its connection.
var ErrReplayLockLost = errors.New("the replay lost its lock, which keeps a second `cdc deadletter replay` out: its PostgreSQL connection ended or stopped answering (idle_session_timeout, pg_terminate_backend, a dropped link); it stopped so that another replay cannot store the same letters: run it again")

// lockCheck is how often a replay makes sure its lock's connection lives.
// The lock is the session's, and a session idle for the whole replay may
// be ended by idle_session_timeout or a firewall, taking the lock with it
// while the replay goes on; the check also keeps it from being idle.
const lockCheck = 500 * time.Millisecond

// lockPingTimeout is how long a check waits for PostgreSQL: past it the
// connection is taken for lost (a link dropped without a reset).
const lockPingTimeout = 10 * time.Second

// LockReplay takes the lock that lets one replay of the pipeline run at a
// time, on a connection of its own held until release is called. Two
// replays of one pipeline at once would each read the same letters and
// store them twice; another pipeline's replay runs beside it. The replay runs
// on held: it ends, with ErrReplayLockLost as its cause, once the lock's
// connection is found ended or silent for lockPingTimeout. An INSERT in
// flight then is abandoned, and may still be stored: its letters stay and
// are stored again by the next replay, as after a crash (FINAL shows each
// event once).
func (s *Store) LockReplay(ctx context.Context) (held context.Context, release func(), err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("lock the dead letters for a replay: %w", err)
	}
	// Both locks or neither: the slot's is tried once the shared one is
	// held, and that one let go when the slot's is not to be had. A
	// connection whose locks are not known (a statement failed) is closed,
	// taking them with it, rather than handed back to the pool.
	drop := func(err error) (context.Context, func(), error) {
		_ = conn.Conn().Close(context.Background())
		conn.Release()
		return nil, nil, fmt.Errorf("lock the dead letters for a replay: %w", err)
	}
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock_shared($1, $2)`, lockClass, replayLock).Scan(&got); err != nil {
		return drop(err)
	}
	if got {
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, hashtext($2))`, slotReplayClass, s.slot).Scan(&got); err != nil {
			return drop(err)
		}
		if !got {
			if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock_shared($1, $2)`, lockClass, replayLock); err != nil {
				return drop(err)
			}
		}
	}
	if !got {
		conn.Release()
		return nil, nil, ErrReplayRunning
	}
	held, lost := context.WithCancelCause(ctx)
	stop, stopped := make(chan struct{}), make(chan struct{})
	gone := false // conn is out of the pool, lock and all; set before stopped closes
	// The watch owns conn until release stops it, and pings until then,
	// even once ctx ended: a replay told to stop still settles what it
	// stored, under the lock. Hence pings on a context of their own; one
	// cut short by the signal would close the connection, and free the
	// lock, mid-settle.
	go func() {
		defer close(stopped)
		t := time.NewTicker(lockCheck)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			pctx, cancel := context.WithTimeout(context.Background(), lockPingTimeout)
			_, err := conn.Exec(pctx, `SELECT 1`)
			cancel()
			if err != nil {
				lost(fmt.Errorf("%w (%v)", ErrReplayLockLost, err))
				// Taken out of the pool, whose Close would wait for a
				// dead connection to drain (up to 15 s), and closed
				// meanwhile.
				c := conn.Hijack()
				gone = true
				go func() {
					cctx, cancel := context.WithTimeout(context.Background(), time.Second)
					defer cancel()
					_ = c.Close(cctx)
				}()
				return
			}
		}
	}()
	return held, func() {
		close(stop)
		<-stopped
		lost(nil)
		if gone {
			return
		}
		// A connection whose unlock failed is closed rather than handed
		// back to the pool holding the lock.
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock_shared($1, $2), pg_advisory_unlock($3, hashtext($4))`,
			lockClass, replayLock, slotReplayClass, s.slot); err != nil {
			_ = conn.Conn().Close(uctx)
		}
		conn.Release()
	}, nil
}

// lockBuckets bounds the advisory locks one Put holds: as many as an
// ordinary transaction is budgeted (max_locks_per_transaction, 64 by
// default). Two Puts of events in one bucket wait for each other, which
// costs little: refused rows are rare.
const lockBuckets = 64

// RowData renders a row as a JSON object of column name to text value (null
// for NULL), the form it is kept in, and its event id when it has one.
// Written straight from the values, without the HTML escapes of
// encoding/json (a "<" would take six bytes) and without a copy of each
// value first: a refused row may hold tens of MB. Keys are in name order,
// as encoding/json writes a map's. Bytes that are not UTF-8 are kept as
// they are, as the connector and backfill store them (decodeRowData reads
// them back): cdc's sessions ask for UTF-8 in every database but a
// SQL_ASCII (or MULE_INTERNAL) one, which sends its own bytes, and its
// jsonb takes them as they are.
func RowData(r sink.Row) ([]byte, *string) {
	order := make([]int, len(r.Relation.Columns))
	size := 2
	for i, col := range r.Relation.Columns {
		order[i] = i
		size += escapedLen(col.Name) + escapedLen(r.Values[i].Data) + 8
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(r.Relation.Columns[a].Name, r.Relation.Columns[b].Name) })
	out := make([]byte, 0, size)
	out = append(out, '{')
	for n, i := range order {
		if n > 0 {
			out = append(out, ',')
		}
		out = appendJSONString(out, r.Relation.Columns[i].Name)
		out = append(out, ':')
		if v := r.Values[i]; v.Kind == decoder.ValueNull || v.Kind == decoder.ValueUnchanged {
			out = append(out, "null"...)
		} else {
			out = appendJSONString(out, v.Data)
		}
	}
	return append(out, '}'), eventID(r)
}

// eventID is the row's id column, nil when it has none or it is NULL.
func eventID(r sink.Row) *string {
	for i, col := range r.Relation.Columns {
		if col.Name == "id" {
			if v := r.Values[i]; v.Kind != decoder.ValueNull && v.Kind != decoder.ValueUnchanged {
				id := string(v.Data)
				return &id
			}
			return nil
		}
	}
	return nil
}

// escapedLen is the length of s as a JSON string's content, so that
// RowData allocates its output once.
func escapedLen[T string | []byte](s T) int {
	n := len(s)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
			n++
		case c < 0x20:
			n += 5
		}
	}
	return n
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, nothing else; bytes that are not UTF-8 are
// appended as they are.
func appendJSONString[T string | []byte](out []byte, s T) []byte {
	const hex = "0123456789abcdef"
	out = append(out, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			// UTF-8, or bytes of a database whose encoding is not
			// UTF8, which its jsonb takes as they are: the replay must
			// store what the connector would have. Not U+FFFD, which a
			// replay then stored in the byte's place (an event_type so
			// changed is another key of event_log: a second row under
			// FINAL), nor an escape, which a SQL_ASCII database refuses
			// to convert ("conversion between UTF8 and SQL_ASCII is not
			// supported"): the letter could not be stored, and the
			// stream would stall on it.
			continue
		}
		out = append(out, s[start:i]...)
		switch c {
		case '"', '\\':
			out = append(out, '\\', c)
		case '\n':
			out = append(out, '\\', 'n')
		case '\r':
			out = append(out, '\\', 'r')
		case '\t':
			out = append(out, '\\', 't')
		default:
			out = append(out, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	out = append(out, s[start:]...)
	return append(out, '"')
}

// writtenQuery reads the pipeline's letters of a range of positions by
// the index cdc_dead_letter_position: each session's start asks for the
// range past the slot, which holds few letters or none, however many
// older ones the table keeps (nothing deletes them but a replay or an
// operator). The slot is $4.
func writtenQuery(tagged bool) string {
	return `SELECT (commit_lsn - '0/0'::pg_lsn)::numeric::bigint, seq, event_id FROM cdc_dead_letter
	WHERE commit_lsn >= $1::pg_lsn AND commit_lsn < $2::pg_lsn AND ` + Mine(tagged, 4) + ` ORDER BY commit_lsn, seq LIMIT $3`
}

// Written returns the positions of the pipeline's dead letters with a
// commit LSN in [from, to): on replay they are as settled as rows in the
// sink. Another pipeline's letters are not: its ClickHouse refused the
// row, this one may not have. A range holding more than a set may
// (sink.Reader) gives a *sink.TooManyPositions.
func (s *Store) Written(ctx context.Context, from, to pglogrepl.LSN) (*sink.Positions, error) {
	tagged, err := s.scope(ctx)
	if err != nil {
		return nil, fmt.Errorf("read dead letter positions: %w", err)
	}
	qctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rows, err := s.pool.Query(qctx, writtenQuery(tagged), from.String(), to.String(), sink.ReadLimit(), s.slot)
	if err != nil {
		return nil, fmt.Errorf("read dead letter positions: %w", err)
	}
	defer rows.Close()
	var r sink.Reader
	for rows.Next() {
		var lsn, seq int64
		var id pgtype.UUID
		if err := rows.Scan(&lsn, &seq, &id); err != nil {
			return nil, fmt.Errorf("read dead letter positions: %w", err)
		}
		var event uint64 // not known without an event id
		if id.Valid {
			event = sink.EventHash(id.Bytes)
		}
		if !r.Add(sink.Position{CommitLSN: pglogrepl.LSN(lsn), Seq: uint64(seq)}, event) {
			// The rest of the result is not wanted: cancelled, not drained.
			cancel()
			rows.Close()
			var maxLSN int64
			err := s.pool.QueryRow(ctx, `SELECT (max(commit_lsn) - '0/0'::pg_lsn)::numeric::bigint FROM cdc_dead_letter
				WHERE commit_lsn >= $1::pg_lsn AND commit_lsn < $2::pg_lsn AND `+Mine(tagged, 3), from.String(), to.String(), s.slot).Scan(&maxLSN)
			if err != nil {
				return nil, fmt.Errorf("read the greatest dead letter position: %w", err)
			}
			return nil, &sink.TooManyPositions{Max: pglogrepl.LSN(maxLSN)}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read dead letter positions: %w", err)
	}
	return r.Set(), nil
}

// Letter is one stored dead letter.
type Letter struct {
	ID        int64
	EventID   *string
	CommitLSN string
	Seq       int64
	RowData   map[string]*string
	Error     string
	CreatedAt time.Time
}

// List returns up to limit of the pipeline's dead letters, oldest first.
// Without withData their RowData is left out: a letter may hold tens of
// MB, and a listing of a hundred of them shows only their errors.
func (s *Store) List(ctx context.Context, limit int, withData bool) ([]Letter, error) {
	tagged, err := s.scope(ctx)
	if err != nil {
		return nil, fmt.Errorf("read dead letters: %w", err)
	}
	data := "row_data"
	if !withData {
		data = "NULL::jsonb"
	}
	out, _, err := s.query(ctx, `SELECT id, event_id::text, commit_lsn::text, seq, `+data+`, error, created_at FROM cdc_dead_letter
		WHERE `+Mine(tagged, 2)+` ORDER BY id LIMIT $1`, 0, limit, s.slot)
	return out, err
}

// Listing returns up to limit of the pipeline's dead letters, oldest first
// and without their RowData (List), and how many it has, both as one
// statement saw them: a count read apart, before or after, may miss
// letters set aside or replayed in between, and the listing would say
// "100 of 40 shown".
func (s *Store) Listing(ctx context.Context, limit int) (letters []Letter, total int64, err error) {
	tagged, err := s.scope(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("read dead letters: %w", err)
	}
	rows, err := s.pool.Query(ctx, `SELECT id, event_id::text, commit_lsn::text, seq, error, created_at,
			(SELECT count(*) FROM cdc_dead_letter WHERE `+Mine(tagged, 2)+`)
		FROM cdc_dead_letter WHERE `+Mine(tagged, 2)+` ORDER BY id LIMIT $1`, limit, s.slot)
	if err != nil {
		return nil, 0, fmt.Errorf("read dead letters: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var l Letter
		if err := rows.Scan(&l.ID, &l.EventID, &l.CommitLSN, &l.Seq, &l.Error, &l.CreatedAt, &total); err != nil {
			return nil, 0, fmt.Errorf("read dead letters: %w", err)
		}
		letters = append(letters, l)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("read dead letters: %w", err)
	}
	if len(letters) == 0 {
		// No row to carry the count: there is none, in this statement's
		// view too.
		return nil, 0, nil
	}
	return letters, total, nil
}

// Count returns how many of the pipeline's dead letters wait for an
// operator.
func (s *Store) Count(ctx context.Context) (int64, error) {
	return s.CountUpTo(ctx, math.MaxInt64)
}

// CountUpTo is Count, counting no further than limit: a gauge read every
// minute need not scan a table an outage filled.
func (s *Store) CountUpTo(ctx context.Context, limit int64) (int64, error) {
	tagged, err := s.scope(ctx)
	if err != nil {
		return 0, fmt.Errorf("count dead letters: %w", err)
	}
	var n int64
	if err := s.pool.QueryRow(ctx, countQuery(tagged), limit, s.slot).Scan(&n); err != nil {
		return 0, fmt.Errorf("count dead letters: %w", err)
	}
	return n, nil
}

// countQuery counts the pipeline's letters, no further than $1; slot $2.
// By cdc_dead_letter_slot where the table is the pipeline's and others'.
func countQuery(tagged bool) string {
	return `SELECT count(*) FROM (SELECT FROM cdc_dead_letter WHERE ` + Mine(tagged, 2) + ` LIMIT $1) AS waiting`
}

// Others counts the letters other slots set aside, by slot: letters this
// pipeline neither skips nor replays. They belong to another pipeline of
// the database, or to this one under a slot name it no longer uses. Nil
// on a table without slot_name.
func (s *Store) Others(ctx context.Context) (map[string]int64, error) {
	tagged, err := s.scope(ctx)
	if err != nil || !tagged {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT slot_name, count(*) FROM cdc_dead_letter WHERE slot_name <> $1 GROUP BY slot_name`, s.slot)
	if err != nil {
		return nil, fmt.Errorf("count other slots' dead letters: %w", err)
	}
	out := map[string]int64{}
	for rows.Next() {
		var slot string
		var n int64
		if err := rows.Scan(&slot, &n); err != nil {
			return nil, fmt.Errorf("count other slots' dead letters: %w", err)
		}
		out[slot] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count other slots' dead letters: %w", err)
	}
	return out, nil
}

// Events counts how many of ids (event ids) the pipeline's dead letters
// hold.
func (s *Store) Events(ctx context.Context, ids []string) (int64, error) {
	tagged, err := s.scope(ctx)
	if err != nil {
		return 0, fmt.Errorf("look up events in cdc_dead_letter: %w", err)
	}
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT count(DISTINCT event_id) FROM cdc_dead_letter WHERE event_id = ANY($1::uuid[]) AND `+Mine(tagged, 2),
		ids, s.slot).Scan(&n); err != nil {
		return 0, fmt.Errorf("look up events in cdc_dead_letter: %w", err)
	}
	return n, nil
}

// LastID is the id of the pipeline's newest dead letter, 0 when there is
// none.
func (s *Store) LastID(ctx context.Context) (int64, error) {
	tagged, err := s.scope(ctx)
	if err != nil {
		return 0, fmt.Errorf("read the newest dead letter: %w", err)
	}
	var id int64
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM cdc_dead_letter WHERE `+Mine(tagged, 1), s.slot).Scan(&id); err != nil {
		return 0, fmt.Errorf("read the newest dead letter: %w", err)
	}
	return id, nil
}

// Page returns up to limit of the pipeline's dead letters with ids in
// (afterID, upTo], oldest first: replay walks the table page by page with
// it. With maxBytes > 0 it stops after the letter that takes the page's
// values to maxBytes, so a page of letters larger than the ones before it
// is not held whole. more is false when the page holds every letter of
// the range there was.
func (s *Store) Page(ctx context.Context, afterID, upTo int64, limit, maxBytes int) (letters []Letter, more bool, err error) {
	tagged, err := s.scope(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("read dead letters: %w", err)
	}
	out, cut, err := s.query(ctx, `SELECT id, event_id::text, commit_lsn::text, seq, row_data, error, created_at FROM cdc_dead_letter
		WHERE id > $1 AND id <= $2 AND `+Mine(tagged, 4)+` ORDER BY id LIMIT $3`, maxBytes, afterID, upTo, limit, s.slot)
	return out, cut || len(out) == limit, err
}

// OtherSlotError is a letter asked for by id (`cdc deadletter replay
// --id`) that another slot set aside: not this pipeline's to replay, but
// there, in the other pipeline's `cdc deadletter list` and in psql.
type OtherSlotError struct {
	ID   int64
	Slot string // the letter's
	Own  string // the pipeline's that asked
}

func (e *OtherSlotError) Error() string {
	return fmt.Sprintf("dead letter %d is slot %s's, another pipeline's, not that of slot %s (CDC_SLOT_NAME): "+
		"replay it with the other pipeline's CDC_SLOT_NAME and CDC_CLICKHOUSE_DSN", e.ID, e.Slot, e.Own)
}

// Get returns the pipeline's dead letter with that id; ok is false when
// there is none. Another slot's letter is not this pipeline's to replay:
// a *OtherSlotError names its slot.
func (s *Store) Get(ctx context.Context, id int64) (l Letter, ok bool, err error) {
	tagged, err := s.scope(ctx)
	if err != nil {
		return Letter{}, false, fmt.Errorf("read dead letters: %w", err)
	}
	out, _, err := s.query(ctx, `SELECT id, event_id::text, commit_lsn::text, seq, row_data, error, created_at FROM cdc_dead_letter
		WHERE id = $1 AND `+Mine(tagged, 2), 0, id, s.slot)
	if err != nil {
		return Letter{}, false, err
	}
	if len(out) > 0 {
		return out[0], true, nil
	}
	if !tagged {
		return Letter{}, false, nil
	}
	var slot string
	switch err := s.pool.QueryRow(ctx, `SELECT slot_name FROM cdc_dead_letter WHERE id = $1 AND slot_name <> $2`, id, s.slot).Scan(&slot); {
	case errors.Is(err, pgx.ErrNoRows):
		return Letter{}, false, nil
	case err != nil:
		return Letter{}, false, fmt.Errorf("read dead letter %d's slot: %w", id, err)
	}
	return Letter{}, false, &OtherSlotError{ID: id, Slot: slot, Own: s.slot}
}

// query reads letters, stopping once their values reach maxBytes (0: no
// bound; cut reports the stop). At a stop the query is cancelled rather
// than drained: rows.Close would read, and drop, every letter up to the
// LIMIT, which was sized for the letters of the page before.
func (s *Store) query(ctx context.Context, sql string, maxBytes int, args ...any) (out []Letter, cut bool, err error) {
	qctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rows, err := s.pool.Query(qctx, sql, args...)
	if err != nil {
		return nil, false, fmt.Errorf("read dead letters: %w", err)
	}
	defer rows.Close()
	size := 0
	for rows.Next() {
		var l Letter
		var data []byte
		if err := rows.Scan(&l.ID, &l.EventID, &l.CommitLSN, &l.Seq, &data, &l.Error, &l.CreatedAt); err != nil {
			return nil, false, fmt.Errorf("read dead letters: %w", err)
		}
		if data != nil {
			if l.RowData, err = decodeRowData(data); err != nil {
				return nil, false, fmt.Errorf("read dead letter %d: row_data: %w", l.ID, err)
			}
		}
		out = append(out, l)
		for _, v := range l.RowData {
			if v != nil {
				size += len(*v)
			}
		}
		if maxBytes > 0 && size >= maxBytes {
			cut = true
			cancel()
			break
		}
	}
	if err := rows.Err(); err != nil && !cut {
		return nil, false, fmt.Errorf("read dead letters: %w", err)
	}
	return out, cut, nil
}

// decodeRowData reads row_data, a JSON object of column name to text value.
// cdc writes each value as a JSON string, or null for NULL; a letter an
// operator repaired by hand may hold a number, a boolean, an object or an
// array instead, which is read as its JSON text: what was typed, and for a
// json column what PostgreSQL itself would send.
func decodeRowData(data []byte) (map[string]*string, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	out := make(map[string]*string, len(raw))
	for name, v := range raw {
		switch {
		case string(v) == "null":
			out[name] = nil
		case v[0] == '"' && !utf8.Valid(v):
			s := unquoteBytes(v)
			out[name] = &s
		case v[0] == '"':
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return nil, fmt.Errorf("column %s: %w", name, err)
			}
			out[name] = &s
		default:
			s := string(v)
			out[name] = &s
		}
	}
	return out, nil
}

// unquoteBytes reads a JSON string that holds bytes that are not UTF-8 (a
// letter of a database whose encoding is not UTF8, RowData), keeping those
// bytes as they are: encoding/json would read each as U+FFFD. v is valid JSON, checked by
// the json.Unmarshal of the whole object.
func unquoteBytes(v []byte) string {
	out := make([]byte, 0, len(v))
	for i := 1; i < len(v)-1; i++ {
		c := v[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		switch v[i] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			// A control character: jsonb prints every other character
			// as itself (so no surrogate pairs either).
			r, _ := strconv.ParseUint(string(v[i+1:i+5]), 16, 32) // four hex digits: valid JSON
			out = utf8.AppendRune(out, rune(r))
			i += 4
		default: // '"', '\\', '/'
			out = append(out, v[i])
		}
	}
	return string(out)
}

// Settle records a replay in one transaction: the dead letters in stored
// are in the sink now and are deleted; those in refused were refused again
// and keep their row with the new reason.
func (s *Store) Settle(ctx context.Context, stored []int64, refused map[int64]string) error {
	if len(stored) == 0 && len(refused) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	if len(stored) > 0 {
		b.Queue(`DELETE FROM cdc_dead_letter WHERE id = ANY($1)`, stored)
	}
	for id, msg := range refused {
		b.Queue(`UPDATE cdc_dead_letter SET error = $2 WHERE id = $1`, id, msg)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("settle replayed dead letters: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit it is a no-op
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("settle %d replayed dead letters: %w", len(stored)+len(refused), err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("settle replayed dead letters: %w", err)
	}
	return nil
}
