package replication_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/eventcdc/cdc/replication"
)

// A publication that publishes tables besides the outbox is refused at
// the start, naming them: their rows would reach event_log as events.
func TestReplicator_PublicationOfOtherTablesIsRefused(t *testing.T) {
	h := setup(t)
	h.exec(`CREATE TABLE audit_note (id bigint, event_type text)`)
	h.exec(`CREATE SCHEMA "Billing"`)
	h.exec(`CREATE TABLE "Billing".invoice (id bigint)`)
	h.exec(`ALTER PUBLICATION pub ADD TABLE audit_note, "Billing".invoice`)
	r, _ := h.replicator(&fakeSink{}, nil, zap.NewNop(), func(*replication.Config) {})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := r.Run(ctx)
	if !errors.Is(err, replication.ErrPublicationTables) {
		t.Fatalf("Run = %v, want ErrPublicationTables", err)
	}
	if want := `publication "pub" publishes "Billing".invoice, public.audit_note: `; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q does not start with %q", err, want)
	}
}

// Rows of a table added to the publication while cdc runs are not
// shipped, and the outbox rows around them keep the positions they would
// have with that table's rows counted: a replay from before the table
// was added places them the same.
func TestReplicator_RowsOfAnotherTableAreNotShipped(t *testing.T) {
	h := setup(t)
	h.exec(`CREATE TABLE audit_note (id bigint, event_type text)`)
	core, logs := observer.New(zapcore.WarnLevel)
	s := &fakeSink{}
	stop := h.runWith(s, zap.New(core), func(*replication.Config) {})
	defer stop()
	h.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('before', 'test', '{}')`)
	eventually(t, "the first event stored", func() bool { return s.count() == 1 })
	h.exec(`ALTER PUBLICATION pub ADD TABLE audit_note`)
	h.exec(`BEGIN;
		INSERT INTO outbox (event_type, environment, event_context) VALUES ('a', 'test', '{}');
		INSERT INTO audit_note VALUES (1, 'not an event');
		INSERT INTO outbox (event_type, environment, event_context) VALUES ('b', 'test', '{}');
		COMMIT`)
	h.exec(`INSERT INTO audit_note VALUES (2, 'not an event either')`)
	h.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('after', 'test', '{}')`)
	eventually(t, "the last event stored", func() bool { return s.count() >= 4 })
	time.Sleep(200 * time.Millisecond) // room for a row that should not come
	s.mu.Lock()
	rows := byPosition(s.rows)
	s.mu.Unlock()

	var got []string
	for _, row := range rows {
		got = append(got, fmt.Sprintf("%s.%s#%d %s", row.Relation.Namespace, row.Relation.Name, row.Pos.Seq,
			row.Values[row.Relation.Index("event_type")].Data))
	}
	want := []string{"public.outbox#1 before", "public.outbox#1 a", "public.outbox#3 b", "public.outbox#1 after"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("stored %q, want %q", got, want)
	}
	if n := logs.FilterMessageSnippet("a table other than the outbox").FilterField(zap.String("table", "public.audit_note")).Len(); n != 1 {
		t.Errorf("%d warnings about public.audit_note, want 1", n)
	}
}
