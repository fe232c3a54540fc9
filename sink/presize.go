package sink

import (
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/column"

	"github.com/eventcdc/cdc/decoder"
)

// presizeFrom is what presize appends and takes back. Its contents never
// reach a block, and it is never written, so its pages stay the kernel's
// shared zero page: it costs no resident memory.
var presizeFrom [blockBytes]byte

// presize gives each String column of a new INSERT the capacity of the
// INSERT's first block before any row is appended. clickhouse-go builds
// every INSERT's columns from empty and grows them by doubling as rows are
// appended: for a block of small events that is a dozen allocations and
// copies per column, and the bulk of what a drain allocates. Blocks after
// the first reuse the capacity (batch.Flush keeps it), so only the first
// block needs this. A column is grown by appending one value of the block's
// size and resetting it, the only way clickhouse-go's column offers; the
// capacity stays, as ch-go's ColStr.Reset promises.
//
// The first block is the rows write would send before its first Flush.
// A column whose share is larger than presizeFrom (a block of a few large
// events) is left to grow: it grows in few steps.
func (p *plan) presize(cols []column.Interface, rows []Row, maxBytes, maxRows int) error {
	// need is the first block's bytes per String column; -1 for the others.
	need := make([]int, len(p.targets))
	some := false
	for i := range p.targets {
		need[i] = -1
		if i < len(cols) && cols[i].Type() == "String" {
			need[i], some = 0, true
		}
	}
	if !some {
		return nil
	}
	size, n := 0, 0
	for _, r := range rows {
		if n > 0 && size+r.Size > maxBytes {
			break // the row starts the next block (write)
		}
		for i, s := range p.sources[r.Relation] {
			if need[i] >= 0 && s >= 0 && s < len(r.Values) && r.Values[s].Kind == decoder.ValueText {
				need[i] += len(r.Values[s].Data)
			}
		}
		size += r.Size
		n++
		if size >= maxBytes || n >= maxRows {
			break
		}
	}
	for i, want := range need {
		if want <= 0 || want > len(presizeFrom) {
			continue
		}
		if err := cols[i].AppendRow(presizeFrom[:want]); err != nil {
			return fmt.Errorf("presize column %s: %w", p.targets[i], err)
		}
		cols[i].Reset()
		if rows := cols[i].Rows(); rows != 0 {
			return fmt.Errorf("presize column %s: %d rows left after reset", p.targets[i], rows)
		}
	}
	return nil
}
