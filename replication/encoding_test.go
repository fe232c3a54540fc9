package replication_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/internal/testenv"
	"github.com/eventcdc/cdc/replication"
)

// A database in an encoding other than UTF8 sends a session its text in
// that encoding unless the session asks for another: a LATIN1 database's
// "café" reached event_log as the LATIN1 bytes "caf\xe9", and its JSON as
// no valid UTF-8, while the application (Django asks for UTF8) wrote
// "café". Every cdc connection now asks for UTF-8. A SQL_ASCII database's
// bytes go as they are (e2e TestFidelity keeps them byte for byte).
func TestReplicator_TextOfALatin1DatabaseArrivesInUTF8(t *testing.T) {
	for _, tc := range []struct {
		name string
		// numeric is a type the decoder reads only as text: the session
		// then asks for text values, not binary ones.
		alter string
	}{
		{"binary values", ""},
		{"text values", `ALTER TABLE outbox ADD COLUMN amount numeric`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := setupOn(t, testenv.Get(t).NewPostgresWith(t, "ENCODING 'LATIN1' TEMPLATE template0 LOCALE 'C'"))
			if tc.alter != "" {
				h.exec(tc.alter)
			}
			s := &fakeSink{}
			_, _, stop := h.start(s, nil, zap.NewNop(), func(*replication.Config) {})
			defer stop()
			// U& escapes name the characters whatever the test's own
			// session's encoding.
			h.exec(`INSERT INTO outbox (event_type, environment, event_context) VALUES (U&'caf\00E9', U&'\00FCber', U&'{"a": "\00E9\00FF"}')`)
			eventually(t, "the event stored", func() bool { return s.count() == 1 })
			s.mu.Lock()
			r := s.rows[0]
			s.mu.Unlock()
			for col, want := range map[string]string{"event_type": "café", "environment": "über", "event_context": `{"a": "éÿ"}`} {
				i := r.Relation.Index(col)
				if i < 0 {
					t.Fatalf("no column %s", col)
				}
				if got := string(r.Values[i].Data); got != want {
					t.Errorf("%s = %q, want %q", col, got, want)
				}
			}
		})
	}
}

// The pools of the other commands ask for UTF-8 too: a LATIN1 database's
// text read by cdc backfill, verify and the dead letters is what the
// stream sends. A MULE_INTERNAL database, which PostgreSQL cannot convert
// to UTF-8 ("Conversion between UTF8 and MULE_INTERNAL is not
// supported"), refused the question, and every connection of every
// command failed; it keeps its own encoding, as SQL_ASCII does.
func TestPoolDefaults_AskForUTF8(t *testing.T) {
	for _, tc := range []struct {
		encoding, wantEncoding, query, want string
	}{
		{"LATIN1", "UTF8", `SELECT U&'caf\00E9'`, "café"},
		{"MULE_INTERNAL", "MULE_INTERNAL", `SELECT 'cafe'`, "cafe"},
	} {
		t.Run(tc.encoding, func(t *testing.T) {
			dsn := testenv.Get(t).NewPostgresWith(t, "ENCODING '"+tc.encoding+"' TEMPLATE template0 LOCALE 'C'")
			cfg, err := pgxpool.ParseConfig(dsn)
			if err != nil {
				t.Fatal(err)
			}
			replication.PoolDefaults(dsn, cfg)
			pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			var enc, word string
			if err := pool.QueryRow(context.Background(), `SELECT current_setting('client_encoding'), (`+tc.query+`)`).Scan(&enc, &word); err != nil {
				t.Fatal(err)
			}
			if enc != tc.wantEncoding || word != tc.want {
				t.Fatalf("client_encoding %s, text %q; want %s, %q", enc, word, tc.wantEncoding, tc.want)
			}
		})
	}
}
