// Package status reads the replication slot's state from PostgreSQL: how far
// behind it is, whether a connector holds it, how much WAL it retains and how
// much more it may retain before PostgreSQL invalidates it. `cdc status`
// prints it, with what the outbox holds (outbox.go); the connector polls the
// slot into metrics.
package status

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/eventcdc/cdc/deadletter"
	"github.com/eventcdc/cdc/metrics"
	"github.com/eventcdc/cdc/retention"
)

// Slot is a snapshot of one replication slot.
type Slot struct {
	Name         string `json:"slot"`
	Exists       bool   `json:"exists"`
	Active       bool   `json:"active"`
	ActivePID    int32  `json:"active_pid,omitempty"`
	ConfirmedLSN string `json:"confirmed_flush_lsn,omitempty"`
	CurrentLSN   string `json:"current_wal_lsn"`
	WALStatus    string `json:"wal_status,omitempty"`
	LagBytes     int64  `json:"lag_bytes"`
	RetainedWAL  int64  `json:"retained_wal_bytes"`
	// SafeWALBytes is nil while max_slot_wal_keep_size is unlimited.
	SafeWALBytes *int64 `json:"safe_wal_bytes"`
	// OtherDatabase names the database the slot belongs to when that is
	// not this one (slot names are the cluster's): then nothing else
	// here is this database's, and cdc run and migrate refuse the slot.
	OtherDatabase string `json:"other_database,omitempty"`
}

// Querier is what ReadSlot needs: a pool or a connection.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ReadSlot reads the slot's state. A missing slot is not an error: Exists
// is false (a connector creates it on first start).
func ReadSlot(ctx context.Context, q Querier, slot string) (Slot, error) {
	s := Slot{Name: slot}
	err := q.QueryRow(ctx, `
		SELECT s.active, coalesce(s.active_pid, 0), coalesce(s.confirmed_flush_lsn::text, ''),
		       pg_current_wal_lsn()::text, coalesce(s.wal_status, ''),
		       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn), 0)::bigint,
		       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn), 0)::bigint,
		       s.safe_wal_size,
		       CASE WHEN s.database IS DISTINCT FROM current_database() THEN coalesce(s.database, '(none: a physical slot)') ELSE '' END
		FROM pg_replication_slots s WHERE s.slot_name = $1`, slot).
		Scan(&s.Active, &s.ActivePID, &s.ConfirmedLSN, &s.CurrentLSN, &s.WALStatus, &s.LagBytes, &s.RetainedWAL, &s.SafeWALBytes, &s.OtherDatabase)
	if errors.Is(err, pgx.ErrNoRows) {
		if err := q.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&s.CurrentLSN); err != nil {
			return s, inRecovery(fmt.Errorf("read current wal position: %w", err))
		}
		return s, nil
	}
	if err != nil {
		return s, inRecovery(fmt.Errorf("read slot %s: %w", slot, err))
	}
	s.Exists = true
	return s, nil
}

// inRecovery says what PostgreSQL's "recovery is in progress" (SQLSTATE
// 55000, from pg_current_wal_lsn) means here: in a failover an operator
// runs cdc status against a standby not promoted yet, or the monitor of a
// cdc run waiting for the promotion polls it, and the bare error named
// neither the DSN nor what to do.
func inRecovery(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55000" && pgErr.Message == "recovery is in progress" {
		return fmt.Errorf("%w: CDC_PG_DSN leads to a standby in recovery, which has no WAL position of its own nor, before PostgreSQL 16, a logical slot: point it at the primary, or wait for the standby's promotion", err)
	}
	return err
}

// Monitor polls the slot, the retention hold and the dead letters waiting
// into metrics.
type Monitor struct {
	Pool    *pgxpool.Pool
	Slot    string
	Every   time.Duration
	Metrics *metrics.Metrics
	Log     *zap.Logger
	// Paused, when set, reports whether this process pauses retention
	// because it created its slot over the outbox's rows and could not make
	// the hold (replication.State.SlotCreated): a gap as much as a hold's,
	// reported the same way.
	Paused   func() bool
	lastWarn time.Time
	// lettersRead is when the dead letters were last counted: once a
	// minute, not at every poll.
	lettersRead time.Time
	letters     *deadletter.Store // the slot's, made at the first count
}

// lettersEvery is how often Monitor counts the dead letters, and
// lettersCap where it stops counting: a table of many letters (a schema
// change can refuse every row for a while) is not scanned whole every
// minute, and an alert needs to know only that letters wait.
const (
	lettersEvery = time.Minute
	lettersCap   = 10000
)

// Run polls until ctx ends. Failures are logged (rate-limited) and retried
// on the next tick; the replication loop reports connectivity on its own.
func (m *Monitor) Run(ctx context.Context) error {
	t := time.NewTicker(m.Every)
	defer t.Stop()
	for {
		m.poll(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (m *Monitor) poll(ctx context.Context) {
	qctx, cancel := context.WithTimeout(ctx, m.Every)
	defer cancel()
	failed := m.pollSlot(ctx, qctx)
	m.pollLetters(ctx, qctx, failed)
}

// pollSlot reads the slot and the retention hold into the metrics, and
// reports whether that failed (counted and logged).
func (m *Monitor) pollSlot(ctx, qctx context.Context) (failed bool) {
	s, err := ReadSlot(qctx, m.Pool, m.Slot)
	if err != nil {
		if ctx.Err() != nil {
			return false // shutting down
		}
		// Not known to be active is not active: a role that lost its
		// login, a pg_hba change or an outage must not leave the last
		// good reading standing, with every slot alert silent.
		m.Metrics.SlotActive.Set(0)
		m.Metrics.SlotPollErrors.Inc()
		m.warn(err)
		return true
	}
	m.Metrics.LagBytes.Set(float64(s.LagBytes))
	if s.Active {
		m.Metrics.SlotActive.Set(1)
	} else {
		m.Metrics.SlotActive.Set(0)
	}
	if s.SafeWALBytes != nil {
		m.Metrics.SetSafeWALBytes(*s.SafeWALBytes, true)
	} else {
		m.Metrics.SetSafeWALBytes(0, false)
	}
	// Read here, not by the retention sweeper: it shows with retention
	// off too, for what it says is a gap not yet known to be shipped.
	held, err := retention.Held(qctx, m.Pool, m.Slot)
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		m.Metrics.SlotPollErrors.Inc()
		m.warn(err)
		return true
	}
	if held || m.Paused != nil && m.Paused() {
		m.Metrics.RetentionHeld.Set(1)
	} else {
		m.Metrics.RetentionHeld.Set(0)
	}
	return false
}

// pollLetters counts the slot's dead letters waiting (deadletter.Store:
// its own and those of no slot), once a minute, whatever
// became of the slot's reading: a role that may not read
// pg_replication_slots still sees its letters. A failure is counted unless
// the slot's reading in the same poll already was.
func (m *Monitor) pollLetters(ctx, qctx context.Context, failed bool) {
	if time.Since(m.lettersRead) < lettersEvery {
		return
	}
	if m.letters == nil {
		m.letters = deadletter.New(m.Pool, m.Slot)
	}
	waiting, err := m.letters.CountUpTo(qctx, lettersCap)
	if err != nil {
		if ctx.Err() == nil && !failed {
			m.Metrics.SlotPollErrors.Inc()
			m.warn(err)
		}
		return
	}
	m.lettersRead = time.Now()
	m.Metrics.LettersWaiting.Set(float64(waiting))
}

// warn logs a failed poll, at most once a minute.
func (m *Monitor) warn(err error) {
	if time.Since(m.lastWarn) > time.Minute {
		m.Log.Warn("polling slot state failed", zap.Error(err))
		m.lastWarn = time.Now()
	}
}
