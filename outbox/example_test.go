package outbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventcdc/cdc/outbox"
)

// UserCreated is an event payload; its event type is "user_created".
type UserCreated struct {
	UserID uuid.UUID `json:"user_id"`
	Email  string    `json:"email"`
}

// Publish an event in the same transaction as the change it describes: it
// reaches ClickHouse only if the transaction commits.
func ExamplePublish() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		panic(err)
	}
	defer pool.Close()

	userID := uuid.New()
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO users (id, email) VALUES ($1, $2)`, userID, "ada@example.com"); err != nil {
			return err
		}
		return outbox.Publish(ctx, tx, outbox.Event{
			Type:        "user_created",
			Context:     UserCreated{UserID: userID, Email: "ada@example.com"},
			Environment: "prod",
		})
	})
	if err != nil {
		panic(err)
	}
}

// A Publisher supplies the environment (and the context size limit) for
// every event it publishes; EventOf derives the type from the Go type.
func ExamplePublisher() {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		panic(err)
	}
	defer conn.Close(ctx)

	events := outbox.Publisher{Environment: "staging"}
	tx, err := conn.Begin(ctx)
	if err != nil {
		panic(err)
	}
	defer tx.Rollback(ctx) // does nothing once committed

	ev := outbox.EventOf(UserCreated{UserID: uuid.New(), Email: "grace@example.com"})
	ev.Traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ids, err := events.PublishIDs(ctx, tx,
		ev,
		// Pre-encoded JSON is stored byte for byte.
		outbox.Event{Type: "audit_logged", Context: json.RawMessage(`{"action": "signup"}`)},
	)
	if err != nil {
		panic(err)
	}
	if err := tx.Commit(ctx); err != nil {
		panic(err)
	}
	fmt.Println("published", len(ids), "events")
}

func ExampleEventOf() {
	ev := outbox.EventOf(UserCreated{Email: "ada@example.com"})
	fmt.Println(ev.Type)
	// Output: user_created
}

type HTTPRequestFailed struct{ Status int }

func ExampleTypeName() {
	fmt.Println(outbox.TypeName(HTTPRequestFailed{Status: 502}))
	fmt.Println(outbox.TypeName(&UserCreated{}))
	// Output:
	// http_request_failed
	// user_created
}
