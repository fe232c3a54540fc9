package backfill

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/eventcdc/cdc/deadletter"
	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/sink"
)

// LetterStore is what Replay needs of deadletter.Store.
type LetterStore interface {
	LastID(ctx context.Context) (int64, error)
	Page(ctx context.Context, afterID, upTo int64, limit, maxBytes int) (letters []deadletter.Letter, more bool, err error)
	Get(ctx context.Context, id int64) (deadletter.Letter, bool, error)
	Settle(ctx context.Context, stored []int64, refused map[int64]string) error
}

// ReplayResult counts what Replay did.
type ReplayResult struct {
	Replayed int // stored in the sink and deleted from cdc_dead_letter
	Refused  int // refused again; kept with the new reason
	// Unsettled counts letters whose rows the sink stored when settling
	// them failed (a role without DELETE on cdc_dead_letter, a lost
	// link): still in cdc_dead_letter, and stored again by the next
	// replay.
	Unsettled int
}

// ErrNoSuchLetter is returned when Replay is asked for an id that is not there.
var ErrNoSuchLetter = errors.New("no such dead letter")

// Replay re-sends dead letters through the sink: all of them, or only the
// one with id onlyID when it is not 0. A letter the sink stores is deleted;
// one refused again stays, its error replaced by the new one. A crash
// between the write and the delete leaves the letter to be replayed again,
// which is harmless: event_log collapses the event.
//
// As in Ship, letters go in id order in batches of at most batchRows letters
// and maxBytes of values (a letter larger than that goes alone), each one
// INSERT. They are read in pages sized from the largest letter of the page
// before (the first page is one letter), and a page ends early once its
// letters reach maxBytes, so a page holds about maxBytes too, however many
// letters there are and however their sizes change.
func Replay(ctx context.Context, store LetterStore, w Writer, outbox *decoder.Relation, onlyID int64, batchRows, maxBytes int) (ReplayResult, error) {
	r := &replay{store: store, w: w, rels: relations{outbox: outbox, byKey: map[string]*decoder.Relation{}}}
	if onlyID != 0 {
		l, ok, err := store.Get(ctx, onlyID)
		if err != nil {
			return r.res, err
		}
		if !ok {
			return r.res, fmt.Errorf("%w with id %d", ErrNoSuchLetter, onlyID)
		}
		r.add(r.rels.row(l), l)
		return r.res, r.flush(ctx)
	}
	// The letters there are now: those set aside while this runs wait for
	// the next replay, or a connector refusing events as fast as they are
	// replayed would keep this one going for ever.
	last, err := store.LastID(ctx)
	if err != nil {
		return r.res, err
	}
	var after int64
	limit := 1
	for {
		letters, more, err := store.Page(ctx, after, last, limit, maxBytes)
		if err != nil {
			return r.res, err
		}
		largest := 0
		for i, l := range letters {
			row := r.rels.row(l)
			letters[i].RowData = nil // the row holds the values now
			largest = max(largest, row.Size)
			if len(r.b.Rows) > 0 && (len(r.b.Rows) >= batchRows || r.b.Bytes+row.Size > maxBytes) {
				if err := r.flush(ctx); err != nil {
					return r.res, err
				}
			}
			r.add(row, l)
		}
		if !more {
			return r.res, r.flush(ctx)
		}
		// A full batch goes before the next page is read, as a backfill's
		// does: kept until a letter of the next page would not fit, it was
		// held beside that page, two large letters at once where the
		// connector holds one.
		if len(r.b.Rows) >= batchRows || r.b.Bytes >= maxBytes {
			if err := r.flush(ctx); err != nil {
				return r.res, err
			}
		}
		after = letters[len(letters)-1].ID
		limit = pageRows(batchRows, maxBytes, largest)
	}
}

// replay is the batch Replay is filling and what it did so far.
type replay struct {
	store LetterStore
	w     Writer
	rels  relations
	res   ReplayResult

	b     sink.Batch
	byPos map[sink.Position]int64 // letter id by its row's position in b
	ids   []int64                 // letters in b, in id order
}

// add puts letter l, as row, into the batch.
func (r *replay) add(row sink.Row, l deadletter.Letter) {
	if r.byPos == nil {
		r.byPos = map[sink.Position]int64{}
	}
	// Keep the letter's WAL position, so event_log records where the
	// event came from (and a connector replaying that WAL skips it).
	// Letters of a backfill (commit LSN 0) or a repeated position get
	// a unique one: the sink tells rows apart by position.
	if lsn, err := pglogrepl.ParseLSN(l.CommitLSN); err == nil && lsn != 0 {
		row.Pos = sink.Position{CommitLSN: lsn, Seq: uint64(l.Seq)}
	}
	if _, dup := r.byPos[row.Pos]; dup || row.Pos.CommitLSN == 0 {
		row.Pos = sink.Position{Seq: uint64(l.ID)}
	}
	r.byPos[row.Pos] = l.ID
	r.ids = append(r.ids, l.ID)
	r.b.Rows = append(r.b.Rows, row)
	r.b.Bytes += row.Size
}

// flush stores the batch with one INSERT and settles its letters.
func (r *replay) flush(ctx context.Context) error {
	if len(r.b.Rows) == 0 {
		return nil
	}
	b, byPos, ids := &r.b, r.byPos, r.ids
	defer func() { r.b, r.byPos, r.ids = sink.Batch{}, nil, nil }()
	// The sink keeps positions in order within a batch.
	sort.Slice(b.Rows, func(i, j int) bool { return b.Rows[i].Pos.Less(b.Rows[j].Pos) })
	rejected, err := r.w.Write(withReadBack(ctx, r.w), b)
	if err != nil {
		return fmt.Errorf("replay %d dead letters (%d replayed before): %w", len(ids), r.res.Replayed, err)
	}
	refused := make(map[int64]string, len(rejected))
	for _, rj := range rejected {
		refused[byPos[rj.Row.Pos]] = rj.Err.Error()
	}
	stored := make([]int64, 0, len(ids))
	for _, id := range ids {
		if _, again := refused[id]; !again {
			stored = append(stored, id)
		}
	}
	// The rows are stored: their letters are settled even when ctx ends
	// meanwhile (a signal, a lost lock), or the next replay would store
	// them again.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	if err := r.store.Settle(sctx, stored, refused); err != nil {
		r.res.Unsettled += len(stored)
		return err
	}
	r.res.Replayed += len(stored)
	r.res.Refused += len(refused)
	return nil
}

// settleTimeout bounds settling a stored batch's letters after the
// replay was told to stop: a DELETE behind a lock on cdc_dead_letter
// must not hold the process for ever.
const settleTimeout = time.Minute

// relations shares one decoder.Relation per set of columns: the sink plans
// its INSERT per relation, and letters of one outbox shape share a plan.
// A column has the type of the outbox's column of its name (outbox, if
// not nil), 0 for a column the outbox no longer has.
type relations struct {
	outbox *decoder.Relation
	byKey  map[string]*decoder.Relation
}

func (rs relations) row(l deadletter.Letter) sink.Row {
	names := make([]string, 0, len(l.RowData))
	for name := range l.RowData {
		names = append(names, name)
	}
	sort.Strings(names)
	// NUL, which neither a PostgreSQL identifier nor a jsonb key holds:
	// joined by a comma, the columns {"a,b"} and {"a", "b"} were one key,
	// and a letter of one shape was sent with the other's relation.
	key := strings.Join(names, "\x00")
	rel, ok := rs.byKey[key]
	if !ok {
		rel = &decoder.Relation{Namespace: "public", Name: OutboxTable}
		for _, name := range names {
			col := decoder.Column{Name: name}
			if rs.outbox != nil {
				if i := rs.outbox.Index(name); i >= 0 {
					col.TypeOID = rs.outbox.Columns[i].TypeOID
				}
			}
			rel.Columns = append(rel.Columns, col)
		}
		rs.byKey[key] = rel
	}
	row := sink.Row{Relation: rel, Values: make([]decoder.Value, len(names))}
	for i, name := range names {
		if v := l.RowData[name]; v != nil {
			row.Values[i] = decoder.Value{Kind: decoder.ValueText, Data: []byte(*v)}
			row.Size += len(*v)
		} else {
			row.Values[i] = decoder.Value{Kind: decoder.ValueNull}
		}
	}
	return row
}
