package e2e

import (
	"context"
	"net/url"
	"testing"
	"time"
)

// TestSocket_ConnectorStreamsOverAUnixSocket runs the connector with a DSN
// that names PostgreSQL's socket folder instead of a host, as a connector
// deployed next to its database would: it must pass the configuration check,
// stream over the socket and store the events.
func TestSocket_ConnectorStreamsOverAUnixSocket(t *testing.T) {
	w := newWorld(t)
	dir := w.env.PostgresSocketDir(t)
	u, err := url.Parse(w.pgDSN)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("host", dir)
	q.Set("port", u.Port())
	u.Host, u.RawQuery = "", q.Encode()
	w.start(map[string]string{"CDC_PG_DSN": u.String()})
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
