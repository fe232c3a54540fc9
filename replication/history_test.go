package replication

import (
	"testing"

	"github.com/jackc/pglogrepl"
)

// A stored position past the server's WAL end marks another WAL history,
// and rows are not skipped by position until the slot has confirmed past
// it, even once the server's WAL has passed it: a failover to a standby
// that lagged reaches those positions again, and a replay from below them
// would meet the old rows.
func TestForeignHistory(t *testing.T) {
	for _, tc := range []struct {
		name                          string
		upTo, confirmed, last, walEnd pglogrepl.LSN
		wantUpTo                      pglogrepl.LSN
		want                          bool
	}{
		{"nothing stored", 0, 100, 0, 200, 0, false},
		{"stored within the WAL: this history", 0, 100, 150, 200, 0, false},
		{"stored up to the WAL end exactly", 0, 100, 200, 200, 0, false},
		{"stored past the WAL end", 0, 100, 300, 200, 300, true},
		{"the WAL has passed it, the slot not yet", 300, 250, 300, 400, 300, true},
		{"a later read sees more of it", 300, 250, 500, 400, 500, true},
		{"the slot has passed it", 300, 301, 350, 400, 0, false},
		{"the slot at it", 300, 300, 350, 400, 300, true},
	} {
		upTo, foreign := foreignHistory(tc.upTo, tc.confirmed, tc.last, tc.walEnd)
		if upTo != tc.wantUpTo || foreign != tc.want {
			t.Errorf("%s: foreignHistory(%d, %d, %d, %d) = %d, %v; want %d, %v", tc.name, tc.upTo, tc.confirmed, tc.last, tc.walEnd, upTo, foreign, tc.wantUpTo, tc.want)
		}
	}
}
