package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/outbox/outboxtest"
	ddl "github.com/eventcdc/cdc/sql"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// setup returns a pool on a fresh database migrated like production: the
// outbox by cdc's DDL, the users table by the example.
func setup(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	ctx := context.Background()
	dsn := testenv.Get(t).NewPostgres(t)
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := ddl.MigratePostgres(ctx, pool, "cdc_outbox", io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	return pool, dsn
}

func countRows(t *testing.T, pool *pgxpool.Pool, table string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM `+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCreateUser_CommitPublishesExactlyOneEvent(t *testing.T) {
	ctx := context.Background()
	pool, _ := setup(t)
	id, err := CreateUser(ctx, pool, " Ada@Example.com ")
	if err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, pool, "outbox"); n != 1 {
		t.Fatalf("outbox has %d rows, want 1", n)
	}
	var typ, env, ctxText string
	var version int64
	var traceparent *string
	err = pool.QueryRow(ctx, `SELECT event_type, environment, event_context::text, metadata_version, traceparent FROM outbox`).
		Scan(&typ, &env, &ctxText, &version, &traceparent)
	if err != nil {
		t.Fatal(err)
	}
	if typ != "user_created" || env != events.Environment || version != 1 || traceparent != nil {
		t.Errorf("row = %s/%s/v%d/%v, want user_created/%s/v1/NULL", typ, env, version, traceparent, events.Environment)
	}
	var payload UserCreated
	if err := json.Unmarshal([]byte(ctxText), &payload); err != nil {
		t.Fatalf("context %s: %v", ctxText, err)
	}
	if payload.UserID != id || payload.Email != "ada@example.com" {
		t.Errorf("context = %s, want user %s ada@example.com", ctxText, id)
	}
	var email string
	if err := pool.QueryRow(ctx, `SELECT email FROM users WHERE id = $1`, id).Scan(&email); err != nil || email != "ada@example.com" {
		t.Errorf("user row: %q, %v", email, err)
	}
}

func TestCreateUser_FailureAfterPublishingPublishesNothing(t *testing.T) {
	ctx := context.Background()
	pool, _ := setup(t)
	boom := errors.New("welcome credit service down")
	_, err := createUser(ctx, pool, "bob@example.com", func(ctx context.Context, tx pgx.Tx) error {
		// The event is in the outbox inside the transaction...
		if got := outboxtest.Published(t, ctx, tx); len(got) != 1 || got[0].Type != "user_created" {
			t.Errorf("inside the transaction: %+v, want one user_created", got)
		}
		return boom // ...and the use case fails after publishing.
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
	if n := countRows(t, pool, "outbox"); n != 0 {
		t.Errorf("outbox has %d rows after the rollback, want 0", n)
	}
	if n := countRows(t, pool, "users"); n != 0 {
		t.Errorf("users has %d rows after the rollback, want 0", n)
	}
}

func TestCreateUser_DuplicateEmailPublishesNothingMore(t *testing.T) {
	ctx := context.Background()
	pool, _ := setup(t)
	if _, err := CreateUser(ctx, pool, "carol@example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := CreateUser(ctx, pool, "carol@example.com"); err == nil || !strings.Contains(err.Error(), "users_email_key") {
		t.Fatalf("second CreateUser: %v, want the unique violation", err)
	}
	if _, err := CreateUser(ctx, pool, "no-at-sign"); !errors.Is(err, ErrInvalidEmail) {
		t.Fatalf("invalid email: %v", err)
	}
	if n := countRows(t, pool, "outbox"); n != 1 {
		t.Errorf("outbox has %d rows, want 1", n)
	}
}

func TestRun(t *testing.T) {
	_, dsn := setup(t)
	var out bytes.Buffer
	if err := run(context.Background(), dsn, []string{"dora@example.com"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "published user_created") {
		t.Errorf("output %q", out.String())
	}
	if err := run(context.Background(), "", nil, &out); err == nil {
		t.Error("run without DATABASE_URL: want usage error")
	}
}
