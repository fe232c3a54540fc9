// Command go is the outbox example for Go services: CreateUser inserts a
// user and publishes user_created in the same transaction, so the event
// reaches ClickHouse if and only if the user was created.
//
//	DATABASE_URL=postgres://... go run ./examples/go ada@example.com
//
// The outbox table must exist (`cdc migrate`); the users table is created
// here if missing. APP_ENV names the environment events are published in
// (default "dev").
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventcdc/cdc/outbox"
)

// UserCreated is the payload of the user_created event.
type UserCreated struct {
	UserID uuid.UUID `json:"user_id"`
	Email  string    `json:"email"`
}

// events publishes in the environment the service runs in.
var events = outbox.Publisher{Environment: envOr("APP_ENV", "dev")}

// ErrInvalidEmail is returned for an address without an @.
var ErrInvalidEmail = errors.New("invalid email address")

const usersDDL = `CREATE TABLE IF NOT EXISTS users (
	id         uuid        PRIMARY KEY,
	email      text        NOT NULL UNIQUE,
	created_at timestamptz NOT NULL DEFAULT now()
)`

// Migrate creates the users table if it is missing.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	_, err := pool.Exec(ctx, usersDDL)
	return err
}

// CreateUser creates a user and publishes user_created, atomically.
func CreateUser(ctx context.Context, pool *pgxpool.Pool, email string) (uuid.UUID, error) {
	return createUser(ctx, pool, email, nil)
}

// createUser is CreateUser with a step that runs after publishing, inside
// the transaction; the tests use it to fail the use case late.
func createUser(ctx context.Context, pool *pgxpool.Pool, email string, then func(context.Context, pgx.Tx) error) (uuid.UUID, error) {
	email = strings.ToLower(strings.TrimSpace(email))
	if !strings.Contains(email, "@") {
		return uuid.Nil, fmt.Errorf("create user %q: %w", email, ErrInvalidEmail)
	}
	id := uuid.New()
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO users (id, email) VALUES ($1, $2)`, id, email); err != nil {
			return err
		}
		// Same transaction: rolled back with the user if anything fails.
		if err := events.Publish(ctx, tx, outbox.EventOf(UserCreated{UserID: id, Email: email})); err != nil {
			return err
		}
		if then != nil {
			return then(ctx, tx)
		}
		return nil
	})
	if err != nil {
		return uuid.Nil, fmt.Errorf("create user %q: %w", email, err)
	}
	return id, nil
}

func run(ctx context.Context, dsn string, args []string, out io.Writer) error {
	if dsn == "" || len(args) != 1 {
		return errors.New("usage: DATABASE_URL=postgres://... go run ./examples/go EMAIL")
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := Migrate(ctx, pool); err != nil {
		return err
	}
	id, err := CreateUser(ctx, pool, args[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "created user %s and published user_created\n", id)
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func main() {
	if err := run(context.Background(), os.Getenv("DATABASE_URL"), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
