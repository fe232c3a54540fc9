package sink_test

import (
	"context"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/sink"
)

// A connection ClickHouse refuses at the login, or that never answers the
// client's hello, is closed as it fails. clickhouse-go drops such a
// connection without closing its socket, which stayed open until the
// garbage collector found it: cdc retrying a login refused after a
// password was rotated, or a server that never answered, held one more
// descriptor at each attempt, up to the process's limit in a long outage
// with little garbage made. The collector is off here, as it may well be
// for that long in a process that only retries.
func TestClickHouse_RefusedHandshakeLeavesNoSocketOpen(t *testing.T) {
	env := testenv.Get(t)
	base, err := url.Parse(env.NewClickHouse(t))
	if err != nil {
		t.Fatal(err)
	}
	// What is counted: the connection a Ping that succeeded leaves in the
	// pool, and kept for the next.
	t.Run("accepted", func(t *testing.T) {
		ch, err := sink.Open(base.String(), zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		defer ch.Close()
		for range 3 {
			if err := ch.Ping(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if open, dials := socketsTo(t, base.String()), sink.Dials(ch); open != 1 || dials != 1 {
			t.Fatalf("%d sockets to the server open, %d dialed after 3 Pings; want the one pooled", open, dials)
		}
	})
	with := func(change func(u *url.URL)) string {
		u := *base
		change(&u)
		return u.String()
	}
	password := func(u *url.URL) { u.User = url.UserPassword(u.User.Username(), "cdc-wrong-password") }
	for _, tc := range []struct {
		name     string
		dsn      string
		attempts int
	}{
		{"unknown_user", with(func(u *url.URL) { u.User = url.UserPassword("cdc_no_such_user", "s3cret") }), 20},
		{"wrong_password", with(password), 20},
		{"unknown_database", with(func(u *url.URL) { u.Path = "/cdc_no_such_db" }), 20},
		// A server that takes the connection and never answers the
		// hello (a wedged proxy): the handshake times out.
		{"silent_server", with(func(u *url.URL) {
			u.Host = testenv.SilentAddr(t)
			u.RawQuery = "dial_timeout=200ms"
		}), 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch, err := sink.Open(tc.dsn, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			defer ch.Close()
			defer debug.SetGCPercent(debug.SetGCPercent(-1))
			ctx := context.Background()
			for range tc.attempts {
				if err := ch.Ping(ctx); err == nil {
					t.Fatal("Ping succeeded; want the handshake refused")
				}
			}
			if open := socketsTo(t, tc.dsn); open != 0 {
				t.Fatalf("%d sockets to the server open after %d refused handshakes, want none", open, tc.attempts)
			}
			if dials := sink.Dials(ch); dials != int64(tc.attempts) {
				t.Fatalf("%d connections dialed, want %d (one a Ping)", dials, tc.attempts)
			}
		})
	}
}

// socketsTo is how many sockets of the process are connected to the
// server of dsn (the other end of those a test's server holds in the
// same process is not), counted from the kernel's table of TCP sockets:
// those it lists that are among the process's open descriptors.
func socketsTo(t *testing.T, dsn string) int {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.ParseUint(u.Port(), 10, 16)
	if err != nil {
		t.Fatalf("port of %s: %v", u.Redacted(), err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot list open files: %v", err)
	}
	mine := map[string]bool{}
	for _, fd := range fds {
		// A socket's link reads socket:[inode].
		if target, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(target, "socket:[") {
			mine[strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")] = true
		}
	}
	n := 0
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue // no IPv6
		}
		// sl local_address rem_address st … inode: addresses as hex
		// host:port; the first line names the columns.
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 {
				continue
			}
			_, remote, _ := strings.Cut(f[2], ":")
			if p, err := strconv.ParseUint(remote, 16, 16); err == nil && p == port && mine[f[9]] {
				n++
			}
		}
	}
	return n
}
