package sink

import "testing"

// withinSeconds cuts sorted seconds at their widest gaps into at most n
// ranges, and names a range of one second by equality.
func TestWithinSeconds(t *testing.T) {
	for _, tc := range []struct {
		name string
		secs []int64
		n    int
		want string
	}{
		{"one second", []int64{5, 5}, 64, "event_date_time = toDateTime(5) AND "},
		{"adjacent seconds are one range", []int64{5, 6, 7}, 64, "event_date_time >= toDateTime(5) AND event_date_time <= toDateTime(7) AND "},
		{"a range each", []int64{5, 7, 100}, 64, "(event_date_time = toDateTime(5) OR event_date_time = toDateTime(7) OR event_date_time = toDateTime(100)) AND "},
		{"the widest gap cut", []int64{5, 7, 100}, 2, "(event_date_time >= toDateTime(5) AND event_date_time <= toDateTime(7) OR event_date_time = toDateTime(100)) AND "},
		{"one range when n is 1", []int64{5, 7, 100}, 1, "event_date_time >= toDateTime(5) AND event_date_time <= toDateTime(100) AND "},
		{"equal gaps cut first", []int64{0, 10, 20, 30}, 2, "(event_date_time = toDateTime(0) OR event_date_time >= toDateTime(10) AND event_date_time <= toDateTime(30)) AND "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := withinSeconds(tc.secs, tc.n); got != tc.want {
				t.Fatalf("withinSeconds(%v, %d) =\n%q\nwant\n%q", tc.secs, tc.n, got, tc.want)
			}
		})
	}
}
