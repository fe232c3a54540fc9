package replication

import (
	"net"
	"testing"
	"time"
)

// scriptedConn returns reads of the scripted sizes.
type scriptedConn struct {
	net.Conn
	sizes []int
}

func (c *scriptedConn) Read(p []byte) (int, error) {
	n := min(c.sizes[0], len(p))
	c.sizes = c.sizes[1:]
	return n, nil
}

func TestPacedConn(t *testing.T) {
	tests := []struct {
		name  string
		pause time.Duration
		reads []int // bytes each read returns, into a 100-byte buffer
		want  []time.Duration
	}{
		{"not streaming yet: never waits", 0, []int{10, 10, 10}, nil},
		{"waits only after a read that emptied the socket", 5 * time.Millisecond, []int{10, 100, 100, 40, 100}, []time.Duration{5 * time.Millisecond, 5 * time.Millisecond}},
		{"a backlog fills every read: no waits", 5 * time.Millisecond, []int{100, 100, 100}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var slept []time.Duration
			c := &pacedConn{Conn: &scriptedConn{sizes: tt.reads}, sleep: func(d time.Duration) { slept = append(slept, d) }}
			c.pause.Store(int64(tt.pause))
			buf := make([]byte, 100)
			for range tt.reads {
				if _, err := c.Read(buf); err != nil {
					t.Fatal(err)
				}
			}
			if len(slept) != len(tt.want) {
				t.Fatalf("slept %v, want %v", slept, tt.want)
			}
			for i := range slept {
				if slept[i] != tt.want[i] {
					t.Fatalf("slept %v, want %v", slept, tt.want)
				}
			}
		})
	}
	if got := readPause(time.Second); got != 5*time.Millisecond {
		t.Errorf("readPause(1s) = %s, want 5ms", got)
	}
	if got := readPause(20 * time.Millisecond); got != time.Millisecond {
		t.Errorf("readPause(20ms) = %s, want 1ms", got)
	}
}
