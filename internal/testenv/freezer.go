package testenv

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Freezer forwards TCP connections to a target. Frozen, it keeps every
// connection open and moves nothing either way — no byte, no close — as a
// dropped route or a paused VM does: neither end sees a reset.
type Freezer struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	thawed chan struct{} // closed while not frozen
	rate   int           // bytes per second each way; 0: unlimited
	after  int64         // > 0: freeze once this many more bytes have passed
	// Connections are numbered as they are accepted; those numbered below
	// openBefore wait on openThawed (FreezeOpen).
	next       int
	openBefore int
	openThawed chan struct{}
}

// NewFreezer listens on a free port of 127.0.0.1 and forwards to target
// (host:port) until the test ends.
func NewFreezer(t testing.TB, target string) *Freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &Freezer{ln: ln, target: target, thawed: make(chan struct{})}
	close(f.thawed)
	t.Cleanup(func() { f.Thaw(); _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			id := f.next
			f.next++
			f.mu.Unlock()
			go f.forward(c, id)
		}
	}()
	return f
}

// Addr is the host:port to connect to instead of the target.
func (f *Freezer) Addr() string { return f.ln.Addr().String() }

func (f *Freezer) forward(client net.Conn, id int) {
	server, err := net.Dial("tcp", f.target)
	if err != nil {
		_ = client.Close()
		return
	}
	pipe := func(dst, src net.Conn) {
		defer func() { _ = dst.Close(); _ = src.Close() }()
		buf := make([]byte, 16<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				f.gate(id)
				f.passed(n)
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
				if rate := f.bytesPerSecond(); rate > 0 {
					time.Sleep(time.Duration(n) * time.Second / time.Duration(rate))
				}
			}
			if err != nil {
				f.gate(id) // a close is news too: held while frozen
				return
			}
		}
	}
	go pipe(server, client)
	go pipe(client, server)
}

func (f *Freezer) gate(id int) {
	f.mu.Lock()
	ch, open := f.thawed, f.openThawed
	if id >= f.openBefore {
		open = nil
	}
	f.mu.Unlock()
	<-ch
	if open != nil {
		<-open
	}
}

// FreezeOpen freezes the connections open now, and lets those made after
// it through: a link that died under a session while its client can
// still reach the server anew. Thaw ends it.
func (f *Freezer) FreezeOpen() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.openBefore = f.next
	f.openThawed = make(chan struct{})
}

// SetRate limits each direction of every connection to about
// bytesPerSecond, as a thin link does; 0 lifts the limit.
func (f *Freezer) SetRate(bytesPerSecond int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rate = bytesPerSecond
}

func (f *Freezer) bytesPerSecond() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rate
}

// FreezeAfter freezes the link once about n more bytes, either way, have
// passed it: in the middle of a transfer rather than before it.
func (f *Freezer) FreezeAfter(n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.after = max(n, 1)
}

// passed counts n bytes through, freezing after the count FreezeAfter set:
// the chunk that crosses it still goes, the next one waits.
func (f *Freezer) passed(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.after <= 0 {
		return
	}
	if f.after -= int64(n); f.after <= 0 {
		f.after = 0
		f.freezeLocked()
	}
}

// Freeze stops every byte and close from moving until Thaw.
func (f *Freezer) Freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.freezeLocked()
}

func (f *Freezer) freezeLocked() {
	select {
	case <-f.thawed:
		f.thawed = make(chan struct{})
	default:
	}
}

// Frozen reports whether the link is frozen now.
func (f *Freezer) Frozen() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.thawed:
		return false
	default:
		return true
	}
}

// Thaw lets what was held, and everything after it, through; a
// FreezeAfter not yet reached is called off.
func (f *Freezer) Thaw() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.after = 0
	if f.openThawed != nil {
		close(f.openThawed)
		f.openThawed, f.openBefore = nil, 0
	}
	select {
	case <-f.thawed:
	default:
		close(f.thawed)
	}
}

// DSN is the PostgreSQL URL dsn rewritten to connect through the freezer,
// with options (e.g. "-c wal_sender_timeout=1s") as the startup options
// parameter when not empty.
func (f *Freezer) DSN(dsn, options string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", fmt.Errorf("parse postgres dsn: %w", err)
	}
	u.Host = f.Addr()
	if options != "" {
		q := u.Query()
		q.Set("options", options)
		u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	}
	return u.String(), nil
}
