package main

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMedianPair(t *testing.T) {
	pair := func(ceil, drain float64) drainPair {
		return drainPair{ceil: time.Duration(ceil * float64(time.Second)), drain: drained{dur: time.Duration(drain * float64(time.Second))}}
	}
	for _, tc := range []struct {
		name string
		ps   []drainPair
		want int
	}{
		{"one", []drainPair{pair(2, 4)}, 0},
		// Ratios 0.5, 0.8, 0.6: the median is the third pair's, though
		// neither its ceiling nor its drain is the median of its kind.
		{"odd", []drainPair{pair(2, 4), pair(2.4, 3), pair(1.8, 3)}, 2},
		// Ratios 0.5, 0.9: the lower one of an even count.
		{"even", []drainPair{pair(1, 2), pair(2.7, 3)}, 0},
		{"four", []drainPair{pair(2.7, 3), pair(1, 2), pair(2.4, 3), pair(1.2, 2)}, 3},
		// Equal ratios keep their order.
		{"ties", []drainPair{pair(1, 2), pair(2, 4), pair(3, 6)}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := medianPair(tc.ps); got != tc.want {
				t.Fatalf("medianPair = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestSmallestFull(t *testing.T) {
	for _, tc := range []struct {
		batches []int
		want    int
	}{
		{nil, 0},
		{[]int{5024}, 5024},
		{[]int{18436, 18000, 5024}, 18000},
		{[]int{9000, 18436, 18436}, 9000},
	} {
		if got := smallestFull(tc.batches); got != tc.want {
			t.Errorf("smallestFull(%v) = %d, want %d", tc.batches, got, tc.want)
		}
	}
}

func TestJoinRatios(t *testing.T) {
	ps := []drainPair{
		{ceil: 2220 * time.Millisecond, drain: drained{dur: 3230 * time.Millisecond}},
		{ceil: 1600 * time.Millisecond, drain: drained{dur: 2800 * time.Millisecond}},
	}
	if got, want := joinRatios(ps), "0.69 / 0.57"; got != want {
		t.Fatalf("joinRatios = %q, want %q", got, want)
	}
	if got, want := joinDurs(ps, func(p drainPair) time.Duration { return p.ceil }), "2.22 / 1.60"; got != want {
		t.Fatalf("joinDurs = %q, want %q", got, want)
	}
}

// The drain's last, small batch may be stored before the full one ahead of
// it; the log is read back in WAL order so that the INSERT-size verdict
// excepts the batch holding the backlog's end.
func TestReadBatchLogInWALOrder(t *testing.T) {
	log := `{"level":"info","msg":"starting"}
{"level":"debug","msg":"batch cut","rows":18436,"why":"size"}
{"level":"debug","msg":"batch stored","rows":18436,"last":"0/192DB88#18436","duration":0.2}
{"level":"debug","msg":"batch stored","rows":5024,"last":"0/192DB88#300000","duration":0.05}
{"level":"debug","msg":"batch stored","rows":18436,"last":"0/192DB88#294976","duration":0.1}
{"level":"debug","msg":"batch stored","rows":7,"last":"0/A000000#7","duration":0.01}
`
	lines, err := readBatchLog(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	var rows []int
	for _, l := range lines {
		rows = append(rows, l.Rows)
	}
	if want := []int{18436, 18436, 5024, 7}; !slices.Equal(rows, want) {
		t.Fatalf("rows in WAL order %v, want %v", rows, want)
	}
	if got := smallestFull(rows[:3]); got != 18436 {
		t.Fatalf("smallestFull = %d, want 18436", got)
	}
	if _, err := readBatchLog(strings.NewReader(`{"msg":"batch stored","rows":1,"last":"nope"}`)); err == nil {
		t.Fatal("a position that is not LSN#seq was accepted")
	}
}

// statField counts fields after the command name, which may hold spaces:
// field 4 of this process is its parent's pid.
func TestStatField_ReadsTheParentPID(t *testing.T) {
	ppid, err := statField(os.Getpid(), 4)
	if err != nil || ppid != int64(os.Getppid()) {
		t.Fatalf("statField(self, 4) = %d, %v; want the parent pid %d", ppid, err, os.Getppid())
	}
}
