package replication

import (
	"testing"

	"github.com/jackc/pglogrepl"
)

// A stored position past the server's WAL end marks another WAL history,
// and rows are not skipped by position until the slot has confirmed past
// it, even once the server's WAL has passed it: a failover to a standby
// that lagged reaches those positions again, and a replay from below them
// would meet the old rows. Positions too many to hold as a set are not
// skipped by either, wherever they lie.
func TestNoSkipRule(t *testing.T) {
	for _, tc := range []struct {
		name                          string
		upTo, confirmed, last, walEnd pglogrepl.LSN
		tooMany                       bool
		wantUpTo                      pglogrepl.LSN
		want                          bool
	}{
		{"nothing stored", 0, 100, 0, 200, false, 0, false},
		{"stored within the WAL: this history", 0, 100, 150, 200, false, 0, false},
		{"stored up to the WAL end exactly", 0, 100, 200, 200, false, 0, false},
		{"stored past the WAL end", 0, 100, 300, 200, false, 300, true},
		{"the WAL has passed it, the slot not yet", 300, 250, 300, 400, false, 300, true},
		{"a later read sees more of it", 300, 250, 500, 400, false, 500, true},
		{"the slot has passed it", 300, 301, 350, 400, false, 0, false},
		{"the slot at it", 300, 300, 350, 400, false, 300, true},
		{"too many, within the WAL", 0, 100, 150, 200, true, 150, true},
		{"too many, past the WAL end", 0, 100, 300, 200, true, 300, true},
		{"too many again, fewer than before", 300, 250, 280, 400, true, 300, true},
		{"too many once, the slot past them now", 150, 160, 170, 200, false, 0, false},
	} {
		upTo, noSkip := noSkipRule(tc.upTo, tc.confirmed, tc.last, tc.walEnd, tc.tooMany)
		if upTo != tc.wantUpTo || noSkip != tc.want {
			t.Errorf("%s: noSkipRule(%d, %d, %d, %d, %v) = %d, %v; want %d, %v", tc.name, tc.upTo, tc.confirmed, tc.last, tc.walEnd, tc.tooMany, upTo, noSkip, tc.wantUpTo, tc.want)
		}
	}
}
