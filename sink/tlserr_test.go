package sink_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/eventcdc/cdc/sink"
)

// A failed TLS handshake, however wrapped, is a setting to fix; the other
// failures of a connection are not, nor a refused login.
func TestIsTLSError(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"plain port", tls.RecordHeaderError{Msg: "tls: first record does not look like a TLS handshake"}, true},
		{"unknown CA, verified by crypto/tls", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, true},
		{"unknown CA, verified by the caller (pgx's verify-ca)", x509.UnknownAuthorityError{}, true},
		{"another host's certificate", &tls.CertificateVerificationError{Err: x509.HostnameError{Host: "db"}}, true},
		{"expired certificate", x509.CertificateInvalidError{Reason: x509.Expired}, true},
		{"the server refused the client's certificate", tls.AlertError(42), true},
		{"wrapped", fmt.Errorf("read event_log columns: %w", tls.RecordHeaderError{}), true},
		{"refused connection", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, false},
		{"cut link", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), false},
		{"refused login", &clickhouse.Exception{Code: 516, Message: "default: Authentication failed"}, false},
		{"nil", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sink.IsTLSError(tc.err); got != tc.want {
				t.Fatalf("IsTLSError(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
