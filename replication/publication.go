package replication

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/decoder"
	ddl "github.com/eventcdc/cdc/sql"
)

// outboxTable is the outbox a session ships rows of.
type outboxTable struct {
	oid    uint32
	schema string
}

// is reports whether rows of rel are events: rel is named outbox, and it
// is the outbox by its oid or by its schema. The oid, because the
// publication follows the table by oid: an outbox moved to another schema
// (ALTER TABLE … SET SCHEMA, a schema renamed) is still published, its
// rows from before the move are replayed under the old schema's name, and
// those after it come under the new one while a session that began before
// the move runs. The schema, because rows written to an outbox that was
// since dropped and made again carry the old table's oid, and a
// publication FOR ALL TABLES publishes the new one under a new oid. The
// name always: an outbox renamed aside (kept as outbox_old while a new
// one takes its name) is no longer the outbox, though still published.
func (o outboxTable) is(rel *decoder.Relation) bool {
	return rel.Name == ddl.OutboxTable && (rel.ID == o.oid || rel.Namespace == o.schema)
}

// publicationCheckEvery is how often a session looks at what its stream
// does not say (watch).
var publicationCheckEvery = 30 * time.Second

// errPublicationChanged ends a session whose publication no longer
// publishes the outbox it began with; the next session's start looks at
// the publication again (checkPublicationTables).
var errPublicationChanged = errors.New("the publication no longer publishes the outbox table this session began with")

// watch looks every publicationCheckEvery, on a connection of its own,
// until ctx ends, at three things the stream does not say:
//
//   - Whether the publication still publishes the session's outbox. When
//     it does not, it sets s.pubChanged, and the stream ends the session
//     between transactions, storing what it holds. Without it a session
//     streams on in silence after the outbox is dropped (a migration that
//     makes the table again and renames it into place) or renamed aside:
//     no row of it is decoded any more, the slot follows the server's WAL
//     and the lag reads zero. Ended, the session's successor either finds
//     the outbox published again (it goes on with the new table) or exits
//     with ErrPublicationTables or ErrPublicationMissing.
//   - The slot's restart_lsn, into s.restart, up to which the stream
//     forgets the streamed transactions it remembers (forgetPartials).
//   - The outbox columns the publication's column list leaves out, and
//     its row filter (notePublicationSubset): a column added to the
//     outbox while a session streams is left out of its rows unsaid.
//
// A look that fails (the server busy or down) says nothing: the
// replication connection is the one whose failures count.
func (s *stream) watch(ctx context.Context) {
	tick := time.NewTicker(publicationCheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		published, restart, err := s.r.look(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.r.log.Debug("could not look at the publication's tables and the slot", zap.Error(err))
			}
			continue
		}
		s.restart.Store(uint64(restart))
		if !published {
			s.r.log.Warn("the publication no longer publishes the outbox table this session began with (dropped, renamed, or removed from the publication); ending the session to look at the publication again",
				zap.String("publication", s.r.cfg.Publication), zap.Uint32("outbox_oid", s.r.outbox.oid))
			s.pubChanged.Store(true)
			return
		}
	}
}

// connect opens an ordinary connection to PostgreSQL, for a look beside
// the stream; closeConn closes it, waiting at most 2 s.
func (r *Replicator) connect(ctx context.Context) (conn *pgconn.PgConn, closeConn func(), err error) {
	cfg, err := pgconn.ParseConfig(r.cfg.DSN)
	if err != nil {
		return nil, nil, wrapf(err, "parse postgres dsn")
	}
	ConnDefaults(cfg)
	if conn, err = pgconn.ConnectConfig(ctx, cfg); err != nil {
		return nil, nil, err
	}
	return conn, func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer ccancel()
		_ = conn.Close(cctx)
	}, nil
}

// look reports whether the publication publishes the table of the
// session's outbox oid, still named outbox, and the slot's restart_lsn
// (0 when the slot is gone); when it does, it says what the publication
// leaves out of the outbox if that changed (notePublicationSubset).
func (r *Replicator) look(ctx context.Context) (bool, pglogrepl.LSN, error) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	conn, closeConn, err := r.connect(ctx)
	if err != nil {
		return false, 0, wrapf(err, "connect to postgres to look at the publication")
	}
	defer closeConn()
	// Joined by name: pg_publication_tables names its tables; a table
	// dropped meanwhile is then no match rather than a failed cast.
	rows, err := queryRows(ctx, conn, fmt.Sprintf(
		`SELECT (SELECT count(*) FROM pg_publication_tables t
			JOIN pg_namespace n ON n.nspname = t.schemaname
			JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.tablename
			WHERE t.pubname = '%s' AND c.oid = %d AND c.relname = '%s'),
			(SELECT coalesce(restart_lsn, '0/0') FROM pg_replication_slots WHERE slot_name = '%s')`,
		r.cfg.Publication, r.outbox.oid, ddl.OutboxTable, r.cfg.Slot))
	if err != nil {
		return false, 0, wrapf(err, "look up the tables of publication %s", r.cfg.Publication)
	}
	if len(rows) != 1 || len(rows[0]) != 2 {
		return false, 0, fmt.Errorf("look up the tables of publication %s: %d rows", r.cfg.Publication, len(rows))
	}
	var restart pglogrepl.LSN
	if rows[0][1] != "" { // NULL: the slot is gone
		if restart, err = pglogrepl.ParseLSN(rows[0][1]); err != nil {
			return false, 0, wrapf(err, "parse restart_lsn of slot %s", r.cfg.Slot)
		}
	}
	published := rows[0][0] != "0"
	if published {
		// A column added to the outbox (ALTER TABLE outbox ADD COLUMN,
		// a Django migration) is left out by a column list, and the
		// stream, which sends only the listed columns, cannot tell:
		// said here, not at the next session's start.
		_ = r.notePublicationSubset(ctx, conn, r.outbox.oid)
	}
	return published, restart, nil
}
