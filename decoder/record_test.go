//go:build record

package decoder

// Recording testdata/pgoutput.bin from a real PostgreSQL 15.
//
// The recorded-stream tests decode bytes a real pgoutput produced, so the
// decoder is checked against the server rather than against our reading of
// the docs. To record them again (say, for a new PostgreSQL version), from
// the repository root:
//
//	eval "$(scripts/localdb.sh start /tmp/dec-pg | sed 's/^/export /')"
//	go test -tags record ./decoder/ -run TestRecordedStream -record
//	scripts/localdb.sh stop /tmp/dec-pg
//
// The build tag keeps pgx out of the everyday test and fuzz binaries (the
// fuzzer's coverage bookkeeping grows with every linked package); the flag
// keeps `go test -tags record ./...` from rewriting testdata by accident.
// -record creates a scratch database on the server at CDC_PG_DSN (a
// superuser DSN), applies sql/postgres.sql to it, widens the publication to
// every operation so Update, Delete and Truncate show up too, runs the
// statements in recordStatements against a fresh pgoutput slot and saves
// what pg_logical_slot_get_binary_changes returns. LSNs, xids, OIDs and
// commit times differ on every recording: the test then logs the decoded
// stream, and recordedStream in recorded_test.go must be updated from it.

import (
	"context"
	"encoding/binary"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

var record = flag.Bool("record", false, "record testdata/pgoutput.bin from the PostgreSQL 15 at CDC_PG_DSN")

func init() {
	maybeRecord = func(t *testing.T) {
		if *record {
			recordStream(t)
			logStream(t, readRecorded(t))
		}
	}
}

const (
	recordDB   = "decoder_record"
	recordSlot = "decoder_record"
	recordPub  = "decoder_pub"
)

// recordStatements are run one transaction each, in order. The event ids and
// times are fixed so the recorded values are the same on every recording.
var recordStatements = []string{
	`INSERT INTO outbox (id, event_type, event_date_time, environment, event_context, traceparent) VALUES
	    ('0195a8e2-7c3d-7a10-9b4e-3f2d1c0b0a01', 'order.created', '2025-03-01 12:00:00.123456+00', 'production',
	     '{"order_id": 42, "customer": "c-17", "total": "19.99"}', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'),
	    ('0195a8e2-7c3d-7a10-9b4e-3f2d1c0b0a02', 'order.paid', '2025-03-01 12:00:01+00', 'production',
	     '{"order_id": 42, "amount": "19.99"}', NULL)`,
	`UPDATE outbox SET environment = 'staging' WHERE id = '0195a8e2-7c3d-7a10-9b4e-3f2d1c0b0a01'`,
	`DELETE FROM outbox WHERE id = '0195a8e2-7c3d-7a10-9b4e-3f2d1c0b0a02'`,
	`TRUNCATE outbox`,
	`ALTER TABLE outbox ADD COLUMN tenant text`,
	`INSERT INTO outbox (id, event_type, event_date_time, environment, event_context, tenant) VALUES
	    ('0195a8e2-7c3d-7a10-9b4e-3f2d1c0b0a03', 'order.shipped', '2025-03-02 08:30:00+00', 'production',
	     '{"order_id": 42, "carrier": "dhl"}', 'acme')`,
}

func recordStream(t *testing.T) {
	t.Helper()
	dsn := os.Getenv("CDC_PG_DSN")
	if dsn == "" {
		t.Fatal("-record needs CDC_PG_DSN; scripts/localdb.sh start DIR prints it")
	}
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	dropRecordDB := func() {
		// A database with a slot in it cannot be dropped.
		mustExec(t, admin, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '`+recordSlot+`'`)
		mustExec(t, admin, `DROP DATABASE IF EXISTS `+recordDB+` WITH (FORCE)`)
	}
	dropRecordDB()
	mustExec(t, admin, `CREATE DATABASE `+recordDB)
	defer dropRecordDB()

	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database = recordDB
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	ddl, err := os.ReadFile(filepath.Join("..", "sql", "postgres.sql"))
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, conn, strings.ReplaceAll(string(ddl), "{{.Publication}}", recordPub))
	mustExec(t, conn, `ALTER PUBLICATION `+recordPub+` SET (publish = 'insert, update, delete, truncate')`)
	mustExec(t, conn, `SELECT pg_create_logical_replication_slot('`+recordSlot+`', 'pgoutput')`)
	// Logical decoding reads flushed WAL only; the local server runs with
	// synchronous_commit off, which would leave the last commits out.
	mustExec(t, conn, `SET synchronous_commit = on`)
	for _, stmt := range recordStatements {
		mustExec(t, conn, stmt)
	}
	// pgoutput renders timestamptz text in the decoding session's zone.
	mustExec(t, conn, `SET TimeZone = 'UTC'`)
	rows, err := conn.Query(ctx, `SELECT data FROM pg_logical_slot_get_binary_changes('`+recordSlot+`', NULL, NULL,
		'proto_version', '1', 'publication_names', '`+recordPub+`')`)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			t.Fatal(err)
		}
		out = binary.BigEndian.AppendUint32(out, uint32(len(data)))
		out = append(out, data...)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(recordedFile, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// logStream prints a fresh recording decoded, to update recordedStream from.
func logStream(t *testing.T, msgs [][]byte) {
	d := New()
	for i, data := range msgs {
		m, err := d.Decode(data)
		t.Logf("message %d %q: %s (err %v)", i, data[0], describe(m), err)
	}
}
