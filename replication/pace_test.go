package replication

import (
	"bytes"
	"errors"
	"io"
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

// chunkConn hands out its chunks in order, one per read (less if p is
// smaller, the rest at the next read), then io.EOF; it counts the reads.
type chunkConn struct {
	net.Conn
	chunks [][]byte
	reads  int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	c.reads++
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	if c.chunks[0] = c.chunks[0][n:]; len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

// With a read-ahead buffer, pgconn's small reads are served from it, every
// byte in order; the socket is read once per refill, and only a refill
// that did not fill the buffer is followed by a pause.
func TestPacedConn_ReadAhead(t *testing.T) {
	tests := []struct {
		name      string
		chunks    []int // bytes queued on the socket at each refill
		readSize  int   // pgconn's read size
		wantReads int   // reads of the socket, the last one's EOF included
		want      []time.Duration
	}{
		{name: "a full refill is followed by the next at once, a short one by a pause",
			chunks: []int{64, 64, 63, 64, 30}, readSize: 8, wantReads: 6,
			want: []time.Duration{5 * time.Millisecond, 5 * time.Millisecond}},
		{name: "reads of the buffer's size or more go straight to the socket",
			chunks: []int{64, 20}, readSize: 64, wantReads: 3,
			want: []time.Duration{5 * time.Millisecond}},
		{name: "a read larger than the buffer is full when it took the buffer's size",
			chunks: []int{64, 64, 30}, readSize: 200, wantReads: 4,
			want: []time.Duration{5 * time.Millisecond}},
		{name: "a read smaller than a refill takes the rest at the next read",
			chunks: []int{64, 64, 64}, readSize: 50, wantReads: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var sent []byte
			src := &chunkConn{}
			for i, n := range tt.chunks {
				chunk := make([]byte, n)
				for j := range chunk {
					chunk[j] = byte(i*64 + j)
				}
				src.chunks = append(src.chunks, chunk)
				sent = append(sent, chunk...)
			}
			var slept []time.Duration
			c := &pacedConn{Conn: src, sleep: func(d time.Duration) { slept = append(slept, d) }, ahead: make([]byte, 64)}
			c.pause.Store(int64(5 * time.Millisecond))
			var got []byte
			buf := make([]byte, tt.readSize)
			for {
				n, err := c.Read(buf)
				got = append(got, buf[:n]...)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got, sent) {
				t.Fatalf("read %d bytes %v, want the %d sent %v", len(got), got, len(sent), sent)
			}
			if src.reads != tt.wantReads {
				t.Errorf("%d reads of the socket, want %d", src.reads, tt.wantReads)
			}
			if !slices.Equal(slept, tt.want) {
				t.Errorf("slept %v, want %v", slept, tt.want)
			}
		})
	}
}

// failingConn returns its bytes and an error in the same read.
type failingConn struct {
	net.Conn
	data []byte
	err  error
}

func (c *failingConn) Read(p []byte) (int, error) {
	n := copy(p, c.data)
	c.data = c.data[n:]
	return n, c.err
}

// A refill that returns bytes and an error hands out the bytes first and
// the error after them, once.
func TestPacedConn_ReadAheadKeepsTheErrorForLast(t *testing.T) {
	src := &failingConn{data: []byte("0123456789"), err: errors.New("connection reset")}
	c := &pacedConn{Conn: src, sleep: func(time.Duration) {}, ahead: make([]byte, 64)}
	buf := make([]byte, 4)
	var got []byte
	var err error
	for range 3 {
		var n int
		n, err = c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("read %q, then %v before the last byte was handed out", got, err)
		}
	}
	if string(got) != "0123456789" {
		t.Fatalf("read %q", got)
	}
	src.err = nil
	if n, err := c.Read(buf); n != 0 || err == nil || err.Error() != "connection reset" {
		t.Fatalf("after the bytes: %d, %v; want 0, connection reset", n, err)
	}
}

func TestReceiveBuffer(t *testing.T) {
	tests := []struct {
		name           string
		asked, rmemMax int
		want           int
	}{
		{"under the maximum", 512 << 10, 4 << 20, 512 << 10},
		{"at the maximum", 212992, 212992, 212992},
		{"over Linux's default maximum: left to the kernel", 512 << 10, 212992, 0},
		{"the maximum unknown", 512 << 10, 0, 512 << 10},
		{"off", 0, 212992, 0},
	}
	for _, tt := range tests {
		if got := receiveBuffer(tt.asked, tt.rmemMax); got != tt.want {
			t.Errorf("%s: receiveBuffer(%d, %d) = %d, want %d", tt.name, tt.asked, tt.rmemMax, got, tt.want)
		}
	}
}
