package replication_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/replication"
	"github.com/eventcdc/cdc/sink"
)

// A login PostgreSQL refuses before the replicator ever logged in ends
// Run with the error (cdc exits 2 on it, naming CDC_PG_DSN); once it has
// streamed, the same refusal (a password rotated, an LDAP server down) is
// an outage like any other: retried until the login works again.
func TestReplicator_RefusedLoginEndsRunOnlyBeforeItLoggedIn(t *testing.T) {
	h := setup(t)
	ctx := context.Background()
	role := h.role(fmt.Sprintf("cdc_login_%d", time.Now().UnixNano()%1e9), "LOGIN REPLICATION")

	h.as(role + "_missing")
	r, _ := h.replicator(&fakeSink{}, nil, zap.NewNop(), func(*replication.Config) {})
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := r.Run(rctx); !replication.IsLoginError(err) || !strings.HasSuffix(err.Error(), `role "`+role+`_missing" does not exist (SQLSTATE 28000)`) {
		t.Fatalf("Run with a role that does not exist: %v; want the refused login at once", err)
	}

	// A role that may log in but not replicate is refused at the login
	// too (42501 while connecting), as is a database it may not connect to.
	h.as(h.role(role+"_norepl", "LOGIN"))
	r, _ = h.replicator(&fakeSink{}, nil, zap.NewNop(), func(*replication.Config) {})
	if err := r.Run(rctx); !replication.IsLoginError(err) || !strings.HasSuffix(err.Error(), "(SQLSTATE 42501)") {
		t.Fatalf("Run with a role without REPLICATION: %v; want the refused login at once", err)
	}

	h.as(role)
	core, logs := observer.New(zapcore.ErrorLevel)
	s := &fakeSink{}
	r, _ = h.replicator(s, nil, zap.New(core), func(*replication.Config) {})
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	h.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('first', 'test', '{}')`)
	eventually(t, "the first row stored", func() bool { return s.count() == 1 })

	h.exec(`ALTER ROLE ` + role + ` NOLOGIN`)
	h.exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '` + role + `'`)
	refused := func() int {
		n := 0
		for _, e := range logs.FilterMessage("replication interrupted; reconnecting").All() {
			if strings.Contains(fmt.Sprint(e.ContextMap()["error"]), `role "`+role+`" is not permitted to log in (SQLSTATE 28000)`) {
				n++
			}
		}
		return n
	}
	eventually(t, "two refused logins retried", func() bool { return refused() >= 2 })
	select {
	case err := <-done:
		t.Fatalf("Run ended on a refused login after it had streamed: %v", err)
	default:
	}

	h.exec(`ALTER ROLE ` + role + ` LOGIN`)
	h.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('second', 'test', '{}')`)
	eventually(t, "the second row stored once the login works again", func() bool { return s.count() == 2 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// A session that logged in to PostgreSQL but never streamed — ClickHouse
// unreachable since the start — has logged in all the same: a refusal
// after it (the role changed meanwhile) is retried, not the exit 2 of a
// DSN that never worked.
func TestReplicator_RefusedLoginAfterALoginThatNeverStreamedIsRetried(t *testing.T) {
	h := setup(t)
	ctx := context.Background()
	role := h.role(fmt.Sprintf("cdc_login_%d", time.Now().UnixNano()%1e9), "LOGIN REPLICATION")
	h.as(role)
	core, logs := observer.New(zapcore.ErrorLevel)
	r, _ := h.replicator(&unreachableSink{}, nil, zap.New(core), func(*replication.Config) {})
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	retried := func(cause string) func() bool {
		return func() bool {
			for _, e := range logs.FilterMessage("replication interrupted; reconnecting").All() {
				if strings.Contains(fmt.Sprint(e.ContextMap()["error"]), cause) {
					return true
				}
			}
			return false
		}
	}
	eventually(t, "the unreachable ClickHouse retried", retried("connection refused"))
	h.exec(`ALTER ROLE ` + role + ` NOLOGIN`)
	eventually(t, "the refused login retried", retried(`role "`+role+`" is not permitted to log in (SQLSTATE 28000)`))
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v; want nil at the shutdown, the refused login retried until then", err)
	}
}

// unreachableSink is a ClickHouse that cannot be reached: every read of
// what it holds fails as a dial would.
type unreachableSink struct{ fakeSink }

func (*unreachableSink) Written(context.Context, pglogrepl.LSN, pglogrepl.LSN) (*sink.Positions, error) {
	return nil, fmt.Errorf("read event_log columns: dial tcp 127.0.0.1:1: connect: connection refused")
}

// loginRefusedSink is a ClickHouse that refuses the login: every read of what
// it holds fails as the server says so.
type loginRefusedSink struct{ fakeSink }

func (*loginRefusedSink) Written(context.Context, pglogrepl.LSN, pglogrepl.LSN) (*sink.Positions, error) {
	return nil, fmt.Errorf("read event_log columns: %w", &clickhouse.Exception{Code: 192, Name: "UNKNOWN_USER", Message: "Unknown user cdc"})
}

// A standby has logged in to PostgreSQL, not to ClickHouse: a session
// reads what the sink holds only once it has the slot. A ClickHouse login
// refused when it takes over ends Run, as at a first start.
func TestReplicator_StandbyTakingOverFromARefusedClickHouseLoginEndsRun(t *testing.T) {
	h := setup(t)
	ctx := context.Background()
	squatter := takeSlot(t, ctx, h.dsn, 5*time.Second)
	core, logs := observer.New(zapcore.InfoLevel)
	r, _ := h.replicator(&loginRefusedSink{}, nil, zap.New(core), func(*replication.Config) {})
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	eventually(t, "standing by", func() bool { return logs.FilterMessage("slot in use by another connector; standing by").Len() == 1 })
	squatter.Close(ctx)
	select {
	case err := <-done:
		if !sink.IsLoginError(err) || !strings.HasSuffix(err.Error(), "Unknown user cdc") {
			t.Fatalf("Run after taking over with ClickHouse refusing the login: %v; want the refusal", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run still retries a ClickHouse login refused since it took over, 20 s on")
	}
}

// PgBouncer (before 1.23) cannot carry a replication connection: it
// refuses the login, "unsupported startup parameter: replication"
// (SQLSTATE 08P01), or first one of the session settings cdc sends, as
// every time after. A CDC_PG_DSN pointed at it ends Run with that refusal
// at once (cdc exits 2 on it, saying to point the DSN at PostgreSQL
// itself), instead of reconnecting for ever. A role without REPLICATION
// is told apart: 42501, a refused login (above).
func TestReplicator_PoolerRefusingTheReplicationConnectionEndsRun(t *testing.T) {
	h := setup(t)
	u, err := url.Parse(h.dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = testenv.PoolerAddr(t)
	h.dsn = u.String()
	core, logs := observer.New(zapcore.ErrorLevel)
	r, _ := h.replicator(&fakeSink{}, nil, zap.New(core), func(*replication.Config) {})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = r.Run(ctx)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "08P01" || !strings.HasPrefix(pgErr.Message, "unsupported startup parameter: ") {
		t.Fatalf("Run against PgBouncer: %v; want its refusal at once", err)
	}
	if !replication.IsPoolerRefusal(err) || replication.IsLoginError(err) {
		t.Fatalf("IsPoolerRefusal %t, IsLoginError %t for %v; want a pooler's refusal, not a login's", replication.IsPoolerRefusal(err), replication.IsLoginError(err), err)
	}
	if n := logs.FilterMessage("replication interrupted; reconnecting").Len(); n != 0 {
		t.Fatalf("reconnected %d times before giving up", n)
	}
}

// With sslmode=prefer, pgx's default, a server without TLS refuses it and
// pgx logs in again without: what fails then is that login, not TLS. Its
// refusal is joined to the TLS one in the ConnectError, and IsTLSError
// must not take it for TLS that cannot be set up: a database that does not
// exist is a refused login (said as one), and too many connections is an
// outage to retry, not exit 2 over.
func TestIsTLSError_PreferFallingBackWithoutTLS(t *testing.T) {
	h := setup(t)
	ctx := context.Background()
	admin, err := pgconn.Connect(ctx, h.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "DROP ROLE IF EXISTS cdc_tls_nolimit; CREATE ROLE cdc_tls_nolimit LOGIN CONNECTION LIMIT 0").ReadAll(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP ROLE IF EXISTS cdc_tls_nolimit").ReadAll() })
	for _, tc := range []struct {
		name, sslmode, user, database string
		tls, login                    bool
	}{
		{"prefer, database missing", "prefer", "", "cdc_no_such_db", false, true},
		{"prefer, too many connections", "prefer", "cdc_tls_nolimit", "", false, false},
		{"require, refused", "require", "", "", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := url.Parse(h.dsn)
			if err != nil {
				t.Fatal(err)
			}
			q := u.Query()
			q.Set("sslmode", tc.sslmode)
			u.RawQuery = q.Encode()
			if tc.user != "" {
				u.User = url.User(tc.user)
			}
			if tc.database != "" {
				u.Path = "/" + tc.database
			}
			conn, err := pgconn.Connect(ctx, u.String())
			if err == nil {
				conn.Close(ctx)
				t.Fatal("connected; want a refusal")
			}
			if got := replication.IsTLSError(err); got != tc.tls {
				t.Fatalf("IsTLSError = %t for %v; want %t", got, err, tc.tls)
			}
			if got := replication.IsLoginError(err); got != tc.login {
				t.Fatalf("IsLoginError = %t for %v; want %t", got, err, tc.login)
			}
		})
	}
}

// PgBouncer sends SQLSTATE 08P01 for a startup parameter it does not take,
// a DSN that can never work, and for its own outages, such as a full
// pool: only the first is a pooler's refusal (exit 2); the second is
// retried like any connection failure.
func TestIsPoolerRefusal_TellsAFullPoolerApart(t *testing.T) {
	for _, tc := range []struct {
		name string
		addr func(*testing.T) string
		want bool
	}{
		{"a startup parameter refused", testenv.PoolerAddr, true},
		{"max_client_conn reached", testenv.BusyPoolerAddr, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn, err := pgconn.Connect(ctx, "postgres://cdc@"+tc.addr(t)+"/app?sslmode=disable&replication=database")
			if err == nil {
				conn.Close(ctx)
				t.Fatal("the fake pooler let a login in")
			}
			if got := replication.IsPoolerRefusal(err); got != tc.want {
				t.Fatalf("IsPoolerRefusal = %t for %v; want %t", got, err, tc.want)
			}
		})
	}
}
