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

	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/replication"
)

// A publication that publishes tables besides the outbox is refused at
// the start, naming them: their rows would reach event_log as events.
func TestReplicator_PublicationOfOtherTablesIsRefused(t *testing.T) {
	h := setup(t)
	h.exec(`CREATE TABLE audit_note (id bigint, event_type text)`)
	h.exec(`CREATE SCHEMA "Billing"`)
	h.exec(`CREATE TABLE "Billing".invoice (id bigint)`)
	h.exec(`CREATE TABLE "Billing".outbox (LIKE outbox)`)
	h.exec(`CREATE PUBLICATION no_outbox FOR TABLE audit_note`)
	h.exec(`CREATE PUBLICATION empty`)
	h.exec(`ALTER PUBLICATION pub ADD TABLE audit_note, "Billing".invoice, "Billing".outbox`)
	for _, tc := range []struct{ publication, want string }{
		{"pub", `publication "pub" publishes "Billing".invoice, "Billing".outbox, public.audit_note besides public.outbox: `},
		{"no_outbox", `publication "no_outbox" does not publish the outbox table: `},
		{"empty", `publication "empty" does not publish the outbox table: `},
	} {
		r, _ := h.replicator(&fakeSink{}, nil, zap.NewNop(), func(c *replication.Config) { c.Publication = tc.publication })
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := r.Run(ctx)
		cancel()
		if !errors.Is(err, replication.ErrPublicationTables) {
			t.Fatalf("%s: Run = %v, want ErrPublicationTables", tc.publication, err)
		}
		if !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("error %q does not start with %q", err, tc.want)
		}
	}
}

// A publication of the outbox that does not publish inserts (made with
// publish = 'update', or altered since migrate made it) is refused at the
// start: the slot would pass every event unseen, and confirm past them.
func TestReplicator_PublicationWithoutInsertsIsRefused(t *testing.T) {
	h := setup(t)
	h.exec(`CREATE PUBLICATION updates_only FOR TABLE outbox WITH (publish = 'update, delete')`)
	h.exec(`ALTER PUBLICATION pub SET (publish = 'truncate')`)
	for _, publication := range []string{"updates_only", "pub"} {
		r, _ := h.replicator(&fakeSink{}, nil, zap.NewNop(), func(c *replication.Config) { c.Publication = publication })
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := r.Run(ctx)
		cancel()
		want := "publication does not publish inserts, the only changes cdc ships: the outbox's events would pass the slot unseen; make it publish them (ALTER PUBLICATION … SET (publish = 'insert')) (publication \"" + publication + "\")"
		if !errors.Is(err, replication.ErrPublicationInserts) || err.Error() != want {
			t.Fatalf("%s: Run = %v, want %q", publication, err, want)
		}
	}
}

// A slot whose WAL holds a stretch where its publication did not exist
// (dropped, then made again: an earlier attempt's clean-up, a "reset", or
// `cdc migrate` after cdc run exited for want of it) cannot pass that
// stretch: pgoutput looks the publication up as the catalog was at each
// change, and fails `publication "pub" does not exist` for ever. cdc run
// reconnected every fraction of a second, streaming nothing, while the
// publication plainly existed. It exits naming the way out: a new slot,
// and a backfill of what the gap held.
func TestReplicator_PublicationMissingInTheSlotsWALIsRefused(t *testing.T) {
	for _, tc := range []struct {
		name      string
		streaming bool // dropped while cdc streams, rather than while it is stopped
	}{
		{"dropped and made again while cdc was stopped", false},
		{"dropped while cdc streamed, made again by migrate", true},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			h := setup(t)
			s := &fakeSink{}
			r, _ := h.replicator(s, nil, zap.NewNop(), func(*replication.Config) {})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			done := make(chan error, 1)
			if tc.streaming {
				go func() { done <- r.Run(ctx) }()
				h.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('before', 'test', '{}')`)
				eventually(t, "the first event stored", func() bool { return s.count() == 1 })
			}
			h.exec(`DROP PUBLICATION pub`)
			h.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('in the gap', 'test', '{}')`)
			h.exec(`CREATE PUBLICATION pub FOR TABLE outbox WITH (publish = 'insert')`)
			h.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('after', 'test', '{}')`)
			if !tc.streaming {
				go func() { done <- r.Run(ctx) }()
			}
			err := <-done
			want := "the slot's WAL holds changes made while its publication did not exist (dropped, or dropped and made again, after the slot was made), which PostgreSQL cannot decode: " +
				"cdc cannot stream from this slot again; stop every cdc run for it, drop it (SELECT pg_drop_replication_slot('slot')) and run `cdc migrate`, " +
				"then ship what was committed since the publication was dropped with `cdc backfill` (docs/operations.md, Slot invalidated, steps 2 to 7) (publication \"pub\"): " +
				"ERROR: publication \"pub\" does not exist (SQLSTATE 42704)"
			if !errors.Is(err, replication.ErrPublicationGap) || err.Error() != want {
				t.Fatalf("Run = %v, want %q", err, want)
			}
		})
	}
}

// Two replicas started at once over a missing slot, or one started while
// a migrate makes it: the look at the slot may find it being made,
// listed before PostgreSQL names its plugin. cdc run took it for another
// plugin's slot and exited 1 (a restart in a crash loop's count). It
// stands by, looks again, and streams. Here the first look is shown the
// slot as PostgreSQL lists it in that moment.
func TestReplicator_ASlotBeingMadeIsWaitedFor(t *testing.T) {
	h := setup(t)
	h.exec(`CREATE SEQUENCE slot_looks`)
	defer replication.SetSlotPluginColumn(`CASE WHEN nextval('slot_looks') = 1 THEN ''::name ELSE plugin END`)()
	s := &fakeSink{}
	stop := h.run(s)
	defer stop()
	h.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('after the wait', 'test', '{}')`)
	eventually(t, "the event stored", func() bool { return s.count() == 1 })
	var looks int64
	if err := h.pool.QueryRow(context.Background(), `SELECT last_value FROM slot_looks`).Scan(&looks); err != nil || looks < 2 {
		t.Fatalf("the slot was looked at %d times (%v); want the look that found it being made, and another", looks, err)
	}
}

// Rows of a table added to the publication while cdc runs are not
// shipped, and the outbox rows around them keep the positions they would
// have with that table's rows counted: a replay from before the table
// was added places them the same.
func TestReplicator_RowsOfAnotherTableAreNotShipped(t *testing.T) {
	h := setup(t)
	h.exec(`CREATE TABLE audit_note (id bigint, event_type text)`)
	h.exec(`CREATE SCHEMA other`)
	h.exec(`CREATE TABLE other.outbox (LIKE outbox INCLUDING DEFAULTS)`)
	core, logs := observer.New(zapcore.WarnLevel)
	s := &fakeSink{}
	stop := h.runWith(s, zap.New(core), func(*replication.Config) {})
	defer stop()
	h.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('before', 'test', '{}')`)
	eventually(t, "the first event stored", func() bool { return s.count() == 1 })
	h.exec(`ALTER PUBLICATION pub ADD TABLE audit_note, other.outbox`)
	h.exec(`BEGIN;
		INSERT INTO outbox (event_type, environment, event_context) VALUES ('a', 'test', '{}');
		INSERT INTO audit_note VALUES (1, 'not an event');
		INSERT INTO outbox (event_type, environment, event_context) VALUES ('b', 'test', '{}');
		COMMIT`)
	h.exec(`INSERT INTO audit_note VALUES (2, 'not an event either')`)
	h.exec(`INSERT INTO other.outbox (event_type, environment, event_context) VALUES ('another schema''s', 'test', '{}')`)
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
	for _, table := range []string{"public.audit_note", "other.outbox"} {
		if n := logs.FilterMessageSnippet("a table other than the outbox").FilterField(zap.String("table", table)).Len(); n != 1 {
			t.Errorf("%d warnings about %s, want 1", n, table)
		}
	}
}

// An outbox moved to another schema is still the outbox: the publication
// follows it by oid, so its rows keep coming, those written before the
// move under the old schema's name. They are all events, whether the move
// came before the session began (a replay) or while it ran.
func TestReplicator_OutboxMovedToAnotherSchemaIsStillShipped(t *testing.T) {
	const insert = `INSERT INTO %s.outbox (event_type, environment, event_context) VALUES ('%s', 'test', '{}')`
	for _, tc := range []struct {
		name  string
		move  string
		after string // the schema the row after the move comes under
	}{
		{"set schema", `CREATE SCHEMA app; ALTER TABLE public.outbox SET SCHEMA app`, "app"},
		// The table itself did not change: PostgreSQL sends its
		// Relation message once, with the old name.
		{"schema renamed", `ALTER SCHEMA public RENAME TO app`, "public"},
	} {
		for _, live := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, live %v", tc.name, live), func(t *testing.T) {
				h := setup(t)
				core, logs := observer.New(zapcore.WarnLevel)
				s := &fakeSink{}
				var stop func()
				if live {
					stop = h.runWith(s, zap.New(core), func(*replication.Config) {})
					defer func() { stop() }()
				}
				h.exec(fmt.Sprintf(insert, "public", "before"))
				if live {
					eventually(t, "the first event stored", func() bool { return s.count() == 1 })
				}
				h.exec(tc.move)
				h.exec(fmt.Sprintf(insert, "app", "after"))
				end := h.lsn(`SELECT pg_current_wal_lsn()::text`)
				if !live {
					stop = h.runWith(s, zap.New(core), func(*replication.Config) {})
					defer func() { stop() }()
				}
				eventually(t, "the slot confirmed past both events", func() bool { return h.confirmed() >= end })

				s.mu.Lock()
				var got []string
				for _, row := range byPosition(s.rows) {
					got = append(got, fmt.Sprintf("%s.%s %s", row.Relation.Namespace, row.Relation.Name,
						row.Values[row.Relation.Index("event_type")].Data))
				}
				s.mu.Unlock()
				want := []string{"public.outbox before", tc.after + ".outbox after"}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("stored %q, want %q", got, want)
				}
				if n := logs.FilterMessageSnippet("a table other than the outbox").Len(); n != 0 {
					t.Errorf("%d warnings that the outbox is another table", n)
				}
			})
		}
	}
}

// A publication that stops publishing the outbox while cdc streams ends
// the session within a check, after what it holds is stored; the next
// session's start then refuses the publication, or goes on with an outbox
// made again and published again. Without the check the session streamed
// on with nothing to decode, and the lag read zero.
func TestReplicator_OutboxLeavingThePublicationIsNoticed(t *testing.T) {
	defer replication.SetPublicationCheckEvery(100 * time.Millisecond)()
	const insert = `INSERT INTO outbox (event_type, environment, event_context) VALUES ('%s', 'test', '{}')`
	const remake = `CREATE TABLE outbox_new (LIKE outbox INCLUDING ALL); DROP TABLE outbox; ALTER TABLE outbox_new RENAME TO outbox`
	for _, tc := range []struct {
		name    string
		change  string
		refused bool // Run ends with ErrPublicationTables; else it goes on
	}{
		{"dropped from the publication", `ALTER PUBLICATION pub DROP TABLE outbox`, true},
		{"made again, not published", remake, true},
		{"made again and published", remake + `; ALTER PUBLICATION pub ADD TABLE outbox`, false},
		// The old one kept aside, still published: not the outbox.
		{"renamed aside", `CREATE TABLE outbox_new (LIKE outbox INCLUDING ALL); ALTER TABLE outbox RENAME TO outbox_old; ALTER TABLE outbox_new RENAME TO outbox;
			INSERT INTO outbox_old (event_type, environment, event_context) VALUES ('kept aside', 'test', '{}')`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := setup(t)
			core, logs := observer.New(zapcore.InfoLevel)
			s := &fakeSink{}
			r, _ := h.replicator(s, nil, zap.New(core), func(*replication.Config) {})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- r.Run(ctx) }()

			h.exec(fmt.Sprintf(insert, "before"))
			eventually(t, "the first event stored", func() bool { return s.count() == 1 })
			h.exec(tc.change)
			if tc.refused {
				select {
				case err := <-done:
					if !errors.Is(err, replication.ErrPublicationTables) {
						t.Fatalf("Run = %v, want ErrPublicationTables", err)
					}
				case <-time.After(20 * time.Second):
					t.Fatal("Run still runs 20 s after the outbox left the publication")
				}
			} else {
				eventually(t, "a new session", func() bool {
					return logs.FilterMessage("reconnecting to look at the publication again").Len() == 1
				})
				h.exec(fmt.Sprintf(insert, "after"))
				eventually(t, "the event in the new outbox stored", func() bool { return s.count() == 2 })
				cancel()
				if err := <-done; err != nil {
					t.Fatalf("Run = %v", err)
				}
			}
			if n := logs.FilterMessageSnippet("no longer publishes the outbox table").Len(); n != 1 {
				t.Errorf("%d warnings that the publication lost the outbox, want 1", n)
			}
			s.mu.Lock()
			var got []string
			for _, row := range byPosition(s.rows) {
				got = append(got, string(row.Values[row.Relation.Index("event_type")].Data))
			}
			s.mu.Unlock()
			want := []string{"before"}
			if !tc.refused {
				want = append(want, "after")
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("stored %q, want %q", got, want)
			}
		})
	}
}

// A role with no USAGE on the schema of a table the publication publishes
// still reads the publication's tables (the catalogs need none): another
// table is refused, and an outbox in such a schema streams.
func TestReplicator_PublicationCheckNeedsNoUsageOnItsSchemas(t *testing.T) {
	h := setup(t)
	h.exec(`CREATE SCHEMA secret`)
	h.exec(`CREATE TABLE secret.t (id bigint)`)
	h.exec(`CREATE PUBLICATION with_secret FOR TABLE outbox, secret.t`)
	h.as(h.role(fmt.Sprintf("cdc_nousage_%d", time.Now().UnixNano()%1e9), "LOGIN REPLICATION"))

	r, _ := h.replicator(&fakeSink{}, nil, zap.NewNop(), func(c *replication.Config) { c.Publication = "with_secret" })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	err := r.Run(ctx)
	cancel()
	if !errors.Is(err, replication.ErrPublicationTables) || !strings.HasPrefix(err.Error(), `publication "with_secret" publishes secret.t besides public.outbox: `) {
		t.Fatalf("Run = %v, want ErrPublicationTables naming secret.t", err)
	}

	h.exec(`ALTER TABLE outbox SET SCHEMA secret`)
	h.exec(`INSERT INTO secret.outbox (event_type, environment, event_context) VALUES ('hidden', 'test', '{}')`)
	s := &fakeSink{}
	stop := h.run(s)
	defer stop()
	eventually(t, "the event stored", func() bool { return s.count() == 1 })
}

// A publication that sends the outbox only in part (PostgreSQL 15's
// column lists and row filters) is streamed as it is, and said once in a
// warning, not at every session: a column left out lands as its default,
// a row filtered out never lands, and either may be meant.
func TestReplicator_PublicationOfPartOfTheOutboxIsSaidOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		// set changes the publication; it returns the fields the
		// warnings want, "" for none.
		set    func(h *harness) (left, filter, also string)
		stored int // of the first two events, one in environment 'prod'
	}{
		{
			name:   "the whole outbox",
			set:    func(*harness) (string, string, string) { return "", "", "" },
			stored: 2,
		},
		{
			// Not wrong, only wasted: the UPDATE and DELETE below are
			// sent, and must not reach the sink.
			name: "every change",
			set: func(h *harness) (string, string, string) {
				h.exec(`ALTER PUBLICATION pub SET (publish = 'insert, update, delete, truncate')`)
				return "", "", "update, delete, truncate"
			},
			stored: 2,
		},
		{
			name: "a column list without metadata_version",
			set: func(h *harness) (string, string, string) {
				var cols string
				if err := h.pool.QueryRow(context.Background(), `SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
					WHERE attrelid = 'outbox'::regclass AND attnum > 0 AND NOT attisdropped AND attname <> 'metadata_version'`).Scan(&cols); err != nil {
					h.t.Fatal(err)
				}
				h.exec(`ALTER PUBLICATION pub SET TABLE outbox (` + cols + `)`)
				return "metadata_version", "", ""
			},
			stored: 2,
		},
		{
			name: "a row filter",
			set: func(h *harness) (string, string, string) {
				h.exec(`ALTER PUBLICATION pub SET TABLE outbox WHERE (environment = 'prod')`)
				return "", "(environment = 'prod'::text)", ""
			},
			stored: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := setup(t)
			left, filter, also := tc.set(h)
			core, logs := observer.New(zapcore.WarnLevel)
			s := &fakeSink{}
			rep, _, stop := h.start(s, nil, zap.New(core), func(*replication.Config) {})
			defer stop()
			h.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('a', 'prod', '{}'), ('b', 'test', '{}')`)
			h.exec(`UPDATE outbox SET event_type = 'updated' WHERE event_type = 'a'`)
			h.exec(`DELETE FROM outbox WHERE event_type = 'b'`)
			h.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('c', 'prod', '{}')`)
			eventually(t, "the last event stored", func() bool { return s.count() == tc.stored+1 })
			// A second session looks again, and says nothing new.
			h.exec(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'slot' AND active_pid IS NOT NULL`)
			eventually(t, "a second session", func() bool {
				return logs.FilterMessage("replication interrupted; reconnecting").Len() == 1 && rep.State().Streaming()
			})
			h.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('d', 'prod', '{}')`)
			eventually(t, "the event after it stored", func() bool { return s.count() == tc.stored+2 })
			// The UPDATE and DELETE came before c and d: had either
			// reached the sink, it would be counted and named here.
			wantTypes := map[string]int{"a": 1, "c": 1, "d": 1}
			if tc.stored == 2 {
				wantTypes["b"] = 1
			}
			if got := s.types(); fmt.Sprint(got) != fmt.Sprint(wantTypes) {
				t.Errorf("stored event types %v, want %v", got, wantTypes)
			}

			var got []string
			for _, e := range logs.All() {
				switch e.Message {
				case "replication interrupted; reconnecting":
				case "the publication leaves columns of the outbox out (a column list): event_log gets their columns' defaults":
					got = append(got, fmt.Sprintf("left out %v", e.ContextMap()["columns_left_out"]))
				case "the publication sends only the outbox rows its row filter passes: the others never reach event_log, and cdc backfill and cdc verify leave them out too":
					got = append(got, fmt.Sprintf("filter %v", e.ContextMap()["row_filter"]))
				case "the publication publishes other changes of the outbox besides inserts: cdc ships only inserts, so PostgreSQL decodes and sends these for nothing (outbox retention's DELETEs among them); publish inserts alone (ALTER PUBLICATION … SET (publish = 'insert'))":
					got = append(got, fmt.Sprintf("also %v", e.ContextMap()["also_published"]))
				default:
					t.Errorf("unexpected warning %q %v", e.Message, e.ContextMap())
				}
			}
			var want []string
			if also != "" {
				want = append(want, "also "+also)
			}
			if left != "" {
				want = append(want, "left out "+left)
			}
			if filter != "" {
				want = append(want, "filter "+filter)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("warnings %q, want %q", got, want)
			}
		})
	}
}

// A column added to the outbox while a session streams, through a
// publication with a column list, is left out of every row: PostgreSQL
// sends only the listed columns, so nothing in the stream tells it from
// a column that does not exist, and its event_log column (added first, as
// publishing.md says) gets its default. The look every
// publicationCheckEvery says so within that time, as a session's start
// would, rather than at the next restart.
func TestReplicator_ColumnLeftOutByTheColumnListIsSaidWhileStreaming(t *testing.T) {
	defer replication.SetPublicationCheckEvery(100 * time.Millisecond)()
	h := setup(t)
	h.exec(`ALTER PUBLICATION pub SET TABLE outbox (id, event_type, event_date_time, environment, event_context, metadata_version, traceparent)`)
	core, logs := observer.New(zapcore.WarnLevel)
	s := &fakeSink{}
	defer h.runWith(s, zap.New(core), func(*replication.Config) {})()
	h.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES ('a', 'test', '{}')`)
	eventually(t, "the first event stored", func() bool { return s.count() == 1 })
	h.exec(`ALTER TABLE outbox ADD COLUMN tenant text`)
	h.exec(`INSERT INTO outbox (event_type, environment, event_context, tenant) VALUES ('b', 'test', '{}', 'acme')`)
	eventually(t, "the second event stored", func() bool { return s.count() == 2 })
	leftOut := func() []any {
		var got []any
		for _, e := range logs.FilterMessage("the publication leaves columns of the outbox out (a column list): event_log gets their columns' defaults").All() {
			got = append(got, e.ContextMap()["columns_left_out"])
		}
		return got
	}
	deadline := time.Now().Add(3 * time.Second)
	for len(leftOut()) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := leftOut(); fmt.Sprint(got) != "[tenant]" {
		t.Errorf("column list warnings %v, want [tenant]: the column added while streaming named", got)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.rows[1].Relation.Columns); n != 7 {
		t.Errorf("the second event came with %d columns, want the 7 listed", n)
	}
}

// cdc run over a physical slot of its CDC_SLOT_NAME (a standby's, a base
// backup's) exits naming it as such, not as a slot "of database \"\"".
func TestReplicator_PhysicalSlotOfTheNameIsNamedAsSuch(t *testing.T) {
	h := setup(t)
	slot := testenv.Name("physical")
	h.exec(`SELECT pg_create_physical_replication_slot('` + slot + `')`)
	t.Cleanup(func() { h.exec(`SELECT pg_drop_replication_slot('` + slot + `')`) })
	r, _ := h.replicator(&fakeSink{}, nil, zap.NewNop(), func(c *replication.Config) { c.Slot = slot })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := r.Run(ctx)
	want := "replication slot is not a logical slot of this database (slot " + slot + " is a physical replication slot, a standby's or a base backup's: choose another CDC_SLOT_NAME)"
	if !errors.Is(err, replication.ErrSlotElsewhere) || err.Error() != want {
		t.Fatalf("Run = %v; want %q", err, want)
	}
}
