package sink

import (
	"cmp"
	"fmt"
	"iter"
	"slices"

	"github.com/jackc/pglogrepl"
)

// Positions is a set of row positions, the rows the sink (or the dead
// letters) already hold past a slot's confirmed position. A replay checks
// every row against it, and after a restart in the middle of a transaction
// of millions of rows it holds millions of positions: it keeps runs of
// consecutive sequence numbers, in order, so such a transaction costs one
// run rather than a map entry per row, and memory stays bounded by the
// batch limits however large the transaction. Its zero value and nil are
// empty; a nil set may be read but not added to.
type Positions struct {
	runs []seqRun // ordered by (lsn, lo); disjoint, never adjacent
	n    int
}

// seqRun is the positions (lsn, lo) … (lsn, hi).
type seqRun struct {
	lsn    pglogrepl.LSN
	lo, hi uint64
}

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

// MaxLSN is the greatest commit LSN in the set, 0 when it is empty.
func (p *Positions) MaxLSN() pglogrepl.LSN {
	if p == nil || len(p.runs) == 0 {
		return 0
	}
	return p.runs[len(p.runs)-1].lsn
}

// Add puts pos in the set. Positions added in order (by commit LSN, then
// sequence number) cost constant time; others are inserted in place.
func (p *Positions) Add(pos Position) {
	if n := len(p.runs); n > 0 {
		last := &p.runs[n-1]
		switch {
		case last.lsn == pos.CommitLSN && last.hi+1 == pos.Seq:
			last.hi++
			p.n++
			return
		case last.lsn < pos.CommitLSN || last.lsn == pos.CommitLSN && last.hi+1 < pos.Seq:
			p.runs = append(p.runs, seqRun{lsn: pos.CommitLSN, lo: pos.Seq, hi: pos.Seq})
			p.n++
			return
		}
	} else {
		p.runs = append(p.runs, seqRun{lsn: pos.CommitLSN, lo: pos.Seq, hi: pos.Seq})
		p.n++
		return
	}
	i := p.find(pos)
	if i < len(p.runs) && p.runs[i].lsn == pos.CommitLSN && p.runs[i].lo <= pos.Seq && pos.Seq <= p.runs[i].hi {
		return // already there
	}
	// pos lies after run i-1 and before run i: join either or both, or
	// stand alone between them.
	joinPrev := i > 0 && p.runs[i-1].lsn == pos.CommitLSN && p.runs[i-1].hi+1 == pos.Seq
	joinNext := i < len(p.runs) && p.runs[i].lsn == pos.CommitLSN && pos.Seq+1 == p.runs[i].lo
	switch {
	case joinPrev && joinNext:
		p.runs[i-1].hi = p.runs[i].hi
		p.runs = slices.Delete(p.runs, i, i+1)
	case joinPrev:
		p.runs[i-1].hi = pos.Seq
	case joinNext:
		p.runs[i].lo = pos.Seq
	default:
		p.runs = slices.Insert(p.runs, i, seqRun{lsn: pos.CommitLSN, lo: pos.Seq, hi: pos.Seq})
	}
	p.n++
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
	merged := make([]seqRun, 0, len(p.runs)+len(o.runs))
	n := 0
	push := func(r seqRun) {
		if k := len(merged) - 1; k >= 0 && merged[k].lsn == r.lsn && r.lo <= merged[k].hi+1 {
			if r.hi > merged[k].hi {
				n += int(r.hi - merged[k].hi)
				merged[k].hi = r.hi
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
// shows once; never a loss). 1 Mi runs hold 24 MiB. The rows are read in
// pages of readPageRows, so that the store's sort is bounded too, and at
// most maxReadRows in all: a transaction of more rows than that, stored
// in part, is stored again whole.
var maxReadRows, maxReadRuns, readPageRows = 64 << 20, 1 << 20, 2 << 20

// ReadLimit is the LIMIT a query reading positions in order carries: one
// row past the bound, so that passing it shows.
func ReadLimit() int { return maxReadRows + 1 }

// ReadPage is the LIMIT of one page of a read in pages.
func ReadPage() int { return readPageRows }

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
}

// Add puts pos in the set, and reports false once the set has passed its
// bounds: the read should stop and find the range's greatest LSN for a
// TooManyPositions.
func (r *Reader) Add(pos Position) bool {
	r.rows++
	r.set.Add(pos)
	return r.rows <= maxReadRows && len(r.set.runs) <= maxReadRuns
}

// Set is the positions added.
func (r *Reader) Set() *Positions { return &r.set }
