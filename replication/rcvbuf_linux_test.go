package replication

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/eventcdc/cdc/internal/testenv"
)

// listen returns the address of a local TCP listener that accepts every
// connection and holds it until the test ends.
func listen(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var held []net.Conn
		for {
			c, err := ln.Accept()
			if err != nil {
				for _, c := range held {
					_ = c.Close()
				}
				return
			}
			held = append(held, c)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return ln.Addr().String()
}

// The receive buffer is set on a TCP socket before it connects, and the
// kernel reports what it granted; a Unix socket is left alone.
func TestReceiveBufferControl(t *testing.T) {
	addr := listen(t)
	const want = 96 << 10 // under Linux's default net.core.rmem_max, 208 KiB
	set, err := (&net.Dialer{Control: receiveBufferControl(want)}).Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if got := grantedReceiveBuffer(set); got != want {
		t.Errorf("granted %d bytes, want %d", got, want)
	}
	auto, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer auto.Close()
	if got := grantedReceiveBuffer(auto); got == want || got == 0 {
		t.Errorf("a socket dialled without the control reports %d bytes", got)
	}
	if got := grantedReceiveBuffer(&net.UnixConn{}); got != 0 {
		t.Errorf("a Unix socket reports %d bytes", got)
	}
	if err := receiveBufferControl(want)("unix", "/tmp/x", nil); err != nil {
		t.Errorf("control on a Unix socket: %v", err)
	}
}

// connect gives the replication connection a read-ahead buffer of the size
// the kernel granted, and none when the setting is 0.
func TestConnect_ReadAheadIsTheGrantedBuffer(t *testing.T) {
	dsn := testenv.Get(t).NewPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tt := range []struct {
		receiveBuffer int
		wantAhead     int
	}{
		{128 << 10, 128 << 10},
		{0, 0},
	} {
		conn, paced, err := connect(ctx, dsn, tt.receiveBuffer)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := paced.Conn.(*net.TCPConn); !ok {
			t.Fatalf("the test database is reached over %T, want TCP", paced.Conn)
		}
		if got := len(paced.ahead); got != tt.wantAhead {
			t.Errorf("receive buffer %d: read-ahead %d bytes, want %d", tt.receiveBuffer, got, tt.wantAhead)
		}
		if got := grantedReceiveBuffer(paced.Conn); tt.receiveBuffer > 0 && got != tt.receiveBuffer {
			t.Errorf("receive buffer %d: the socket has %d", tt.receiveBuffer, got)
		}
		// The connection works through the read-ahead.
		if res := conn.Exec(ctx, "IDENTIFY_SYSTEM"); res == nil {
			t.Fatal("no result")
		} else if _, err := res.ReadAll(); err != nil {
			t.Errorf("receive buffer %d: IDENTIFY_SYSTEM: %v", tt.receiveBuffer, err)
		}
		_ = conn.Close(ctx)
	}
}

// receiveBufferMax reads what the kernel allows: a socket asking for more
// than it is granted exactly that. Where the file cannot be read, a probe
// of a socket says the same: the maximum when asked for more, what was
// asked otherwise.
func TestReceiveBufferMax(t *testing.T) {
	most := receiveBufferMax(64 << 10)
	if most <= 0 {
		t.Fatalf("net.core.rmem_max read as %d", most)
	}
	missing := filepath.Join(t.TempDir(), "rmem_max")
	if got := receiveBufferMaxFrom(missing, most+4096); got != most {
		t.Errorf("without the file, asking for %d: %d; want net.core.rmem_max, %d", most+4096, got, most)
	}
	if got := receiveBufferMaxFrom(missing, most/2); got != most/2 {
		t.Errorf("without the file, asking for %d: %d; want that", most/2, got)
	}
	c, err := (&net.Dialer{Control: receiveBufferControl(most + 4096)}).Dial("tcp", listen(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := grantedReceiveBuffer(c); got != most {
		t.Errorf("asked for %d bytes, granted %d; net.core.rmem_max read as %d", most+4096, got, most)
	}
}
