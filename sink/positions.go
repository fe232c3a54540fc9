package sink

import (
	"cmp"
	"fmt"
	"iter"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"

	"github.com/eventcdc/cdc/decoder"
)

// Positions is a set of row positions, the rows the sink (or the dead
// letters) already hold past a slot's confirmed position. A replay checks
// every row against it, and after a restart in the middle of a transaction
// of millions of rows it holds millions of positions: it keeps runs of
// consecutive sequence numbers, in order, so such a transaction costs one
// run rather than a map entry per row, and memory stays bounded by the
// batch limits however large the transaction. With the positions it keeps
// the events stored there, which Match checks a replayed row against. Its
// zero value and nil are empty; a nil set may be read but not added to.
type Positions struct {
	runs []seqRun // ordered by (lsn, lo); disjoint, never adjacent
	n    int
	// exact is positions with their events, in order, in a set read from
	// storage (Reader): every position of the set, or with exactPart at
	// least the last exactLimit read, from exact[0] on. Match checks a row
	// there against its own stored event. nil in any other set.
	exact     []posEvent
	exactPart bool
}

// posEvent is a position and the EventHash of the event stored there (0:
// not known); two is set when two events are stored there.
type posEvent struct {
	pos   Position
	event uint64
	two   bool
}

// exactLimit is how many positions a read keeps each event of, at least
// (8 MiB; at most twice as many, 16 MiB): the last ones read, where a
// batch whose INSERT failed lies when its transaction began in earlier
// batches.
var exactLimit = 256 << 10

// seqRun is the positions (lsn, lo) … (lsn, hi).
type seqRun struct {
	lsn    pglogrepl.LSN
	lo, hi uint64
	// event is the EventHash of the event stored at lo, 0 when not known;
	// check what a replay found there (Match).
	event uint64
	check runCheck
}

// runCheck is what Match found of a run's first position.
type runCheck uint8

const (
	unchecked runCheck = iota // not yet, or the replayed row there was another event
	sameEvent                 // the replayed row there is the stored event: the run is this history's
	twoEvents                 // the store holds two events there: which is this history's cannot be told
)

// Len is the number of positions in the set.
func (p *Positions) Len() int {
	if p == nil {
		return 0
	}
	return p.n
}

// Runs is the number of runs the set is kept as: what its memory is
// proportional to.
func (p *Positions) Runs() int {
	if p == nil {
		return 0
	}
	return len(p.runs)
}

// find returns the index of the first run that is not before pos: the one
// holding pos, if any.
func (p *Positions) find(pos Position) int {
	i, _ := slices.BinarySearchFunc(p.runs, pos, func(r seqRun, pos Position) int {
		if c := cmp.Compare(r.lsn, pos.CommitLSN); c != 0 {
			return c
		}
		if r.hi < pos.Seq {
			return -1
		}
		if r.lo > pos.Seq {
			return 1
		}
		return 0
	})
	return i
}

// Has reports whether pos is in the set.
func (p *Positions) Has(pos Position) bool {
	if p == nil || len(p.runs) == 0 {
		return false
	}
	i := p.find(pos)
	return i < len(p.runs) && p.runs[i].lsn == pos.CommitLSN && p.runs[i].lo <= pos.Seq && pos.Seq <= p.runs[i].hi
}

// HasLSN reports whether any position in the set has commit LSN lsn.
func (p *Positions) HasLSN(lsn pglogrepl.LSN) bool {
	if p == nil || len(p.runs) == 0 {
		return false
	}
	i := p.find(Position{CommitLSN: lsn})
	return i < len(p.runs) && p.runs[i].lsn == lsn
}

// LSNs returns the set's distinct commit LSNs, in order: what HasLSN
// answers from, in 8 bytes each rather than a run's 40 and the events.
func (p *Positions) LSNs() []pglogrepl.LSN {
	if p == nil {
		return nil
	}
	var out []pglogrepl.LSN
	for _, r := range p.runs {
		if len(out) == 0 || out[len(out)-1] != r.lsn {
			out = append(out, r.lsn)
		}
	}
	return out
}

// MaxLSN is the greatest commit LSN in the set, 0 when it is empty.
func (p *Positions) MaxLSN() pglogrepl.LSN {
	if p == nil || len(p.runs) == 0 {
		return 0
	}
	return p.runs[len(p.runs)-1].lsn
}

// Add puts pos in the set, its event not known. Positions added in order
// (by commit LSN, then sequence number) cost constant time; others are
// inserted in place.
func (p *Positions) Add(pos Position) { p.AddEvent(pos, 0) }

// AddEvent puts pos in the set with the EventHash of the event stored
// there (0: not known). Of each run the set keeps the event of its first
// position only, which Match checks the replay against; a second event at
// a run's first position marks the run as unusable.
func (p *Positions) AddEvent(pos Position, event uint64) {
	p.exact, p.exactPart = nil, false // kept only by a Reader
	p.addEvent(pos, event)
}

// follows reports whether seq comes right after hi, without the overflow
// of hi+1 at the largest sequence number (which cdc never writes, but a
// table carried over or a hand-edited dead letter may hold).
func follows(hi, seq uint64) bool { return seq > hi && seq-hi == 1 }

func (p *Positions) addEvent(pos Position, event uint64) {
	if n := len(p.runs); n > 0 {
		last := &p.runs[n-1]
		switch {
		case last.lsn == pos.CommitLSN && follows(last.hi, pos.Seq):
			last.hi++
			p.n++
			return
		case last.lsn < pos.CommitLSN || last.lsn == pos.CommitLSN && pos.Seq > last.hi && !follows(last.hi, pos.Seq):
			p.runs = append(p.runs, seqRun{lsn: pos.CommitLSN, lo: pos.Seq, hi: pos.Seq, event: event})
			p.n++
			return
		}
	} else {
		p.runs = append(p.runs, seqRun{lsn: pos.CommitLSN, lo: pos.Seq, hi: pos.Seq, event: event})
		p.n++
		return
	}
	i := p.find(pos)
	if i < len(p.runs) && p.runs[i].lsn == pos.CommitLSN && p.runs[i].lo <= pos.Seq && pos.Seq <= p.runs[i].hi {
		if r := &p.runs[i]; r.lo == pos.Seq && event != 0 {
			r.setEvent(event)
		}
		return // already there
	}
	// pos lies after run i-1 and before run i: join either or both, or
	// stand alone between them.
	joinPrev := i > 0 && p.runs[i-1].lsn == pos.CommitLSN && follows(p.runs[i-1].hi, pos.Seq)
	joinNext := i < len(p.runs) && p.runs[i].lsn == pos.CommitLSN && follows(pos.Seq, p.runs[i].lo)
	switch {
	case joinPrev && joinNext:
		// Run i's first position is no longer one: what was known of it
		// is lost, unless it was that two events were there.
		p.runs[i-1].hi = p.runs[i].hi
		if p.runs[i].check == twoEvents {
			p.runs[i-1].check = twoEvents
		}
		p.runs = slices.Delete(p.runs, i, i+1)
	case joinPrev:
		p.runs[i-1].hi = pos.Seq
	case joinNext:
		r := &p.runs[i]
		r.lo, r.event = pos.Seq, event
	default:
		p.runs = slices.Insert(p.runs, i, seqRun{lsn: pos.CommitLSN, lo: pos.Seq, hi: pos.Seq, event: event})
	}
	p.n++
}

// setEvent records a further event read at r's first position.
func (r *seqRun) setEvent(event uint64) {
	switch {
	case r.event == 0:
		r.event = event
	case r.event != event:
		r.check = twoEvents
	}
}

// Match reports whether the replayed row at pos, whose event has EventHash
// event, is the row stored there: pos is in the set and its run belongs to
// this WAL history. Positions are offsets in one server's WAL, and a table
// may hold rows of another history (a database moved to a new cluster, a
// failover) at a new event's position: skipping that event as stored would
// lose it. A row among the positions read with their events (exact: all
// of a small read, the last exactLimit of a larger one) is checked
// against its own. Before those, the set has the event of each run's
// first position: a replay meets it before the rest of the run (a
// transaction is replayed from its first row), and the event there tells
// whose the run is; until then, and for a run holding two events at any
// position, its positions do not match. An event not known (a dead letter
// without an event id) matches by position alone.
func (p *Positions) Match(pos Position, event uint64) bool {
	if p == nil || len(p.runs) == 0 {
		return false
	}
	if len(p.exact) > 0 && (!p.exactPart || comparePos(pos, p.exact[0].pos) >= 0) {
		i, found := slices.BinarySearchFunc(p.exact, pos, func(e posEvent, pos Position) int {
			return comparePos(e.pos, pos)
		})
		if !found {
			return false
		}
		e := p.exact[i]
		return !e.two && (e.event == 0 || e.event == event)
	}
	i := p.find(pos)
	if i == len(p.runs) || p.runs[i].lsn != pos.CommitLSN || pos.Seq < p.runs[i].lo || pos.Seq > p.runs[i].hi {
		return false
	}
	r := &p.runs[i]
	switch {
	case r.check == twoEvents:
		return false
	case r.event == 0:
		return true
	case pos.Seq == r.lo:
		r.check = unchecked
		if event == r.event {
			r.check = sameEvent
		}
	}
	return r.check == sameEvent
}

// EventHash is the identity of an event (its UUID, 16 bytes) that a set of
// positions keeps: 64 bits of FNV-1a, never 0.
func EventHash(id [16]byte) uint64 {
	h := uint64(14695981039346656037)
	for _, b := range id {
		h ^= uint64(b)
		h *= 1099511628211
	}
	return max(h, 1)
}

// Event returns the EventHash of row's event id (the outbox's id column),
// 0 when it has none or it is not a UUID.
func (r *Row) Event() uint64 {
	if id, ok := r.eventID(); ok {
		return EventHash(id)
	}
	return 0
}

// eventID is row's event id (the outbox's id column), if it has one that
// is a UUID.
func (r *Row) eventID() (uuid.UUID, bool) {
	if r.Relation == nil {
		return uuid.UUID{}, false
	}
	for i, col := range r.Relation.Columns {
		if renamed[col.Name] != colEventID || i >= len(r.Values) || r.Values[i].Kind != decoder.ValueText {
			continue
		}
		id, err := uuid.ParseBytes(r.Values[i].Data)
		return id, err == nil
	}
	return uuid.UUID{}, false
}

// FirstRunOf returns the LSN of the run past after that begins at
// ordinal 1 with event: where a transaction whose first row holds event
// was stored, placed by its commit. An unknown event (0) is never found,
// nor one that begins two such runs (an event id an application used
// again), nor a run holding two events at a position.
func (p *Positions) FirstRunOf(after pglogrepl.LSN, event uint64) (pglogrepl.LSN, bool) {
	if p == nil || event == 0 {
		return 0, false
	}
	var lsn pglogrepl.LSN
	found := false
	for _, r := range p.runs {
		if r.lsn > after && r.lo == 1 && r.event == event {
			if found || r.check == twoEvents {
				return 0, false
			}
			lsn, found = r.lsn, true
		}
	}
	return lsn, found
}

// At returns a new set of the positions placed at lsn, with their events,
// for a replayed row to match only by its own event: a position whose
// event is not known (a dead letter without an event id) matches none
// there, unlike in the set it comes from.
func (p *Positions) At(lsn pglogrepl.LSN) *Positions {
	out := &Positions{}
	if p == nil {
		return out
	}
	i := p.find(Position{CommitLSN: lsn})
	for ; i < len(p.runs) && p.runs[i].lsn == lsn; i++ {
		r := p.runs[i]
		switch {
		case r.event == 0:
			r.check = twoEvents // matches nothing
		case r.check != twoEvents:
			r.check = unchecked
		}
		out.runs = append(out.runs, r)
		out.n += int(r.hi - r.lo + 1)
	}
	for _, e := range p.exact {
		if e.pos.CommitLSN == lsn {
			if e.event == 0 {
				e.two = true // matches nothing
			}
			out.exact = append(out.exact, e)
		}
	}
	// Of a partly kept exact list, the positions at lsn before its first
	// are not there: then none is, and Match falls back on the runs.
	if p.exactPart && len(out.exact) > 0 && comparePos(p.exact[0].pos, Position{CommitLSN: lsn, Seq: out.runs[0].lo}) > 0 {
		out.exact = nil
	}
	return out
}

// TrimEvents keeps the events of at most the last n positions the set
// keeps them of (exact), in an array of their own, and lets the rest go:
// Match checks a row before those by its run's first event, as it does
// in a set whose read kept only its last exactLimit. A set kept for long
// beside others of its kind, one per transaction, costs then about its
// runs rather than up to 16 MiB.
func (p *Positions) TrimEvents(n int) {
	if p == nil || len(p.exact) <= n {
		return
	}
	if n <= 0 {
		p.exact, p.exactPart = nil, false
		return
	}
	p.exact, p.exactPart = slices.Clone(p.exact[len(p.exact)-n:]), true
}

// All yields the set's positions in order.
func (p *Positions) All() iter.Seq[Position] {
	return func(yield func(Position) bool) {
		if p == nil {
			return
		}
		for _, r := range p.runs {
			for seq := r.lo; ; seq++ {
				if !yield(Position{CommitLSN: r.lsn, Seq: seq}) {
					return
				}
				if seq == r.hi {
					break
				}
			}
		}
	}
}

// AddAll puts every position of o in the set, merging the two run lists
// in one pass: the dead letters merged into a replay's skip set may fall
// between many of its runs, and inserting them one by one would cost
// time in proportion to the runs for each.
func (p *Positions) AddAll(o *Positions) {
	if o.Len() == 0 {
		return
	}
	// Two sets with every event (or empty) merge theirs; else there are
	// none.
	switch {
	case p.n == 0:
		p.exact, p.exactPart = slices.Clone(o.exact), o.exactPart
	case p.exact != nil && o.exact != nil && !p.exactPart && !o.exactPart:
		p.exact = mergeExact(p.exact, o.exact)
	default:
		p.exact, p.exactPart = nil, false
	}
	merged := make([]seqRun, 0, len(p.runs)+len(o.runs))
	n := 0
	push := func(r seqRun) {
		if k := len(merged) - 1; k >= 0 && merged[k].lsn == r.lsn && (r.lo <= merged[k].hi || follows(merged[k].hi, r.lo)) {
			m := &merged[k]
			switch {
			case r.lo == m.lo && r.event != 0:
				m.setEvent(r.event)
			case r.lo <= m.hi && r.event != 0:
				// Both hold r.lo, and of m only its first event is
				// known: the two cannot be told one history's.
				m.check = twoEvents
			}
			if r.check == twoEvents {
				m.check = twoEvents
			}
			if r.hi > m.hi {
				n += int(r.hi - m.hi)
				m.hi = r.hi
			}
			return
		}
		merged = append(merged, r)
		n += int(r.hi-r.lo) + 1
	}
	i, j := 0, 0
	for i < len(p.runs) || j < len(o.runs) {
		if j == len(o.runs) || i < len(p.runs) && before(p.runs[i], o.runs[j]) {
			push(p.runs[i])
			i++
		} else {
			push(o.runs[j])
			j++
		}
	}
	p.runs, p.n = merged, n
}

// mergeExact merges two ordered lists of positions with their events; a
// position in both holds two events unless they are the same one, or one
// is not known.
func mergeExact(a, b []posEvent) []posEvent {
	out := make([]posEvent, 0, len(a)+len(b))
	for len(a) > 0 || len(b) > 0 {
		var c int
		switch {
		case len(a) == 0:
			c = 1
		case len(b) == 0:
			c = -1
		default:
			c = comparePos(a[0].pos, b[0].pos)
		}
		switch {
		case c < 0:
			out, a = append(out, a[0]), a[1:]
		case c > 0:
			out, b = append(out, b[0]), b[1:]
		default:
			out = append(out, a[0].with(b[0]))
			a, b = a[1:], b[1:]
		}
	}
	return out
}

// comparePos orders positions by commit LSN, then sequence number.
func comparePos(a, b Position) int {
	return cmp.Or(cmp.Compare(a.CommitLSN, b.CommitLSN), cmp.Compare(a.Seq, b.Seq))
}

// with is e and o, the same position, as one.
func (e posEvent) with(o posEvent) posEvent {
	switch {
	case o.two || e.event != 0 && o.event != 0 && e.event != o.event:
		e.two = true
	case e.event == 0:
		e.event = o.event
	}
	return e
}

// before orders runs by (lsn, lo).
func before(a, b seqRun) bool {
	return a.lsn < b.lsn || a.lsn == b.lsn && a.lo < b.lo
}

// A set read from storage is bounded. The positions past a slot's
// confirmed one are normally the rows stored but not yet acknowledged:
// seconds of traffic, a checkpoint's worth after PostgreSQL crashed, or
// the stored part of one large transaction (one run however many rows).
// Far more means the table holds rows it was not streamed from this slot
// — another WAL history's, after a move to a new cluster — and the set
// could be the whole table: more than cdc's memory. Past these bounds a
// reader gives up instead, and the caller skips nothing up to
// TooManyPositions.Max (a replay may then store rows twice, which FINAL
// shows once; never a loss). 1 Mi runs hold 40 MiB. The rows are read in
// pages of readPageRows, so that the store's sort is bounded too, and at
// most maxReadRows in all: a transaction of more rows than that, stored
// in part, is stored again whole.
var maxReadRows, maxReadRuns, readPageRows = 64 << 20, 1 << 20, 2 << 20

// ReadLimit is the LIMIT a query reading positions in order carries: one
// row past the bound, so that passing it shows.
func ReadLimit() int { return maxReadRows + 1 }

// TooManyPositions is the error of a read of stored positions that found
// more than a set may hold. Max is the greatest commit LSN in the range
// read.
type TooManyPositions struct {
	Max pglogrepl.LSN
}

func (e *TooManyPositions) Error() string {
	return fmt.Sprintf("more stored positions than %d (or %d runs of consecutive ones) past the slot's position, up to commit LSN %s", maxReadRows, maxReadRuns, e.Max)
}

// Reader collects positions read from storage in order into a set, within
// the bounds above.
type Reader struct {
	set  Positions
	rows int
	last posEvent // the position added last, with an event stored there
}

// Add puts pos in the set with the EventHash of the event stored there (0:
// not known), and reports false once the set has passed its bounds: the
// read should stop and find the range's greatest LSN for a
// TooManyPositions.
func (r *Reader) Add(pos Position, event uint64) bool {
	r.rows++
	return r.Again(pos, event)
}

// Again is Add for a row read before, not counted again: a read in pages
// reads the last position of a page again at the start of the next.
func (r *Reader) Again(pos Position, event uint64) bool {
	r.set.addEvent(pos, event)
	// Two events at one position anywhere in a run make it unusable: the
	// set keeps only the event at a run's first position, and a run
	// joining two histories' positions could match there and skip the
	// other's.
	known := event
	if r.rows > 1 && r.last.pos == pos {
		if event != 0 && r.last.event != 0 && event != r.last.event {
			r.set.runs[len(r.set.runs)-1].check = twoEvents
		}
		known = max(event, r.last.event)
	}
	r.last = posEvent{pos: pos, event: known}
	e := &r.set.exact
	if n := len(*e); n > 0 && (*e)[n-1].pos == pos {
		(*e)[n-1] = (*e)[n-1].with(posEvent{pos: pos, event: event})
	} else {
		*e = append(*e, posEvent{pos: pos, event: event})
	}
	// Past twice the limit, the last exactLimit move to the front: the
	// slice keeps its array (no garbage per position dropped).
	if len(*e) >= 2*exactLimit {
		*e = append((*e)[:0], (*e)[len(*e)-exactLimit:]...)
		r.set.exactPart = true
	}
	return r.rows <= maxReadRows && len(r.set.runs) <= maxReadRuns
}

// Set is the positions added.
func (r *Reader) Set() *Positions { return &r.set }
