package replication_test

import (
	"fmt"
	"testing"
)

// Values arrive in the text form the sink parses, whatever the database
// sets for its sessions: a double with every digit, an interval and a
// bytea in PostgreSQL's default forms, a timestamp in UTC.
func TestReplicator_ValuesKeepTheirTextFormWhateverTheDatabaseSets(t *testing.T) {
	h := setup(t)
	h.exec(`DO $$ BEGIN
		EXECUTE format('ALTER DATABASE %I SET extra_float_digits = 0', current_database());
		EXECUTE format('ALTER DATABASE %I SET IntervalStyle = iso_8601', current_database());
		EXECUTE format('ALTER DATABASE %I SET bytea_output = escape', current_database());
		EXECUTE format('ALTER DATABASE %I SET TimeZone = %L', current_database(), 'Asia/Kolkata');
		EXECUTE format('ALTER DATABASE %I SET DateStyle = %L', current_database(), 'SQL, DMY');
	END $$`)
	h.exec(`ALTER TABLE outbox ADD COLUMN ratio double precision, ADD COLUMN span interval, ADD COLUMN blob bytea`)
	s := &fakeSink{}
	stop := h.run(s)
	defer stop()
	h.exec(`INSERT INTO outbox (event_type, environment, event_context, event_date_time, ratio, span, blob)
		VALUES ('e', 'test', '{}', '2026-12-01 10:00:00.123456+00', 0.1::float8 + 0.2::float8, '1 day 2 hours', '\x00ff'::bytea)`)
	eventually(t, "the event stored", func() bool { return s.count() == 1 })
	s.mu.Lock()
	row := s.rows[0]
	s.mu.Unlock()
	var got []string
	for _, col := range []string{"event_date_time", "ratio", "span", "blob"} {
		got = append(got, string(row.Values[row.Relation.Index(col)].Data))
	}
	want := []string{"2026-12-01 10:00:00.123456+00", "0.30000000000000004", "1 day 02:00:00", `\x00ff`}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("values %q, want %q", got, want)
	}
}
