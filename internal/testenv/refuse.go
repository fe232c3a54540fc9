package testenv

import (
	"context"
	"fmt"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// RefuseVersionInPlainEventLog makes conn's event_log, as migrated, a
// plain MergeTree that refuses the row of metadata_version version: a
// column whose default ClickHouse cannot compute for that row alone
// (CANNOT_PARSE_TEXT), so the refusal comes in the block holding it,
// after the blocks before went out. Plain, not a ReplacingMergeTree, so
// that no merge collapses raw duplicates before a test counts them.
func RefuseVersionInPlainEventLog(t testing.TB, conn driver.Conn, version int) {
	t.Helper()
	for _, q := range []string{
		"CREATE TABLE event_log_plain AS event_log ENGINE = MergeTree() ORDER BY cdc_seq",
		"DROP TABLE event_log",
		"RENAME TABLE event_log_plain TO event_log",
		fmt.Sprintf("ALTER TABLE event_log ADD COLUMN chk UInt8 DEFAULT toUInt8(if(metadata_version = %d, 'x', '1'))", version),
	} {
		if err := conn.Exec(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}
