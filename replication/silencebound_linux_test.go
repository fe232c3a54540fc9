package replication_test

import (
	"context"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/replication"
)

// BoundSilence cuts a read only when PostgreSQL is silent while it could
// speak: not while cdc's own message still travels to it over a thin
// link (a dead letter of many MB set aside by backfill), during which the
// server has nothing to say. Here 512 KiB at 64 KiB/s, 8 s, under a bound
// of 1 s: the statement answers; it was cut after 1 s. A link frozen
// during the upload is still cut after the bound, and the write blocked
// on it (16 MiB: more than the sockets' buffers hold) with it.
func TestBoundSilence_SendingIsNoSilence(t *testing.T) {
	e := testenv.Get(t)
	dsn := e.NewPostgres(t)
	for _, tc := range []struct {
		name   string
		size   int
		freeze bool
	}{
		{name: "a long upload", size: 512 << 10},
		{name: "a link frozen during the upload", size: 16 << 20, freeze: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := url.Parse(dsn)
			if err != nil {
				t.Fatal(err)
			}
			freezer := testenv.NewFreezer(t, u.Host)
			fdsn, err := freezer.DSN(dsn, "")
			if err != nil {
				t.Fatal(err)
			}
			if !tc.freeze {
				u.Host = thinLink(t, u.Host, 64<<10)
				fdsn = u.String()
			}
			cfg, err := pgconn.ParseConfig(fdsn)
			if err != nil {
				t.Fatal(err)
			}
			replication.BoundSilence(cfg, time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			conn, err := pgconn.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			if tc.freeze {
				freezer.SetRate(32 << 10)
				freezer.FreezeAfter(64 << 10)
			}
			value := strings.Repeat("x", tc.size)
			start := time.Now()
			res := conn.ExecParams(ctx, "SELECT length($1)", [][]byte{[]byte(value)}, nil, nil, nil).Read()
			took := time.Since(start)
			if tc.freeze {
				if res.Err == nil || !strings.Contains(res.Err.Error(), "postgres sent nothing for 1s") || took > 30*time.Second {
					t.Fatalf("over a frozen link: %v after %s; want postgres sent nothing, within seconds", res.Err, took)
				}
				freezer.Thaw()
				return
			}
			if want := strconv.Itoa(tc.size); res.Err != nil || len(res.Rows) != 1 || string(res.Rows[0][0]) != want {
				t.Fatalf("the statement: %v, rows %q after %s; want %s", res.Err, res.Rows, took, want)
			}
		})
	}
}

// thinLink forwards connections to target, cdc's bytes at bytesPerSecond
// through a receive buffer of 8 KiB, as a thin link carries them: what
// the far end has not taken stays in the sender's socket,
// unacknowledged. (Freezer's pacing happens behind a kernel buffer of
// megabytes, which acknowledges a whole message at once.)
func thinLink(t *testing.T, target string, bytesPerSecond int) string {
	t.Helper()
	// An Ethernet's segments, not loopback's 64 KiB, whose window
	// updates wait for a whole segment of room and leave the sender
	// probing a closed window for seconds.
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 1400)
		}); err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// The window reopens only once much of the buffer is
			// free, and cdc sees its bytes acknowledged in bursts of
			// about the buffer's size: at 32 KiB (64 KiB in the
			// kernel) those came about a second apart, the bound's
			// length, and a loaded host cut one upload in ten.
			_ = c.(*net.TCPConn).SetReadBuffer(8 << 10)
			s, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			t.Cleanup(func() { _ = c.Close(); _ = s.Close() })
			go func() { _, _ = io.Copy(c, s) }()
			go func() {
				buf := make([]byte, 4<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						if _, err := s.Write(buf[:n]); err != nil {
							return
						}
						time.Sleep(time.Duration(n) * time.Second / time.Duration(bytesPerSecond))
					}
					if err != nil {
						_ = s.Close()
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}
