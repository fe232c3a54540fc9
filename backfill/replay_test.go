package backfill_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/eventcdc/cdc/backfill"
	"github.com/eventcdc/cdc/deadletter"
	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/sink"
)

// letters is an in-memory cdc_dead_letter for Replay: pages by id, with
// Store.Page's contract (no byte bound here).
type letters struct {
	all    []deadletter.Letter
	nextID int64
}

func (l *letters) add(n int) {
	for range n {
		l.nextID++
		v := "x"
		l.all = append(l.all, deadletter.Letter{ID: l.nextID, CommitLSN: "0/0", RowData: map[string]*string{"event_type": &v}, Error: "refused"})
	}
}

func (l *letters) LastID(context.Context) (int64, error) { return l.nextID, nil }

func (l *letters) Page(_ context.Context, after, upTo int64, limit, _ int) ([]deadletter.Letter, bool, error) {
	var out []deadletter.Letter
	for _, x := range l.all {
		if x.ID > after && x.ID <= upTo && len(out) < limit {
			out = append(out, x)
		}
	}
	return out, len(out) == limit, nil
}

func (l *letters) Get(context.Context, int64) (deadletter.Letter, bool, error) {
	return deadletter.Letter{}, false, errors.New("not used")
}

func (l *letters) Settle(context.Context, []int64, map[int64]string) error { return nil }

// refuser refuses every row, and each INSERT sees three more letters set
// aside meanwhile: a connector refusing new events faster than they are
// replayed.
type refuser struct {
	store  *letters
	writes int
}

func (r *refuser) Write(_ context.Context, b *sink.Batch) ([]sink.Rejected, error) {
	r.writes++
	if r.writes > 100 {
		return nil, errors.New("replay does not end")
	}
	r.store.add(3)
	out := make([]sink.Rejected, len(b.Rows))
	for i, row := range b.Rows {
		out[i] = sink.Rejected{Row: row, Err: errors.New("refused again")}
	}
	return out, nil
}

// Replay ends once it has read the letters there were when its last page
// was read: letters set aside while it runs wait for the next replay, or a
// steady stream of refusals would keep it going for ever.
func TestReplay_EndsWhileLettersKeepArriving(t *testing.T) {
	store := &letters{}
	store.add(10)
	w := &refuser{store: store}
	// Batches of 2 letters: an INSERT every 2 letters read, each adding 3.
	res, err := backfill.Replay(context.Background(), store, w, nil, 0, 2, 1<<20)
	if err != nil {
		t.Fatalf("Replay: %v (after %d INSERTs)", err, w.writes)
	}
	if w.writes != 5 || res.Refused != 10 || res.Replayed != 0 || len(store.all) != 25 {
		t.Fatalf("%d INSERTs, %+v, %d letters now; want the 10 letters there were refused again in 5 INSERTs, 25 letters now", w.writes, res, len(store.all))
	}
}

// columns records the columns, with their types, of each row written.
type columns struct{ got []string }

func (c *columns) Write(_ context.Context, b *sink.Batch) ([]sink.Rejected, error) {
	for _, row := range b.Rows {
		for _, col := range row.Relation.Columns {
			c.got = append(c.got, fmt.Sprintf("%s:%d", col.Name, col.TypeOID))
		}
	}
	return nil, nil
}

// A letter keeps its values as text; the sink reads some by the outbox
// column's type (a box[] is refused from an Array column rather than split
// at its commas), so each replayed column has the type of the outbox's
// column of its name, and 0 where the outbox has none any more.
func TestReplay_ColumnsHaveTheOutboxTypes(t *testing.T) {
	store := &letters{}
	v := "{(1,1),(0,0);(3,3),(2,2)}"
	store.nextID = 1
	store.all = []deadletter.Letter{{ID: 1, CommitLSN: "0/10", RowData: map[string]*string{"boxes": &v, "event_type": &v, "gone": nil}}}
	outbox := &decoder.Relation{Name: "outbox", Columns: []decoder.Column{{Name: "id", TypeOID: 2950}, {Name: "event_type", TypeOID: 25}, {Name: "boxes", TypeOID: 1020}}}
	w := &columns{}
	res, err := backfill.Replay(context.Background(), store, w, outbox, 0, 10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(w.got, " "), "boxes:1020 event_type:25 gone:0"; got != want || res.Replayed != 1 {
		t.Fatalf("columns written %q (%+v), want %q and one replayed", got, res, want)
	}
}

// values records each row written as its columns and values.
type values struct{ got []string }

func (v *values) Write(_ context.Context, b *sink.Batch) ([]sink.Rejected, error) {
	for _, row := range b.Rows {
		var kv []string
		for i, col := range row.Relation.Columns {
			kv = append(kv, fmt.Sprintf("%q=%q", col.Name, row.Values[i].Data))
		}
		v.got = append(v.got, strings.Join(kv, " "))
	}
	return nil, nil
}

// Letters of different shapes are sent with relations of their own, even
// where their column names joined by a comma read alike: a quoted column
// "a,b" and the columns a and b shared one relation, so a letter was sent
// with the other's columns (a value under the wrong name, or one too few,
// which the sink indexed past).
func TestReplay_LettersOfDifferentColumnsKeepTheirOwn(t *testing.T) {
	one, x, y := "one", "x", "y"
	for _, order := range [][]map[string]*string{
		{{"a,b": &one}, {"a": &x, "b": &y}},
		{{"a": &x, "b": &y}, {"a,b": &one}},
	} {
		store := &letters{nextID: 2, all: []deadletter.Letter{{ID: 1, CommitLSN: "0/10", RowData: order[0]}, {ID: 2, CommitLSN: "0/20", RowData: order[1]}}}
		w := &values{}
		res, err := backfill.Replay(context.Background(), store, w, nil, 0, 10, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(w.got, " | ")
		want := map[bool]string{true: `"a,b"="one" | "a"="x" "b"="y"`, false: `"a"="x" "b"="y" | "a,b"="one"`}[len(order[0]) == 1]
		if got != want || res.Replayed != 2 {
			t.Errorf("rows written %s (%+v), want %s and two replayed", got, res, want)
		}
	}
}

// settles records what Settle was given, and whether its context had
// ended by then.
type settles struct {
	letters
	stored   []int64
	ctxEnded bool
}

func (s *settles) Settle(ctx context.Context, stored []int64, _ map[int64]string) error {
	s.stored = append(s.stored, stored...)
	s.ctxEnded = s.ctxEnded || ctx.Err() != nil
	return nil
}

// stopAfterStore stores the first batch, and the replay is told to stop
// (a signal, a lost lock) as that INSERT returns; later writes see the
// context ended, as the sink does.
type stopAfterStore struct {
	stop   context.CancelFunc
	writes int
}

func (w *stopAfterStore) Write(ctx context.Context, _ *sink.Batch) ([]sink.Rejected, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	w.writes++
	w.stop()
	return nil, nil
}

// A replay told to stop while an INSERT runs still settles the letters
// that INSERT stored: left, the next replay would store them again.
func TestReplay_StoppedWhileStoringSettlesWhatWasStored(t *testing.T) {
	store := &settles{}
	store.add(4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &stopAfterStore{stop: cancel}
	res, err := backfill.Replay(ctx, store, w, nil, 0, 2, 1<<20)
	if !errors.Is(err, context.Canceled) || w.writes != 1 || res.Replayed != 2 || fmt.Sprint(store.stored) != "[1 2]" || store.ctxEnded {
		t.Fatalf("replay stopped during its first INSERT: %+v, %v, %d INSERTs, settled %v (context ended: %v); want letters 1 and 2 settled on a live context, then context canceled",
			res, err, w.writes, store.stored, store.ctxEnded)
	}
}

// heldLetters is a letter store and a writer in one: it records, at each
// page read, how many letters were read and not yet written.
type heldLetters struct {
	letters
	read, written int
	heldAtPage    []int
}

func (h *heldLetters) Page(ctx context.Context, after, upTo int64, limit, maxBytes int) ([]deadletter.Letter, bool, error) {
	h.heldAtPage = append(h.heldAtPage, h.read-h.written)
	out, more, err := h.letters.Page(ctx, after, upTo, limit, maxBytes)
	h.read += len(out)
	return out, more, err
}

func (h *heldLetters) Write(_ context.Context, b *sink.Batch) ([]sink.Rejected, error) {
	h.written += len(b.Rows)
	return nil, nil
}

// A full batch is written before the next page is read: held until a
// letter of that page would not fit, it sat beside the page, so that a
// replay of letters of tens of MB held two at once where the connector
// holds one (a replay of three 32 MiB letters peaked at 290 MiB, 226 MiB
// once it held one).
func TestReplay_FullBatchIsWrittenBeforeTheNextPage(t *testing.T) {
	big := strings.Repeat("x", 100)
	cases := []struct {
		name      string
		value     string
		batchRows int
		maxBytes  int
		full      int // letters that fill a batch
	}{
		{"letters over the byte bound", big, 10, 64, 1},
		{"letters at the byte bound", big, 10, 100, 1},
		{"batches full of rows", "x", 2, 1 << 20, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := &heldLetters{}
			h.add(5)
			for i := range h.all {
				v := tc.value
				h.all[i].RowData["event_context"] = &v
			}
			res, err := backfill.Replay(context.Background(), h, h, nil, 0, tc.batchRows, tc.maxBytes)
			if err != nil || res.Replayed != 5 {
				t.Fatalf("Replay: %+v, %v; want 5 replayed", res, err)
			}
			for i, held := range h.heldAtPage {
				if held >= tc.full {
					t.Errorf("page %d read with %d letters of a full batch not written yet (held at each page: %v)", i+1, held, h.heldAtPage)
					break
				}
			}
		})
	}
}

// unsettling is a letter store whose Settle fails, as for a role without
// DELETE on cdc_dead_letter, and a writer that stores every row.
type unsettling struct{ letters }

func (u *unsettling) Settle(context.Context, []int64, map[int64]string) error {
	return errors.New("permission denied for table cdc_dead_letter")
}

func (u *unsettling) Write(context.Context, *sink.Batch) ([]sink.Rejected, error) { return nil, nil }

// Letters whose rows were stored when settling them failed are counted:
// the summary said "0 dead letters replayed" of rows that were in
// event_log, and the next replay stores them again.
func TestReplay_CountsStoredLettersItCouldNotSettle(t *testing.T) {
	store := &unsettling{}
	store.add(7)
	res, err := backfill.Replay(context.Background(), store, store, nil, 0, 100, 1<<20)
	if err == nil || !strings.Contains(err.Error(), "permission denied") || res != (backfill.ReplayResult{Unsettled: 7}) {
		t.Fatalf("Replay = %+v, %v; want 7 unsettled and the refusal", res, err)
	}
}
