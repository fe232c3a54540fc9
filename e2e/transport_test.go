package e2e

// Transports other than plain loopback TCP: TLS to PostgreSQL and to
// ClickHouse, and a Unix socket to PostgreSQL.

import (
	"context"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eventcdc/cdc/internal/testenv"
)

// TestTLS_ConnectorStreamsOverTLSToPostgres turns TLS on in the local
// PostgreSQL with a throwaway certificate and runs the connector with
// sslmode=require: the replication connection must be encrypted and the
// events must arrive. TLS reads its records through cdc's read-ahead
// buffer: a receive buffer under any host's net.core.rmem_max makes sure
// that path is the one taken, with enough events for many refills.
func TestTLS_ConnectorStreamsOverTLSToPostgres(t *testing.T) {
	w := newWorld(t)
	dataDir := w.env.PostgresDataDir(t)
	writeServerCert(t, dataDir)
	w.exec(`ALTER SYSTEM SET ssl = on`)
	w.exec(`SELECT pg_reload_conf()`)
	t.Cleanup(func() {
		_, _ = w.pg.Exec(context.Background(), `ALTER SYSTEM RESET ssl`)
		_, _ = w.pg.Exec(context.Background(), `SELECT pg_reload_conf()`)
	})
	waitFor(t, 10*time.Second, "ssl on", func() (bool, string) {
		var on string
		_ = w.pg.QueryRow(context.Background(), `SHOW ssl`).Scan(&on)
		return on == "on", on
	})

	tlsDSN := w.pgDSN[:len(w.pgDSN)-len("sslmode=disable")] + "sslmode=require"
	c := w.start(map[string]string{"CDC_PG_DSN": tlsDSN, "CDC_PG_RECEIVE_BUFFER": "128KiB"})
	w.insertEvents("over_tls", 25)
	w.insertEvents("over_tls_many", 5000)
	w.waitRows(5025, 60*time.Second)
	if !strings.Contains(c.out.String(), `"read_ahead_bytes": 131072`) {
		t.Fatalf("no session read through a 128 KiB read-ahead buffer:\n%s", tail(c.out.String(), 20))
	}

	var ssl bool
	var version string
	err := w.pg.QueryRow(context.Background(), `SELECT s.ssl, coalesce(s.version, '') FROM pg_stat_ssl s
		JOIN pg_stat_replication r ON r.pid = s.pid WHERE r.application_name = 'cdc'`).Scan(&ssl, &version)
	if err != nil {
		t.Fatal(err)
	}
	if !ssl {
		t.Fatal("the replication connection is not encrypted")
	}
	t.Logf("replication connection uses %s", version)

	// A server certificate sslrootcert does not trust is a setting to
	// fix: cdc run exits 2 naming CDC_PG_DSN, at once rather than
	// retrying for ever.
	otherCA, _ := testenv.SelfSignedCert(t)
	rootCert := filepath.Join(t.TempDir(), "root.crt")
	if err := os.WriteFile(rootCert, otherCA, 0o600); err != nil {
		t.Fatal(err)
	}
	untrusted := w.start(map[string]string{"CDC_PG_DSN": tlsDSN[:len(tlsDSN)-len("require")] + "verify-full&sslrootcert=" + url.QueryEscape(rootCert)})
	select {
	case <-untrusted.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("cdc run still running with a certificate it does not trust:\n%s", tail(untrusted.out.String(), 10))
	}
	if code, out := untrusted.cmd.ProcessState.ExitCode(), untrusted.out.String(); code != 2 || !strings.Contains(out, "cdc run: CDC_PG_DSN: TLS with PostgreSQL failed") || !strings.Contains(out, "x509: certificate signed by unknown authority") {
		t.Fatalf("cdc run with a certificate it does not trust exited %d, want 2 naming CDC_PG_DSN:\n%s", code, tail(out, 10))
	}
}

// TestSocket_ConnectorStreamsOverAUnixSocket runs the connector with a DSN
// that names PostgreSQL's socket folder instead of a host, as a connector
// deployed next to its database would: it must pass the configuration check,
// stream over the socket and store the events.
func TestSocket_ConnectorStreamsOverAUnixSocket(t *testing.T) {
	w := newWorld(t)
	dsn, err := testenv.SocketDSN(w.pgDSN, w.env.PostgresSocketDir(t))
	if err != nil {
		t.Fatal(err)
	}
	w.start(map[string]string{"CDC_PG_DSN": dsn})
	w.insertEvents("over_socket", 25)
	w.waitRows(25, 30*time.Second)

	// A Unix-socket client has no address in pg_stat_replication.
	var addr *string
	if err := w.pg.QueryRow(context.Background(), `SELECT client_addr::text FROM pg_stat_replication WHERE application_name = 'cdc'`).Scan(&addr); err != nil {
		t.Fatal(err)
	}
	if addr != nil {
		t.Fatalf("replication client address %s: the connector did not use the socket", *addr)
	}
}

// TestTLS_ConnectorWritesOverTLSToClickHouse gives the local ClickHouse a
// throwaway certificate, so it also serves the native protocol over TLS on
// a port of its own, and points the connector at that port with
// secure=true. The port speaks only TLS: a plain client is turned away, so
// rows arriving through it went encrypted. The certificate is checked by
// default — refused until its CA is trusted, here through SSL_CERT_FILE,
// as an operator with a private CA would do.
func TestTLS_ConnectorWritesOverTLSToClickHouse(t *testing.T) {
	w := newWorld(t)
	certPEM, keyPEM := testenv.SelfSignedCert(t)
	port := w.env.EnableClickHouseTLS(t, certPEM, keyPEM)
	w.chReconnect()
	u, err := url.Parse(w.chDSN)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = "127.0.0.1:" + strconv.Itoa(port)
	plainDSN := u.String()
	q := u.Query()
	q.Set("secure", "true")
	u.RawQuery = q.Encode()
	secureDSN := u.String()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}

	// A certificate not trusted is a setting to fix (exit 2, naming the
	// variable); the plain protocol's failure at a TLS port cannot be
	// told from a broken link (exit 1).
	for _, tc := range []struct {
		name, dsn, certFile, want string
		code                      int
	}{
		{"plain protocol to the TLS port", plainDSN, ca, "read event_log ids: handshake", 1},
		{"certificate of an unknown CA", secureDSN, "", "cdc verify: CDC_CLICKHOUSE_DSN: TLS with ClickHouse failed", 2},
	} {
		env := map[string]string{"CDC_CLICKHOUSE_DSN": tc.dsn}
		if tc.certFile != "" {
			env["SSL_CERT_FILE"] = tc.certFile
		}
		_, stderr, code := w.runOperator(env, "verify", "--since", longAgo)
		if code != tc.code || !strings.Contains(stderr, tc.want) || code == 2 && !strings.Contains(stderr, "certificate signed by unknown authority") {
			t.Fatalf("%s: verify exited %d, want %d with %q in:\n%s", tc.name, code, tc.code, tc.want, stderr)
		}
	}
	// cdc run too, at once rather than retrying for ever.
	untrusted := w.start(map[string]string{"CDC_CLICKHOUSE_DSN": secureDSN})
	select {
	case <-untrusted.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("cdc run still running with a certificate it does not trust:\n%s", tail(untrusted.out.String(), 10))
	}
	if code, out := untrusted.cmd.ProcessState.ExitCode(), untrusted.out.String(); code != 2 || !strings.Contains(out, "cdc run: CDC_CLICKHOUSE_DSN: TLS with ClickHouse failed") || !strings.Contains(out, "certificate signed by unknown authority") {
		t.Fatalf("cdc run with a certificate it does not trust exited %d, want 2 naming CDC_CLICKHOUSE_DSN:\n%s", code, tail(out, 10))
	}

	c := w.start(map[string]string{"CDC_CLICKHOUSE_DSN": secureDSN, "SSL_CERT_FILE": ca})
	w.insertEvents("over_tls", 25)
	w.waitRows(25, 30*time.Second)
	if got := w.chCount("SELECT count() FROM event_log WHERE event_type = 'over_tls'"); got != 25 {
		t.Fatalf("event_log holds %d over_tls rows, want 25", got)
	}
	if code, _ := c.term(30 * time.Second); code != 0 {
		t.Fatalf("cdc run exited %d after SIGTERM, want 0", code)
	}
}

// writeServerCert writes a self-signed server.crt/server.key where
// PostgreSQL looks for them, owned by the server's user with the key
// private, as PostgreSQL insists.
func writeServerCert(t *testing.T, dir string) {
	t.Helper()
	certPEM, keyPEM := testenv.SelfSignedCert(t)
	files := map[string][]byte{"server.crt": certPEM, "server.key": keyPEM}
	owner := -1
	if os.Geteuid() == 0 { // localdb.sh runs PostgreSQL as postgres when we are root
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		owner, _ = strconv.Atoi(u.Uid)
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if owner >= 0 {
			if err := os.Chown(p, owner, -1); err != nil {
				t.Fatal(err)
			}
		}
	}
}
