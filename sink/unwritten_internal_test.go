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
		{"one second", []int64{5, 5}, 64, "toUInt32(event_date_time) = 5 AND "},
		{"adjacent seconds are one range", []int64{5, 6, 7}, 64, "toUInt32(event_date_time) >= 5 AND toUInt32(event_date_time) <= 7 AND "},
		{"a range each", []int64{5, 7, 100}, 64, "(toUInt32(event_date_time) = 5 OR toUInt32(event_date_time) = 7 OR toUInt32(event_date_time) = 100) AND "},
		{"the widest gap cut", []int64{5, 7, 100}, 2, "(toUInt32(event_date_time) >= 5 AND toUInt32(event_date_time) <= 7 OR toUInt32(event_date_time) = 100) AND "},
		{"one range when n is 1", []int64{5, 7, 100}, 1, "toUInt32(event_date_time) >= 5 AND toUInt32(event_date_time) <= 100 AND "},
		{"equal gaps cut first", []int64{0, 10, 20, 30}, 2, "(toUInt32(event_date_time) = 0 OR toUInt32(event_date_time) >= 10 AND toUInt32(event_date_time) <= 30) AND "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := withinSeconds(tc.secs, tc.n); got != tc.want {
				t.Fatalf("withinSeconds(%v, %d) =\n%q\nwant\n%q", tc.secs, tc.n, got, tc.want)
			}
		})
	}
}
