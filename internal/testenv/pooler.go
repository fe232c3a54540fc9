package testenv

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// poolerParams are the startup parameters PgBouncer 1.18 takes by default
// (those it tracks per client); it refuses any other its
// ignore_startup_parameters does not name.
var poolerParams = []string{"user", "database", "application_name", "client_encoding", "datestyle", "timezone", "standard_conforming_strings"}

// PoolerAddr returns the loopback address of a server that answers a
// login as PgBouncer 1.18 in front of PostgreSQL answered cdc's: the first
// startup parameter (in the message's order) it does not take is refused
// with FATAL "unsupported startup parameter: <name>" (SQLSTATE 08P01), the
// error PgBouncer sends, field for field — replication on a replication
// connection, which PgBouncer before 1.23 cannot carry, or one of the
// session settings cdc sends (lock_timeout, bytea_output…). A login with
// none of those is refused too (no server stands behind it). TLS is
// declined, as by a PgBouncer without it.
func PoolerAddr(t *testing.T) string {
	t.Helper()
	return fakePooler(t, false)
}

// BusyPoolerAddr returns the loopback address of a server that refuses
// every login as PgBouncer does when it is full, with the SQLSTATE of its
// refusals of a startup parameter (08P01) and "no more connections
// allowed (max_client_conn)": an outage, not a DSN that cannot work.
func BusyPoolerAddr(t *testing.T) string {
	t.Helper()
	return fakePooler(t, true)
}

func fakePooler(t *testing.T, full bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go refuseLogin(c, full)
		}
	}()
	return ln.Addr().String()
}

// refuseLogin reads c's startup message, answering 'N' to a request for
// TLS or GSS encryption first, and refuses it as PoolerAddr says, or as
// BusyPoolerAddr does when full.
func refuseLogin(c net.Conn, full bool) {
	defer c.Close()
	for {
		var head [8]byte // length, then protocol version or request code
		if _, err := io.ReadFull(c, head[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(head[:4]))
		if n < 8 || n > 10000 {
			return
		}
		body := make([]byte, n-8)
		if _, err := io.ReadFull(c, body); err != nil {
			return
		}
		switch binary.BigEndian.Uint32(head[4:]) {
		case 80877103, 80877104: // SSLRequest, GSSENCRequest
			if _, err := c.Write([]byte{'N'}); err != nil {
				return
			}
			continue
		case 196608: // protocol 3.0
		default:
			return
		}
		refused := ""
		// name\0value\0 pairs, then a \0.
		fields := bytes.Split(bytes.TrimSuffix(body, []byte{0}), []byte{0})
		for i := 0; i+1 < len(fields) && refused == ""; i += 2 {
			name := string(fields[i])
			known := false
			for _, p := range poolerParams {
				known = known || strings.EqualFold(name, p)
			}
			if !known {
				refused = name
			}
		}
		e := &pgproto3.ErrorResponse{Severity: "FATAL", Code: "08P01", Message: "unsupported startup parameter: " + refused}
		switch {
		case full:
			e = &pgproto3.ErrorResponse{Severity: "FATAL", Code: "08P01", Message: "no more connections allowed (max_client_conn)"}
		case refused == "":
			e = &pgproto3.ErrorResponse{Severity: "FATAL", Code: "08006", Message: "no server behind this test's pooler"}
		}
		msg, err := e.Encode(nil)
		if err != nil {
			return
		}
		_, _ = c.Write(msg)
		return
	}
}
