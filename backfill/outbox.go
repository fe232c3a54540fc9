// Package backfill reads the outbox table itself, not the WAL, for the
// operator commands: Verify compares it with event_log, Ship re-sends its
// rows through the sink, Replay re-sends dead letters. Rows are built exactly
// as the replication stream delivers them — a decoder.Relation and the text
// form of every column — so the sink maps, converts and refuses them the same
// way it does for the connector.
package backfill

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/replication"
	ddl "github.com/eventcdc/cdc/sql"
)

// OutboxTable is the table applications insert events into.
const OutboxTable = ddl.OutboxTable

// OpenPool opens a pool whose sessions print values the way the connector's
// replication session does (replication.TextParams), so a column's text here is
// byte for byte what pgoutput sends.
func OpenPool(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	cfg, err := PoolConfig(dsn)
	if err != nil {
		return nil, err
	}
	return OpenPoolConfig(ctx, cfg)
}

// PoolConfig is the configuration OpenPool opens, for a caller to add
// settings of its own (OpenPoolConfig).
func PoolConfig(dsn string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse postgres dsn: %w", err)
	}
	replication.PoolDefaults(dsn, cfg)
	replication.SetTextParams(cfg.ConnConfig.RuntimeParams)
	return cfg, nil
}

// OpenPoolConfig opens a pool of cfg, made by PoolConfig.
func OpenPoolConfig(ctx context.Context, cfg *pgxpool.Config) (*pgxpool.Pool, error) {
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres pool: %w", err)
	}
	return pool, nil
}

// LoadRelation describes the outbox as pgoutput would: its live columns in
// table order with their type OIDs, primary key columns flagged. The
// publication has no column list, so these are exactly the published
// columns, less generated ones: pgoutput leaves those out (PostgreSQL 18
// can publish them, on a publication option cdc does not set), and the
// connector would store them empty where a backfill stored their values.
func LoadRelation(ctx context.Context, pool *pgxpool.Pool) (*decoder.Relation, error) {
	rows, err := pool.Query(ctx, `
		SELECT c.oid, n.nspname, a.attname, a.atttypid,
		       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary AND a.attnum = ANY(i.indkey))
		FROM pg_attribute a
		JOIN pg_class c ON c.oid = a.attrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
		ORDER BY a.attnum`, OutboxTable)
	if err != nil {
		return nil, fmt.Errorf("read %s columns: %w", OutboxTable, err)
	}
	defer rows.Close()
	rel := &decoder.Relation{Name: OutboxTable}
	for rows.Next() {
		var col decoder.Column
		if err := rows.Scan(&rel.ID, &rel.Namespace, &col.Name, &col.TypeOID, &col.Key); err != nil {
			return nil, fmt.Errorf("read %s columns: %w", OutboxTable, err)
		}
		rel.Columns = append(rel.Columns, col)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s columns: %w", OutboxTable, err)
	}
	if rel.Index("id") < 0 || rel.Index("event_date_time") < 0 {
		return nil, fmt.Errorf("table %s has no id or event_date_time column: run `cdc migrate`", OutboxTable)
	}
	return rel, nil
}

// Published narrows rel to the columns publication sends of the outbox,
// and returns the names it left out. A column list (PostgreSQL 15+,
// CREATE PUBLICATION … FOR TABLE outbox (id, …)) keeps columns from cdc
// run, which never sees them and lets event_log give them its defaults;
// a backfill shipped them all, a column kept out of ClickHouse on purpose
// among them. id and event_date_time stay: the scan pages on them. A
// publication that does not publish the outbox (or an older server)
// leaves rel as it is.
func Published(ctx context.Context, pool *pgxpool.Pool, rel *decoder.Relation, publication string) (*decoder.Relation, []string, error) {
	lists, err := atLeast15(ctx, pool)
	if err != nil {
		return nil, nil, err
	}
	if !lists {
		return rel, nil, nil
	}
	var names []string
	err = pool.QueryRow(ctx, `SELECT attnames FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3`,
		publication, rel.Namespace, rel.Name).Scan(&names)
	if errors.Is(err, pgx.ErrNoRows) {
		return rel, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read the columns publication %s sends of %s: %w", publication, rel.Name, err)
	}
	out := *rel
	out.Columns = nil
	var left []string
	for _, col := range rel.Columns {
		if slices.Contains(names, col.Name) || col.Name == "id" || col.Name == "event_date_time" {
			out.Columns = append(out.Columns, col)
		} else {
			left = append(left, col.Name)
		}
	}
	return &out, left, nil
}

// Querier runs a query of one row: a pool or a connection.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// RowFilter returns the row filter publication applies to the outbox
// (PostgreSQL 15+, CREATE PUBLICATION … FOR TABLE outbox WHERE (…)) as
// PostgreSQL prints it, or "" for none (an older server, or a publication
// that does not publish the outbox). cdc run is sent only the rows it
// passes, on purpose more often than not (one environment's events): a
// backfill that shipped the others would put them in event_log, a
// verify that counted them would call them missing for ever, and cdc
// status that counted them would call them lag.
func RowFilter(ctx context.Context, pool Querier, publication string) (string, error) {
	filters, err := atLeast15(ctx, pool)
	if err != nil || !filters {
		return "", err
	}
	var filter *string
	err = pool.QueryRow(ctx, `
		SELECT t.rowfilter FROM pg_publication_tables t
		JOIN pg_namespace n ON n.nspname = t.schemaname
		JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.tablename
		WHERE t.pubname = $1 AND c.oid = $2::regclass`, publication, OutboxTable).Scan(&filter)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && filter == nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the row filter publication %s applies to %s: %w", publication, OutboxTable, err)
	}
	return *filter, nil
}

// atLeast15 reports whether the server is PostgreSQL 15 or later, whose
// publications may have column lists and row filters.
func atLeast15(ctx context.Context, pool Querier) (bool, error) {
	var v15 bool
	if err := pool.QueryRow(ctx, `SELECT current_setting('server_version_num')::int >= 150000`).Scan(&v15); err != nil {
		return false, fmt.Errorf("read the server version: %w", err)
	}
	return v15, nil
}

// Record is one outbox row: its key, and with Values the text of every
// column of the relation (NULL as decoder.ValueNull). Time is a
// pgtype.Timestamptz because event_date_time may be 'infinity' or
// '-infinity', which no time.Time holds: such a row must still be read (the
// sink refuses its text, and it becomes a dead letter) and must still be a
// key to page on.
type Record struct {
	ID     string
	Time   pgtype.Timestamptz
	Values []decoder.Value
}

// Scanner pages through the outbox rows with Since <= event_date_time <
// Until in (event_date_time, id) order. A zero Since is no lower bound
// (rows at '-infinity' included), a zero Until no upper bound (rows at
// 'infinity' included). It uses keyset pagination, one short query per
// page, so neither a huge table nor a long run holds a snapshot or a
// transaction open. The outbox's index on (event_date_time, id)
// (sql.OutboxIndex) serves every page: it starts where the page before
// ended and reads only its own rows, however many rows share one
// event_date_time.
type Scanner struct {
	pool     *pgxpool.Pool
	rel      *decoder.Relation
	since    time.Time
	until    time.Time
	pageSize int
	maxBytes int // with values: about how many bytes of text a page may hold; 0 for no bound
	values   bool
	filter   string // a publication's row filter (RowFilter), "" for none

	limit    int // rows the next page may hold
	started  bool
	done     bool
	lastTime pgtype.Timestamptz // ±infinity too: the keyset goes on past rows there
	lastID   string
}

// NewScanner returns a scanner of at most pageSize rows per page; with
// values the records carry every column's text, otherwise only id and
// time. With values and maxBytes > 0 a page holds about maxBytes of text as
// well: its row count is sized from the largest row of the page before (the
// first page is one row), and it ends early, after the row that takes it to
// maxBytes, when the rows grow larger than those before.
func NewScanner(pool *pgxpool.Pool, rel *decoder.Relation, since, until time.Time, pageSize, maxBytes int, values bool) *Scanner {
	// In UTC: pgx sends a time.Time for a timestamp parameter (an outbox
	// whose event_date_time has no zone) as its wall clock in its own
	// zone, which for 03:15+02:00 compared 03:15 with the column's UTC
	// wall clocks. A timestamptz parameter takes the instant either way.
	since, until = since.UTC(), until.UTC()
	limit := pageSize
	if values && maxBytes > 0 {
		limit = 1
	}
	return &Scanner{pool: pool, rel: rel, since: since, until: until, pageSize: pageSize, maxBytes: maxBytes, values: values, limit: limit}
}

func (s *Scanner) query() (string, []any) {
	// Qualified names throughout: the text columns are named like the
	// table's, and a bare ORDER BY event_date_time would be ambiguous.
	sel := []string{"o.event_date_time", "o.id::text"}
	if s.values {
		for _, col := range s.rel.Columns {
			// The type's output function, as pgoutput calls it: format's
			// %s. Not a cast to text, which for some types is a function
			// of its own: a bool casts to "true" where pgoutput sends
			// "t", a char(n) drops its padding, an inet adds its /32.
			// num_nulls, not IS NULL: a composite whose fields are all
			// NULL IS NULL, yet is a value, "(,)" to pgoutput.
			c := "o." + pgx.Identifier{col.Name}.Sanitize()
			sel = append(sel, "CASE WHEN num_nulls("+c+") = 1 THEN NULL ELSE format('%s', "+c+") END")
		}
	}
	var args []any
	var where []string
	if !s.since.IsZero() {
		args = append(args, s.since)
		where = append(where, fmt.Sprintf("o.event_date_time >= $%d", len(args)))
	}
	if !s.until.IsZero() {
		args = append(args, s.until)
		where = append(where, fmt.Sprintf("o.event_date_time < $%d", len(args)))
	}
	if s.filter != "" {
		where = append(where, "("+s.filter+")")
	}
	if s.started {
		// The rows after the last one read: (event_date_time, id) >= its
		// key, but not it. Not "> its key", which PostgreSQL estimates by
		// event_date_time > its time alone, leaving out the rest of its
		// group of rows sharing that time. Told that only the few rows after
		// the group match, the planner reads them all with a bitmap scan and
		// sorts them, the rest of a 50,000-row group for a page of 1000,
		// rather than walking the index for one page. Counting the group in,
		// it walks the index.
		args = append(args, s.lastTime, s.lastID)
		where = append(where, fmt.Sprintf("(o.event_date_time, o.id) >= ($%d, $%d::uuid) AND o.id <> $%[2]d::uuid", len(args)-1, len(args)))
	}
	filter := ""
	if len(where) > 0 {
		filter = " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, s.limit)
	return fmt.Sprintf("SELECT %s FROM %s o%s ORDER BY o.event_date_time, o.id LIMIT $%d",
		strings.Join(sel, ", "), pgx.Identifier{OutboxTable}.Sanitize(), filter, len(args)), args
}

// Filter makes the scan read only the rows expr passes: a publication's
// row filter, as RowFilter returns it (its columns unqualified, which in
// the scan's query name the outbox's). A row the filter makes NULL is left
// out, as pgoutput leaves it out. Call it before the first Next.
func (s *Scanner) Filter(expr string) *Scanner {
	s.filter = expr
	return s
}

// Next returns the next page; an empty page means the scan is over.
func (s *Scanner) Next(ctx context.Context) ([]Record, error) {
	if s.done {
		return nil, nil
	}
	q, args := s.query()
	qctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rows, err := s.pool.Query(qctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read %s rows: %w", OutboxTable, err)
	}
	defer rows.Close()
	var page []Record
	largest, bytes, cut := 0, 0, false
	var texts []*string
	if s.values {
		texts = make([]*string, len(s.rel.Columns))
	}
	dest := make([]any, 0, 2+len(texts))
	for rows.Next() {
		var r Record
		dest = append(dest[:0], &r.Time, &r.ID)
		if s.values {
			for i := range texts {
				dest = append(dest, &texts[i])
			}
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("read %s rows: %w", OutboxTable, err)
		}
		if s.values {
			r.Values = make([]decoder.Value, len(texts))
			size := 0
			for i, t := range texts {
				if t == nil {
					r.Values[i] = decoder.Value{Kind: decoder.ValueNull}
				} else {
					r.Values[i] = decoder.Value{Kind: decoder.ValueText, Data: []byte(*t)}
					size += len(*t)
				}
			}
			largest = max(largest, size)
			bytes += size
		}
		page = append(page, r)
		if s.values && s.maxBytes > 0 && bytes >= s.maxBytes {
			// Rows larger than the page before's: the page ends here,
			// and the next starts after this row. The query is
			// cancelled, not drained: rows.Close would read every row
			// up to the LIMIT, sized for the small rows before.
			cut = true
			cancel()
			break
		}
	}
	if err := rows.Err(); err != nil && !cut {
		return nil, fmt.Errorf("read %s rows: %w", OutboxTable, err)
	}
	if len(page) < s.limit && !cut {
		s.done = true
	}
	if s.values && s.maxBytes > 0 {
		s.limit = pageRows(s.pageSize, s.maxBytes, largest)
	}
	if len(page) > 0 {
		s.started = true
		s.lastTime, s.lastID = page[len(page)-1].Time, page[len(page)-1].ID
	}
	return page, nil
}

// pageRows is how many rows the next page may hold: about maxBytes of the
// largest row of the page before, at least one, at most maxRows. Backfill
// and replay read pages this way, so a page of large events is not held
// whole while the rows keep their size.
func pageRows(maxRows, maxBytes, largest int) int {
	return max(1, min(maxRows, maxBytes/max(largest, 1)))
}
