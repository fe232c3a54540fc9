package replication

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

// A streamed transaction is forgotten once a status acknowledged its
// commit's end an hour ago or more, by the flush position of then, not of
// now; statuses are sampled once a minute.
func TestForgetAcknowledged(t *testing.T) {
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	s := &stream{r: &Replicator{partial: map[uint32]pglogrepl.LSN{
		1: 0x100, // acknowledged at once
		2: 0x300, // acknowledged 30 minutes in
		3: 0,     // commit not received
	}}}
	for _, step := range []struct {
		after time.Duration
		flush pglogrepl.LSN
		left  string
	}{
		{0, 0x200, "map[1:0/100 2:0/300 3:0/0]"},
		{10 * time.Second, 0x200, "map[1:0/100 2:0/300 3:0/0]"}, // not sampled: within the minute
		{30 * time.Minute, 0x400, "map[1:0/100 2:0/300 3:0/0]"},
		{59 * time.Minute, 0x400, "map[1:0/100 2:0/300 3:0/0]"},
		{60 * time.Minute, 0x400, "map[2:0/300 3:0/0]"}, // the first sample, 0/200, is an hour old
		{89 * time.Minute, 0x400, "map[2:0/300 3:0/0]"}, // 0/400 was sent at 30 min: not an hour yet
		{90 * time.Minute, 0x400, "map[3:0/0]"},         // now it is
		{200 * time.Minute, 0xFFFF, "map[3:0/0]"},       // an end never received is kept
	} {
		s.forgetAcknowledged(start.Add(step.after), step.flush)
		if got := fmt.Sprint(s.r.partial); got != step.left {
			t.Fatalf("after %s: partial %s, want %s", step.after, got, step.left)
		}
	}
	if len(s.acked) > 61 {
		t.Errorf("%d samples kept, want an hour's at one a minute", len(s.acked))
	}
}
