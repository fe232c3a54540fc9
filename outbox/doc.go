// Package outbox publishes events through the transactional outbox that the
// cdc sidecar streams to ClickHouse.
//
// An application publishes an event by inserting a row into the outbox
// table inside the same PostgreSQL transaction as the business change it
// describes. The event then reaches ClickHouse if, and only if, the
// transaction commits: a rolled-back transaction publishes nothing, and a
// committed one cannot lose its events. The outbox table itself comes from
// `cdc migrate` (sql/postgres.sql); this package only inserts into it.
//
// One call does it, inside the caller's pgx transaction:
//
//	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
//		if _, err := tx.Exec(ctx, `INSERT INTO users (id, email) VALUES ($1, $2)`, id, email); err != nil {
//			return err
//		}
//		return outbox.Publish(ctx, tx, outbox.Event{
//			Type:        "user_created",
//			Context:     map[string]any{"user_id": id, "email": email},
//			Environment: "prod",
//		})
//	})
//
// A [Publisher] holds the settings shared by every call, so that call sites
// need not repeat them:
//
//	var events = outbox.Publisher{Environment: os.Getenv("APP_ENV")}
//	err := events.Publish(ctx, tx, outbox.EventOf(UserCreated{UserID: id}))
//
// [EventOf] derives the event type from the Go type name in snake_case
// (UserCreated → "user_created"; see [TypeName]).
//
// # Event fields
//
//   - Type (event_type) is required.
//   - Context (event_context) is any value encoding/json can marshal, or
//     pre-encoded JSON as json.RawMessage or []byte, which is validated and
//     then stored byte for byte, never re-encoded. A context larger than
//     [Publisher].MaxContextBytes (default [DefaultMaxContextBytes], 64 MiB)
//     is refused.
//   - Environment (environment) is required: the event's own, or else the
//     Publisher's. The package-level [Publish] has no default, so every event
//     must name its environment there.
//   - ID (id) defaults to a new UUIDv7 made on the client, so that
//     [PublishIDs] can return it whichever way the rows were written.
//   - Time (event_date_time) defaults to the database's now(), the start of
//     the transaction. PostgreSQL keeps microseconds.
//   - MetadataVersion (metadata_version) defaults to 1; 0 means "unset".
//   - Traceparent (traceparent) is an optional W3C trace context header
//     value, 00-<32 hex>-<16 hex>-<2 hex>; empty stores NULL.
//
// # Validation
//
// Every event is checked before anything is sent to the database, so a bad
// event never aborts the caller's transaction halfway. A validation error is
// an [*EventError] that names the event's index and type; it matches
// [ErrInvalidEvent] and the specific sentinel (for example
// [ErrInvalidTraceparent]) under errors.Is.
//
// # How rows are written
//
// A few events go in one INSERT statement; many (or many bytes of them) go
// through COPY, see [Publish]. Both run on the [Tx] given, which pgx.Tx,
// *pgx.Conn, *pgxpool.Pool and *pgxpool.Conn all satisfy. Pass a
// transaction: on a pool or a bare connection each statement commits by
// itself, which defeats the point of an outbox.
//
// Tests of business logic can use outboxtest.Recorder as the Tx to capture
// published events without a database, or outboxtest.Published to read back
// what a real transaction wrote.
package outbox
