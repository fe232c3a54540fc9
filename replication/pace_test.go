package replication

import (
	"errors"
	"net"
	"slices"
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
		name      string
		pause     time.Duration
		reads     []int // bytes each read returns, into a 100-byte buffer
		want      []time.Duration
		lowWater  bool  // the socket has a low-water mark to set
		failQuiet error // raising the mark fails
		wantMarks []int // low-water marks set, in order
	}{
		{name: "not streaming yet: never waits", reads: []int{10, 10, 10}, lowWater: true},
		{name: "waits only after a read that emptied the socket", pause: 5 * time.Millisecond, reads: []int{10, 100, 100, 40, 100},
			want: []time.Duration{5 * time.Millisecond, 5 * time.Millisecond}},
		{name: "a backlog fills every read: no waits", pause: 5 * time.Millisecond, reads: []int{100, 100, 100}, lowWater: true},
		{name: "the mark is raised for each pause and put back before the read", pause: 5 * time.Millisecond, reads: []int{10, 100, 40, 100},
			want: []time.Duration{5 * time.Millisecond, 5 * time.Millisecond}, lowWater: true,
			wantMarks: []int{quietLowWater, 1, quietLowWater, 1}},
		{name: "a mark that cannot be raised is not put back; the pause stays", pause: 5 * time.Millisecond, reads: []int{10, 100},
			want: []time.Duration{5 * time.Millisecond}, lowWater: true, failQuiet: errors.New("ENOPROTOOPT")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var slept []time.Duration
			var marks []int
			c := &pacedConn{Conn: &scriptedConn{sizes: tt.reads}, sleep: func(d time.Duration) { slept = append(slept, d) }}
			if tt.lowWater {
				c.lowWater = func(n int) error {
					if n == quietLowWater && tt.failQuiet != nil {
						return tt.failQuiet
					}
					marks = append(marks, n)
					return nil
				}
			}
			c.pause.Store(int64(tt.pause))
			buf := make([]byte, 100)
			for range tt.reads {
				if _, err := c.Read(buf); err != nil {
					t.Fatal(err)
				}
			}
			if !slices.Equal(slept, tt.want) {
				t.Fatalf("slept %v, want %v", slept, tt.want)
			}
			if !slices.Equal(marks, tt.wantMarks) {
				t.Fatalf("low-water marks set %v, want %v", marks, tt.wantMarks)
			}
		})
	}
}

func TestReadPause(t *testing.T) {
	tests := []struct {
		conn  net.Conn
		flush time.Duration
		want  time.Duration
	}{
		{&net.TCPConn{}, time.Second, 5 * time.Millisecond},
		{&net.TCPConn{}, 20 * time.Millisecond, time.Millisecond},
		{&net.UnixConn{}, time.Second, 0}, // its buffer fills within a pause
	}
	for _, tt := range tests {
		if got := readPause(tt.conn, tt.flush); got != tt.want {
			t.Errorf("readPause(%T, %s) = %s, want %s", tt.conn, tt.flush, got, tt.want)
		}
	}
}

// A mark that was raised and cannot be put back fails the read: the
// session ends instead of waiting on a socket that will not wake it.
func TestPacedConn_FailedRestoreFailsTheRead(t *testing.T) {
	c := &pacedConn{Conn: &scriptedConn{sizes: []int{10, 10}}, sleep: func(time.Duration) {},
		lowWater: func(n int) error {
			if n == 1 {
				return errors.New("EBADF")
			}
			return nil
		}}
	c.pause.Store(int64(time.Millisecond))
	buf := make([]byte, 100)
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	_, err := c.Read(buf)
	if err == nil || err.Error() != "restore the socket's receive low-water mark: EBADF" {
		t.Fatalf("read after a failed restore: %v", err)
	}
}
