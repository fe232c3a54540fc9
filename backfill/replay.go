package backfill

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pglogrepl"

	"github.com/eventcdc/cdc/deadletter"
	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/sink"
)

// LetterStore is what Replay needs of deadletter.Store.
type LetterStore interface {
	Page(ctx context.Context, afterID int64, limit int) ([]deadletter.Letter, error)
	Get(ctx context.Context, id int64) (deadletter.Letter, bool, error)
	Settle(ctx context.Context, stored []int64, refused map[int64]string) error
}

// ReplayResult counts what Replay did.
type ReplayResult struct {
	Replayed int // stored in the sink and deleted from cdc_dead_letter
	Refused  int // refused again; kept with the new reason
}

// ErrNoSuchLetter is returned when Replay is asked for an id that is not there.
var ErrNoSuchLetter = errors.New("no such dead letter")

// Replay re-sends dead letters through the sink, batchRows at a time: all
// of them, or only the one with id onlyID when it is not 0. A letter the sink
// stores is deleted; one refused again stays, its error replaced by the new
// one. A crash between the write and the delete leaves the letter to be
// replayed again, which is harmless: event_log collapses the event.
func Replay(ctx context.Context, store LetterStore, w Writer, onlyID int64, batchRows int) (ReplayResult, error) {
	var res ReplayResult
	rels := relations{}
	var after int64
	for {
		var letters []deadletter.Letter
		if onlyID != 0 {
			l, ok, err := store.Get(ctx, onlyID)
			if err != nil {
				return res, err
			}
			if !ok {
				return res, fmt.Errorf("%w with id %d", ErrNoSuchLetter, onlyID)
			}
			letters = []deadletter.Letter{l}
		} else {
			var err error
			if letters, err = store.Page(ctx, after, batchRows); err != nil {
				return res, err
			}
		}
		if len(letters) == 0 {
			return res, nil
		}
		after = letters[len(letters)-1].ID

		b := &sink.Batch{}
		byPos := make(map[sink.Position]int64, len(letters))
		for _, l := range letters {
			row := rels.row(l)
			// Keep the letter's WAL position, so event_log records where the
			// event came from (and a connector replaying that WAL skips it).
			// Letters of a backfill (commit LSN 0) or a repeated position get
			// a unique one: the sink tells rows apart by position.
			if lsn, err := pglogrepl.ParseLSN(l.CommitLSN); err == nil && lsn != 0 {
				row.Pos = sink.Position{CommitLSN: lsn, Seq: uint64(l.Seq)}
			}
			if _, dup := byPos[row.Pos]; dup || row.Pos.CommitLSN == 0 {
				row.Pos = sink.Position{Seq: uint64(l.ID)}
			}
			byPos[row.Pos] = l.ID
			b.Rows = append(b.Rows, row)
			b.Bytes += row.Size
		}
		// The sink keeps positions in order within a batch.
		sort.Slice(b.Rows, func(i, j int) bool { return b.Rows[i].Pos.Less(b.Rows[j].Pos) })
		rejected, err := w.Write(ctx, b)
		if err != nil {
			return res, fmt.Errorf("replay %d dead letters (%d replayed before): %w", len(letters), res.Replayed, err)
		}
		refused := make(map[int64]string, len(rejected))
		for _, rj := range rejected {
			refused[byPos[rj.Row.Pos]] = rj.Err.Error()
		}
		stored := make([]int64, 0, len(letters))
		for _, l := range letters {
			if _, again := refused[l.ID]; !again {
				stored = append(stored, l.ID)
			}
		}
		if err := store.Settle(ctx, stored, refused); err != nil {
			return res, err
		}
		res.Replayed += len(stored)
		res.Refused += len(refused)
		if onlyID != 0 || len(letters) < batchRows {
			return res, nil
		}
	}
}

// relations shares one decoder.Relation per set of columns: the sink plans
// its INSERT per relation, and letters of one outbox shape share a plan.
type relations map[string]*decoder.Relation

func (rs relations) row(l deadletter.Letter) sink.Row {
	names := make([]string, 0, len(l.RowData))
	for name := range l.RowData {
		names = append(names, name)
	}
	sort.Strings(names)
	key := strings.Join(names, ",")
	rel, ok := rs[key]
	if !ok {
		rel = &decoder.Relation{Namespace: "public", Name: OutboxTable}
		for _, name := range names {
			rel.Columns = append(rel.Columns, decoder.Column{Name: name})
		}
		rs[key] = rel
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
