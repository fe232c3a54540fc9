// Command rawread reads a logical replication stream the way a consumer of
// a given read pattern would, without parsing it, and reports how long the
// stream ran and the walsender's CPU over it: how much a client's reads
// cost the walsender. It never confirms a position, so each run on the
// same slot replays the same WAL. bench/read-pattern.sh runs it; see
// docs/performance-history.md (fifth session of 2026-11-30).
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sys/unix"
)

func main() {
	dsn := flag.String("dsn", "", "PostgreSQL URL (the replication parameter is added)")
	slot := flag.String("slot", "", "pgoutput slot holding the backlog")
	pub := flag.String("publication", "cdc_outbox", "publication")
	rcvbuf := flag.Int("rcvbuf", 0, "SO_RCVBUF set before connecting (0: the kernel's autotuning)")
	readSize := flag.Int("read", 8192, "bytes per read")
	pause := flag.Duration("pause", 0, "sleep before the next read")
	drained := flag.Bool("drained", false, "sleep only after a read that did not fill the buffer (cdc's pattern)")
	lowat := flag.Int("lowat", 0, "instead of sleeping for -pause, wait up to -pause for this many bytes queued (SO_RCVLOWAT and poll)")
	idle := flag.Duration("idle", 700*time.Millisecond, "the stream is over after this long without data")
	flag.Parse()
	if err := run(*dsn, *slot, *pub, *rcvbuf, *readSize, *pause, *drained, *lowat, *idle); err != nil {
		fmt.Fprintln(os.Stderr, "rawread:", err)
		os.Exit(1)
	}
}

func run(dsn, slot, pub string, rcvbuf, readSize int, pause time.Duration, drained bool, lowat int, idle time.Duration) error {
	ctx := context.Background()
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("parse dsn: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	dialer := &net.Dialer{KeepAlive: 5 * time.Minute, Control: func(_, _ string, c syscall.RawConn) error {
		if rcvbuf == 0 {
			return nil
		}
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
		}); err != nil {
			return err
		}
		return serr
	}}
	cfg.DialFunc = dialer.DialContext
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	res, err := conn.Exec(ctx, "SELECT pg_backend_pid()").ReadAll()
	if err != nil {
		return fmt.Errorf("walsender pid: %w", err)
	}
	walsender, err := strconv.Atoi(string(res[0].Rows[0][0]))
	if err != nil {
		return fmt.Errorf("walsender pid: %w", err)
	}
	cpu0, err := cpuSeconds(walsender)
	if err != nil {
		return err
	}
	start := time.Now()
	// From here on the socket is read raw: START_REPLICATION as a simple
	// query, then whatever the walsender sends, unparsed.
	hj, err := conn.Hijack()
	if err != nil {
		return fmt.Errorf("hijack: %w", err)
	}
	defer hj.Conn.Close()
	q := fmt.Sprintf("START_REPLICATION SLOT %s LOGICAL 0/0 (proto_version '2', streaming 'on', publication_names '%s')", slot, pub)
	msg := make([]byte, 5, 6+len(q))
	msg[0] = 'Q'
	n := 4 + len(q) + 1
	msg[1], msg[2], msg[3], msg[4] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	msg = append(append(msg, q...), 0)
	if _, err := hj.Conn.Write(msg); err != nil {
		return fmt.Errorf("start replication: %w", err)
	}
	buf := make([]byte, readSize)
	var total int64
	last := start
	for {
		if err := hj.Conn.SetReadDeadline(time.Now().Add(idle)); err != nil {
			return err
		}
		k, err := hj.Conn.Read(buf)
		total += int64(k)
		if k > 0 {
			last = time.Now()
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				break
			}
			return fmt.Errorf("read: %w", err)
		}
		if pause > 0 && (!drained || k < len(buf)) {
			if lowat > 0 {
				if err := waitFor(hj.Conn, lowat, pause); err != nil {
					return err
				}
			} else {
				time.Sleep(pause)
			}
		}
	}
	// The walsender idles through the last read's timeout: its CPU now is
	// its CPU for the stream.
	cpu1, err := cpuSeconds(walsender)
	if err != nil {
		return err
	}
	self, err := cpuSeconds(os.Getpid())
	if err != nil {
		return err
	}
	fmt.Printf("rcvbuf=%d read=%d pause=%s drained=%v lowat=%d: %d bytes in %.2f s, walsender cpu %.2f s, rawread cpu %.2f s\n",
		rcvbuf, readSize, pause, drained, lowat, total, last.Sub(start).Seconds(), cpu1-cpu0, self)
	return nil
}

// cpuSeconds is a process's user+system CPU time from /proc/<pid>/stat.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu of %d: %w", pid, err)
	}
	// Fields after the command name, which may hold spaces: state is the
	// first, utime the 12th and stime the 13th.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("cpu of %d: short stat %q", pid, b)
	}
	u, err1 := strconv.ParseFloat(f[11], 64)
	s, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("cpu of %d: stat %q", pid, b)
	}
	return (u + s) / 100, nil
}

// waitFor waits until bytes are queued on c's socket, or for at most d:
// the receive low-water mark raised to bytes, poll(2), the mark put back.
func waitFor(c net.Conn, bytes int, d time.Duration) error {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return fmt.Errorf("-lowat needs a TCP connection, not %T", c)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVLOWAT, bytes); serr != nil {
			return
		}
		_, serr = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(d.Milliseconds()))
		if serr == unix.EINTR {
			serr = nil
		}
		if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVLOWAT, 1); serr == nil {
			serr = e
		}
	})
	if err != nil {
		return err
	}
	return serr
}
