// Package replication streams outbox inserts from a PostgreSQL pgoutput
// slot into a sink. One goroutine owns the replication connection, the
// decoder and the checkpoint; a second writes batches to the sink. They meet
// through two channels: sealed batches one way, stored positions the other.
// Only a stored batch moves the acknowledged LSN.
package replication

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/metrics"
	"github.com/eventcdc/cdc/sink"
)

// Sink stores batches. ClickHouse today; the interface is what the pipeline
// needs of any store.
type Sink interface {
	// Write stores a batch. Rows refused for their content come back as
	// rejected and the rest are stored; an error means nothing may be
	// assumed stored and the batch will be written again.
	Write(ctx context.Context, b *sink.Batch) ([]sink.Rejected, error)
	// Written returns the positions of rows stored with a commit LSN in
	// [from, to).
	Written(ctx context.Context, from, to pglogrepl.LSN) (*sink.Positions, error)
}

// DeadLetters keeps rows the sink refused.
type DeadLetters interface {
	Put(ctx context.Context, rejected []sink.Rejected) error
	Written(ctx context.Context, from, to pglogrepl.LSN) (*sink.Positions, error)
}

// Config is how the replicator streams and batches.
type Config struct {
	DSN             string // PostgreSQL DSN; replication=database is added
	Slot            string
	Publication     string
	BatchMaxRows    int
	BatchMaxBytes   int
	FlushInterval   time.Duration
	InsertsInFlight int                  // batches stored at once; at least 1
	ReceiveBuffer   int                  // SO_RCVBUF of the replication socket; 0: the kernel's autotuning (pace.go)
	StatusInterval  time.Duration        // standby status cadence; well under wal_sender_timeout
	ReceiveTimeout  time.Duration        // a session that hears nothing from the server for this long ends; 0: never
	ShutdownTimeout time.Duration        // budget for the last flush on shutdown
	Tracer          trace.TracerProvider // a span per batch; nil: no tracing
	// HoldRetention keeps the outbox rows from before a slot a session
	// had to create (the new slot never streams them) from retention on
	// every instance: retention.Hold. It is called with ahead true
	// before the slot is created, and false once it is; only the second
	// must succeed. When it is nil or that call fails, this process keeps
	// the rows itself, for its life only (State.Horizon).
	HoldRetention func(ctx context.Context, ahead bool) error
}

// ErrServerSilent ends a session whose server sent nothing, not even a
// keepalive asked for, for Config.ReceiveTimeout of waiting: the link is
// taken as dead and Run reconnects.
var ErrServerSilent = errors.New("no message from PostgreSQL")

// Replicator runs the pipeline and reconnects when PostgreSQL goes away.
type Replicator struct {
	cfg     Config
	sink    Sink
	dead    DeadLetters
	log     *zap.Logger
	metrics *metrics.Metrics
	state   *State

	// waitOut is the xid of a streamed transaction the next sessions wait
	// out without streaming, 0 when none; streamingOff turns streaming off
	// for the life of the process (streamed.go). Only Run's goroutine
	// touches them.
	waitOut      uint32
	streamingOff bool
	// binaryOff is set once a session met a binary value the decoder
	// cannot print (decoder.BinaryError): the sessions after it ask for
	// text (binaryValues). Only Run's goroutine touches it.
	binaryOff bool
	// flushRefused is set once PostgreSQL refused the lookup connection's
	// WAL flush (xactLookup.flush): keep waits for the WAL writer from
	// then on. Only Run's goroutine touches it.
	flushRefused bool
	// outbox is the outbox table the publication publishes, read at each
	// session's start (checkPublicationTables). Only Run's goroutine
	// touches it.
	outbox outboxTable
	// subsetNoted is the publication's column list and row filter last
	// warned of (notePublicationSubset), "" while neither. Only Run's
	// goroutine touches it.
	subsetNoted string
	// opsNoted is the changes besides inserts the publication publishes,
	// as last warned of (prepareSlot), "" while none. Only Run's
	// goroutine touches it.
	opsNoted string
	// restartLSN is the slot's restart_lsn, read with its confirmed
	// position at each session's start (prepareSlot). Only Run's
	// goroutine touches it.
	restartLSN pglogrepl.LSN
	// partial holds the xid of each streamed transaction a session stored
	// rows of before its end was stored (streamed.go), with the end of its
	// commit once one was received, else 0. Only Run's goroutine touches
	// it.
	partial map[uint32]pglogrepl.LSN
	// sentWhole holds the xid of each transaction waited out (waitOut)
	// that a session without streaming received whole, with the end of
	// its commit, until the slot's restart_lsn passes it: a session
	// with streaming may be sent it again (streamed.go, sentBefore).
	// Only Run's goroutine touches it.
	sentWhole map[uint32]pglogrepl.LSN
	// pgLoggedIn is set once a session of this process logged in to
	// PostgreSQL, chLoggedIn once one read what the sink holds: from then
	// on a login that server refuses is retried (IsLoginError). A standby
	// has not met ClickHouse yet. Only Run's goroutine (session) touches
	// them.
	pgLoggedIn, chLoggedIn bool
	// rcvbufNoted is set once the log has said that the receive buffer
	// is left to the kernel. Only Run's goroutine touches it.
	rcvbufNoted bool
	// noSkip is set while the positions stored past the slot's cannot be
	// used to skip rows as already stored: the sink or the dead letters
	// may hold rows of another WAL history, whose positions cannot be told
	// from this one's (checkHistory), or hold more of them than a set may
	// (sink.TooManyPositions). noSkipUpTo is the greatest such position
	// seen; a replay may store rows twice until the slot has passed it.
	// Read by the writers too; noSkipUpTo only by Run's goroutine.
	noSkip     atomic.Bool
	noSkipUpTo pglogrepl.LSN
	// walsender is the backend pid of the last session that started
	// streaming; slotHolder the pid prepareSlot found holding the slot,
	// 0 when it was free or unknown. Only Run's goroutine touches them,
	// but for the session's writer, which copies walsender as it starts.
	walsender, slotHolder uint32
	// acked is the greatest flush position a standby status of this
	// process sent that covered a batch the sink stored (not one moved
	// only by the server's WAL end): a session that moved it was
	// healthy, whatever ended it, and the next connects after the
	// shortest wait. Only Run's goroutine (stream.sendStatus) touches it.
	acked pglogrepl.LSN
	// pendingEnd is where in the WAL the events reported pending
	// (State.OldestPending) end, as the session that left them unstored
	// recorded it (stream.notePendingEnd); 0 when unknown. A session
	// whose slot starts past it has none of them to replay. Only Run's
	// goroutine touches it.
	pendingEnd pglogrepl.LSN
	// startAttempts counts a session that could not start because the
	// sink could not say what it holds as a failing store, until a
	// session gets past that read. Only Run's goroutine touches it.
	startAttempts storeAttempts
}

// New builds a replicator; Run starts it.
func New(cfg Config, s Sink, dead DeadLetters, log *zap.Logger, m *metrics.Metrics) *Replicator {
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = time.Second
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.Tracer == nil {
		cfg.Tracer = noop.NewTracerProvider()
	}
	r := &Replicator{cfg: cfg, sink: s, dead: dead, log: log, metrics: m, state: &State{}}
	r.startAttempts = storeAttempts{s: r.state, failing: m.SinkFailing}
	return r
}

// State reports what the replicator is doing, for health checks.
func (r *Replicator) State() *State { return r.state }

// Run streams until ctx is cancelled, then flushes what it holds,
// acknowledges it and returns nil. Connection failures are retried with
// capped exponential backoff; it returns an error only for conditions an
// operator must fix (a lost slot, a missing publication).
func (r *Replicator) Run(ctx context.Context) error {
	delay := backoff{min: 250 * time.Millisecond, max: 30 * time.Second}
	var standbySaid time.Time  // when "standing by" was last logged at info; zero while not standing by
	var recoverySaid time.Time // when the server was last said to be a standby in recovery; zero while it is not
	for {
		started, acked := time.Now(), r.acked
		err := r.session(ctx)
		streamed := r.state.Streaming() // the session got as far as streaming
		r.state.setStreaming(false)
		r.metrics.Streaming.Set(0)
		// An ended session holds nothing: the next reads again from the
		// slot's confirmed position.
		r.metrics.BufferBytes.Set(0)
		if errors.Is(err, ErrSlotBusy) && r.slotHolder != 0 && r.slotHolder != r.walsender {
			// Another connector streams the slot: the events this
			// process had not stored are its now, and a standby
			// reporting their age for ever would page someone. The
			// walsender of this process's own last session may still
			// hold the slot — PostgreSQL keeps it for up to
			// wal_sender_timeout after a link dies, or until a replay
			// ends — and then the lag stays this process's to report.
			r.setOldestPending(0)
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrSlotLost) || errors.Is(err, ErrPublicationMissing) || errors.Is(err, ErrPublicationInserts) || errors.Is(err, ErrPublicationTables) || errors.Is(err, ErrWrongPlugin) || errors.Is(err, ErrSlotElsewhere) || errors.Is(err, ErrPublicationGap) {
			return err
		}
		// PostgreSQL's certificate errors are crypto/tls's too, which
		// sink.IsTLSError knows: they are PostgreSQL's to judge.
		pgRefused := IsLoginError(err) || IsPoolerRefusal(err) || IsTLSError(err)
		chRefused := !pgRefused && (sink.IsLoginError(err) || sink.IsTLSError(err))
		if pgRefused && !r.pgLoggedIn || chRefused && !r.chLoggedIn {
			// A user, password or database refused before this process
			// ever logged in there is a setting to fix, not an outage to
			// wait out, and so is TLS that cannot be set up (a server
			// without it, a certificate not trusted) and a DSN that
			// leads to a pooler, which refuses every replication
			// connection alike: said at once, by the exit code, rather
			// than retried for ever. Once it has logged in, the same
			// refusal (a password rotated, an LDAP server down, a
			// certificate renewed by another CA) is retried.
			return err
		}
		var binErr *decoder.BinaryError
		if errors.As(err, &binErr) && !r.binaryOff {
			// Not a failure either: the outbox gained a column of a
			// type the decoder reads only as text. What the session
			// had not stored is streamed again, as text.
			r.binaryOff = true
			r.log.Info("reconnecting to read values as text", zap.Error(err))
			continue
		}
		if errors.Is(err, errPublicationChanged) {
			r.log.Info("reconnecting to look at the publication again", zap.Error(err))
			continue
		}
		if errors.Is(err, errStreamInProgress) || errors.Is(err, errResumeStreaming) {
			// Not a failure: the next session reads with or without
			// streaming (streamed.go), from the last acknowledged position.
			r.log.Info("reconnecting to switch streaming of large transactions", zap.Error(err),
				zap.Bool("streaming", r.streams()))
			continue
		}
		var unavailable *sinkUnavailable
		sinkDown := errors.As(err, &unavailable)
		if sinkDown {
			// ClickHouse is down while no batch is held (a reconnect to
			// PostgreSQL during its outage ended the session that held
			// them): still a sink failure, for the metrics, the alert
			// and readiness, and retried as often as a batch would be.
			r.metrics.SinkErrors.Inc()
			r.startAttempts.fail(err)
		} else {
			r.startAttempts.done()
		}
		if time.Since(started) > time.Minute || r.acked > acked {
			// A session that lasted, or that acknowledged what it
			// stored (not merely the WAL other tables wrote), was no
			// failure to back off from: a walsender
			// terminated over and over (an idle-session killer, a
			// failover drill) would otherwise leave cdc waiting up to
			// 30 s after each, while the slot was fine.
			delay.reset()
		}
		wait := delay.next()
		if sinkDown {
			wait = min(wait, sinkRetryMax)
		}
		if !errors.Is(err, ErrSlotBusy) {
			standbySaid = time.Time{}
		}
		if !errors.Is(err, ErrInRecovery) {
			recoverySaid = time.Time{}
		}
		switch {
		case errors.Is(err, ErrInRecovery):
			// Polled every few seconds, not with the backoff's 30 s,
			// so that a promotion is taken up at once; said at warn
			// once on finding it, then every ten minutes: the retried
			// PostgreSQL error alone read as an outage of its own and
			// said nothing of what to do.
			wait = recoveryPoll
			if time.Since(recoverySaid) >= 10*time.Minute {
				recoverySaid = time.Now()
				r.log.Warn("CDC_PG_DSN leads to a standby in recovery, where PostgreSQL before 16 cannot decode logically: waiting for it to be promoted (then cdc makes the slot; backfill the events the old primary's slot had not shipped: docs/operations.md, Failures); if it is not to be promoted, point CDC_PG_DSN at the primary (a DSN that lists several hosts: add target_session_attrs=primary)",
					zap.Error(err), zap.Duration("retry_in", wait))
			} else {
				r.log.Debug("the server is still a standby in recovery; waiting for its promotion", zap.Error(err))
			}
		case errors.Is(err, ErrSlotBusy):
			// A hot standby: poll often so takeover is quick, and say so
			// quietly, this being its normal state: once on entering it,
			// then every ten minutes, not at each poll (86,400 lines a
			// day).
			wait = time.Second
			if time.Since(standbySaid) >= 10*time.Minute {
				standbySaid = time.Now()
				r.log.Info("slot in use by another connector; standing by", zap.Error(err), zap.Duration("retry_in", wait))
			} else {
				r.log.Debug("slot still in use by another connector; standing by", zap.Error(err))
			}
		default:
			if streamed { // a restart's failed reconnects are one interruption
				r.metrics.Interruptions.Inc()
			}
			r.log.Error("replication interrupted; reconnecting", zap.Error(err), zap.Duration("retry_in", wait))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// recoveryPoll is how often Run looks again at a server that is a standby
// in recovery (ErrInRecovery).
const recoveryPoll = 2 * time.Second

// backoff is capped exponential with jitter, so a fleet of sidecars does
// not reconnect in lockstep after an outage.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	return b.cur/2 + rand.N(b.cur/2+1)
}

func (b *backoff) reset() { b.cur = 0 }

// Errors an operator must act on; docs/operations.md says how.
var (
	ErrSlotLost           = errors.New("replication slot was invalidated (wal_status=lost): WAL it needed is gone")
	ErrPublicationMissing = errors.New("publication does not exist: run `cdc migrate`")
	ErrPublicationInserts = errors.New("publication does not publish inserts, the only changes cdc ships: the outbox's events would pass the slot unseen; make it publish them (ALTER PUBLICATION … SET (publish = 'insert'))")
	ErrPublicationTables  = errors.New("cdc ships every row its publication sends into event_log, so it must publish one outbox table alone: set CDC_PUBLICATION to such a publication (CREATE PUBLICATION … FOR TABLE outbox WITH (publish = 'insert')), or drop the other tables from this one (ALTER PUBLICATION … DROP TABLE …; not possible FOR ALL TABLES)")
	ErrWrongPlugin        = errors.New("replication slot does not use the pgoutput plugin")
	ErrSlotBusy           = errors.New("replication slot is active in another process")
	ErrSlotElsewhere      = errors.New("replication slot is not a logical slot of this database")
	// Not the end of the process: a standby found after a failover
	// (a DSN's name moved to it early) may be promoted in a moment, and
	// Run waits for that. Before PostgreSQL 16 a standby can neither
	// make nor decode a logical slot, and carries none from its primary.
	ErrInRecovery = errors.New("the server is a standby in recovery, where PostgreSQL before 16 can neither create nor decode a logical replication slot")
	// The slot cannot pass the stretch of WAL where its publication did
	// not exist: pgoutput looks it up as the catalog was at each change.
	ErrPublicationGap = errors.New("the slot's WAL holds changes made while its publication did not exist (dropped, or dropped and made again, after the slot was made), which PostgreSQL cannot decode")
)

// IsLoginError reports whether PostgreSQL refused the login itself: the
// user, its password or its pg_hba.conf entry (SQLSTATE class 28), the
// database (3D000), a privilege the login needs (42501 while
// connecting: a role without REPLICATION, or without CONNECT on the
// database; the same code from a query is not a login's), or a setting
// the DSN sends with the login (IsSettingRefused).
func IsLoginError(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	if strings.HasPrefix(pgErr.Code, "28") || pgErr.Code == "3D000" {
		return true
	}
	var connErr *pgconn.ConnectError
	return (pgErr.Code == "42501" || IsSettingRefused(err)) && errors.As(err, &connErr)
}

// IsPoolerRefusal reports whether the server refused cdc's startup message
// itself while connecting (SQLSTATE 08P01, protocol_violation). PostgreSQL
// takes what pgx sends; a pooler in front of it does not: PgBouncer
// answers "unsupported startup parameter: replication" to a replication
// connection (before 1.23 it carries none), and names any other parameter
// it is not set to ignore (ignore_startup_parameters), such as the
// session settings cdc sends (TextParams, lock_timeout). Every connection
// is refused alike: the DSN must lead to PostgreSQL itself. A role
// without REPLICATION is a refused login instead (IsLoginError: 42501).
// The message is matched too: PgBouncer sends 08P01 for its outages as
// well ("no more connections allowed (max_client_conn)"), which are
// retried.
func IsPoolerRefusal(err error) bool {
	var pgErr *pgconn.PgError
	var connErr *pgconn.ConnectError
	return errors.As(err, &pgErr) && pgErr.Code == "08P01" && strings.HasPrefix(pgErr.Message, "unsupported startup parameter") && errors.As(err, &connErr)
}

// IsTLSError reports whether the TLS that the DSN's sslmode asks for could
// not be set up with PostgreSQL while connecting: the server refused TLS
// (ssl = off, with sslmode=require or verify-*), or the handshake failed
// (a certificate sslrootcert or the system's CAs do not trust, or of
// another host: sink.IsTLSError). Every connection fails alike until the
// DSN or the server changes: a setting to fix, not an outage.
func IsTLSError(err error) bool {
	var connErr *pgconn.ConnectError
	if !errors.As(err, &connErr) {
		return false
	}
	// pgconn joins the error of each attempt: with sslmode=prefer (pgx's
	// default) or allow, a server that refused TLS is logged in to again
	// without it, and what failed then (a database missing, too many
	// connections, a server starting up) is not TLS. Taken for it, it
	// exited 2 saying to check sslmode, even for an outage a retry
	// would have outlasted. TLS only when every attempt failed on it.
	attempts := []error{connErr.Unwrap()}
	if joined, ok := attempts[0].(interface{ Unwrap() []error }); ok {
		attempts = joined.Unwrap()
	}
	for _, a := range attempts {
		// pgconn gives the server's refusal no type of its own: its
		// message, under the "tls error" of the dial, is all there is
		// to know it by.
		if a == nil || !sink.IsTLSError(a) && !strings.Contains(a.Error(), "tls error: server refused TLS connection") {
			return false
		}
	}
	return len(attempts) > 0
}

// IsSettingRefused reports whether PostgreSQL refused, while connecting, a
// session setting the DSN sends: pgx passes every parameter it does not
// know on to the server, which refuses one it does not know either
// (42704: a misspelling, ?sslmod=require), a name it cannot take (42602)
// or a value the setting does not (22023, ?statement_timeout=soon). Every
// connection fails alike, so it is a setting to fix, not an outage.
func IsSettingRefused(err error) bool {
	var pgErr *pgconn.PgError
	var connErr *pgconn.ConnectError
	if !errors.As(err, &pgErr) || !errors.As(err, &connErr) {
		return false
	}
	switch pgErr.Code {
	case "42704", "42602", "22023":
		return true
	}
	return false
}

func wrapf(err error, format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, err)...)
}
