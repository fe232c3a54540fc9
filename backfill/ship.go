package backfill

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/sink"
)

// Writer is the sink: sink.ClickHouse in production.
type Writer interface {
	Write(ctx context.Context, b *sink.Batch) ([]sink.Rejected, error)
}

// unwrittenReader is the read-back a Writer may offer
// (sink.ClickHouse.Unwritten): asked which rows of an INSERT that broke
// after some of its blocks went out ClickHouse lacks, it keeps the blocks
// stored from being written again as raw duplicates.
type unwrittenReader interface {
	Unwritten(ctx context.Context, rows []sink.Row) ([]sink.Row, error)
}

// withReadBack is ctx with w's read-back (sink.WithReadBack), if it has one.
func withReadBack(ctx context.Context, w Writer) context.Context {
	if u, ok := w.(unwrittenReader); ok {
		return sink.WithReadBack(ctx, u.Unwritten)
	}
	return ctx
}

// ShipWriter is the sink Ship writes through; its Conn is asked which
// refused events event_log already holds.
type ShipWriter interface {
	Writer
	Conn() driver.Conn
}

// DeadLetters keeps refused rows: deadletter.Store in production.
type DeadLetters interface {
	Put(ctx context.Context, rejected []sink.Rejected) error
}

// ShipResult counts what Ship did.
type ShipResult struct {
	Read        int // outbox rows read
	Shipped     int // rows the sink stored
	DeadLetters int // rows the sink refused, now in cdc_dead_letter
	// Repaired is rows the sink refused whose event event_log holds
	// already: most often a letter repaired and replayed before. Not set
	// aside again, or a backfill over the outbox row, which keeps its bad
	// values, would bring the letter back after every repair. Refused
	// rows are counted once set aside, every few batches.
	Repaired int
	// Resume, when Ship fails, is an event_date_time every row before
	// which is stored: that of the first row of the batch that failed, or
	// after a failed read that of the last row stored. A backfill from
	// there on ships what is left (and again the rows stored at that very
	// time, which is harmless). Not valid when nothing was stored.
	Resume pgtype.Timestamptz
}

// retryWaits are the pauses before each new try of a write that failed for
// another reason than a row's content or the login: a network error, a
// restart, too many parts. A backfill may run for hours; one such error
// should not end it.
var retryWaits = []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}

// Ship re-sends every row the scanner yields through w, in batches of at
// most maxBytes (a scanner page is at most maxRows rows). Refused rows go to
// dl, as in the connector: a row is refused for the text of its values,
// which is what pgoutput sends, so a row at event_date_time 'infinity' is
// set aside with the connector's error and the scan goes on past it.
// Re-sending a stored event is harmless: event_log is a ReplacingMergeTree
// keyed by the event, and FINAL shows it once.
//
// Rows carry commit LSN 0, which no WAL position has, marking them as not
// streamed; their sequence numbers count rows from the run's start time in
// nanoseconds. They must be distinct: the sink orders and separates rows by
// position when it sets one aside. And they must differ from every other
// run's: when an INSERT breaks after some of its blocks were stored, the
// sink asks which rows event_log holds at their position with their event
// (sink.ClickHouse.Unwritten) and writes only the others; an earlier run's
// row at the same ordinal would pass for this run's, and the row would
// keep the earlier run's values (a column added since, say). A write that
// failed is tried again with the rows event_log lacks (writeAgain).
//
// progress, if not nil, is called after every stored batch, and retry
// before each new try of a failed write (retryWaits); when the last try
// fails too, ShipResult.Resume says where to start again.
func Ship(ctx context.Context, sc *Scanner, rel *decoder.Relation, w ShipWriter, dl DeadLetters, maxBytes int, progress func(ShipResult), retry func(err error, wait time.Duration)) (ShipResult, error) {
	var res ShipResult
	seq := uint64(time.Now().UnixNano())
	wctx := withReadBack(ctx, w)
	var first, end pgtype.Timestamptz // of the batch being filled: its first and last rows' times
	// last is the time of the last row stored: a run that fails reading
	// the next page goes on from there (the rows at that time again).
	var last pgtype.Timestamptz
	// Refused rows wait in pending, up to byIDChunk of them or maxBytes
	// of values, before they are set aside: asking event_log which of
	// their events it holds reads its whole event_id column, once for many
	// batches rather than once for each batch with a refused row (a
	// column type that refuses a whole event type). A run that fails
	// resumes at the oldest batch with rows pending: they are in no table.
	var pending []sink.Rejected
	var pendingBytes int
	var pendingFrom pgtype.Timestamptz
	resumeAt := func(t pgtype.Timestamptz) pgtype.Timestamptz {
		if len(pending) > 0 {
			return pendingFrom
		}
		return t
	}
	setAside := func() error {
		if len(pending) == 0 {
			return nil
		}
		refused, err := notStored(ctx, w.Conn(), pending)
		if err == nil {
			err = dl.Put(ctx, refused)
		}
		if err != nil {
			res.Resume = pendingFrom
			return fmt.Errorf("set aside %d refused rows (%d rows shipped): %w", len(pending), res.Shipped, err)
		}
		res.DeadLetters += len(refused)
		res.Repaired += len(pending) - len(refused)
		pending, pendingBytes = nil, 0
		return nil
	}
	flush := func(b *sink.Batch) error {
		if len(b.Rows) == 0 {
			return nil
		}
		rejected, err := w.Write(wctx, b)
		for _, wait := range retryWaits {
			// A refused login, or TLS that cannot be set up, is not a
			// blip: retrying it only delays the exit (2, naming the
			// DSN's variable) by the waits.
			if err == nil || ctx.Err() != nil || sink.IsLoginError(err) || sink.IsTLSError(err) {
				break
			}
			if retry != nil {
				retry(err, wait)
			}
			select {
			case <-ctx.Done():
			case <-time.After(wait):
				rejected, err = writeAgain(wctx, w, b)
			}
		}
		if err != nil {
			res.Resume = resumeAt(first)
			return fmt.Errorf("store %d rows (%d shipped before): %w", len(b.Rows), res.Shipped, err)
		}
		if len(rejected) > 0 {
			if len(pending) == 0 {
				pendingFrom = first
			}
			pending = append(pending, rejected...)
			for _, r := range rejected {
				pendingBytes += r.Row.Size
			}
		}
		last = end
		res.Shipped += len(b.Rows) - len(rejected)
		if len(pending) >= byIDChunk || pendingBytes >= maxBytes {
			if err := setAside(); err != nil {
				return err
			}
		}
		if progress != nil {
			progress(res)
		}
		return nil
	}
	for {
		page, err := sc.Next(ctx)
		if err != nil {
			res.Resume = resumeAt(last)
			return res, err
		}
		if len(page) == 0 {
			return res, setAside()
		}
		b := &sink.Batch{}
		for _, r := range page {
			seq++
			size := 0
			for _, v := range r.Values {
				size += len(v.Data)
			}
			if b.Bytes > 0 && b.Bytes+size > maxBytes {
				if err := flush(b); err != nil {
					return res, err
				}
				b = &sink.Batch{}
			}
			if len(b.Rows) == 0 {
				first = r.Time
			}
			end = r.Time
			b.Rows = append(b.Rows, sink.Row{Relation: rel, Values: r.Values, Pos: sink.Position{Seq: seq}, CommitTime: r.Time.Time, Size: size})
			b.Bytes += size
			res.Read++
		}
		if err := flush(b); err != nil {
			return res, err
		}
	}
}

// writeAgain writes b after a Write of it failed: only the rows event_log
// lacks, when w can tell (unwrittenReader). The failed INSERT may have been
// stored whole with its reply lost, or in part; written again whole, its
// stored rows were raw duplicates.
func writeAgain(ctx context.Context, w Writer, b *sink.Batch) ([]sink.Rejected, error) {
	u, ok := w.(unwrittenReader)
	if !ok {
		return w.Write(ctx, b)
	}
	rows, err := u.Unwritten(ctx, b.Rows)
	if err != nil {
		return nil, fmt.Errorf("read which of %d rows a failed INSERT stored: %w", len(b.Rows), err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	return w.Write(ctx, b.Part(rows))
}

// notStored returns the refused rows whose event event_log does not hold:
// those without an event id (or one that is no uuid) among them.
func notStored(ctx context.Context, ch driver.Conn, rejected []sink.Rejected) ([]sink.Rejected, error) {
	var ids []string
	for _, r := range rejected {
		if id, ok := rowEventID(r.Row); ok {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return rejected, nil
	}
	absent, err := absentByID(ctx, ch, ids)
	if err != nil {
		return nil, err
	}
	missing := make(map[string]bool, len(absent))
	for _, id := range absent {
		missing[id] = true
	}
	var out []sink.Rejected
	for _, r := range rejected {
		if id, ok := rowEventID(r.Row); !ok || missing[id] {
			out = append(out, r)
		}
	}
	return out, nil
}

// rowEventID is the row's id, in event_log's form, when it is a uuid.
func rowEventID(r sink.Row) (string, bool) {
	i := r.Relation.Index("id")
	if i < 0 || r.Values[i].Kind != decoder.ValueText {
		return "", false
	}
	id, err := uuid.ParseBytes(r.Values[i].Data)
	if err != nil {
		return "", false
	}
	return id.String(), true
}
