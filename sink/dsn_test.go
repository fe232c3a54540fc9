package sink

import (
	"strings"
	"testing"
)

// A DSN parameter one or two edits from one of the client's own options
// is a misspelling, refused before anything connects: clickhouse-go would
// send it to the server as a setting, which every query would then fail
// on. Real settings, however named, pass.
func TestCheckDSN(t *testing.T) {
	for _, tc := range []struct {
		dsn, wantErr string
	}{
		{"clickhouse://u:pw@ch:9000/db?read_timeout=2m&dial_timeout=3s&secure=false", ""},
		{"clickhouse://u:pw@ch:9000/db?max_insert_block_size=100000&insert_quorum=2&readonly=0", ""},
		{"clickhouse://u:pw@ch:9000/db?send_timeout=300&receive_timeout=300&connect_timeout=10", ""}, // settings near options
		{"clickhouse://u:pw@ch:9000/db?compres=lz4", "compres (compress?)"},
		{"clickhouse://u:pw@ch:9000/db?read_timout=2m", "read_timout (read_timeout?): not an option of the ClickHouse client"},
		{"clickhouse://u:pw@ch:9000/db?sucure=true&dail_timeout=5s", "dail_timeout (dial_timeout?), sucure (secure?): not an option"},
		{"clickhouse://u:pw@ch:9000/db?skip_verfy=true", "skip_verfy (skip_verify?)"},
		{"clickhouse://u:pw@ch:9000/db?read_timeout=-1s", "read_timeout -1s must be positive"},
	} {
		err := CheckDSN(tc.dsn)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("CheckDSN(%q) = %v, want an error containing %q", tc.dsn, err, tc.wantErr)
		}
	}
}
