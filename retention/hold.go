package retention

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// A hold pauses retention on every instance that streams a slot, and it
// outlives them: it is a marker kept in PostgreSQL, a physical replication
// slot named HoldName(slot) that reserves no WAL and so holds nothing back.
// It is made when a logical slot had to be created while the outbox held
// rows: the events committed before the new slot are not in it, the outbox
// holds their only copy until `cdc backfill` ships them, and a pause kept
// in one process's memory would not stop a standby instance that takes
// the slot over, nor the same instance after a restart. A slot because
// `cdc run` may create one (its role has REPLICATION) where it has no right
// to create a table; every role can read pg_replication_slots. An operator
// lifts the hold by dropping the marker (docs/operations.md, Outbox
// retention).

// holdSuffix names the marker: HoldName(slot) is slot + holdSuffix,
// within PostgreSQL's 63 characters.
const holdSuffix = "_retention_hold"

// HoldName is the name of the marker that holds retention for slot. A
// slot name too long for the suffix keeps its first 39 characters and a
// hash of the whole: two slots sharing a start do not share a hold, whose
// drop, after one slot's gap was shipped, would lift the other's too.
func HoldName(slot string) string {
	const room = 63 - len(holdSuffix)
	if len(slot) > room {
		h := fnv.New32a()
		h.Write([]byte(slot))
		slot = fmt.Sprintf("%s_%08x", slot[:room-9], h.Sum32())
	}
	return slot + holdSuffix
}

// legacyHoldName is the name cdc gave a long slot's hold before
// HoldName hashed it: the slot's first 48 characters. A hold of that name
// still holds (Held), so that an upgrade keeps a gap held.
func legacyHoldName(slot string) string {
	const room = 63 - len(holdSuffix)
	return slot[:min(len(slot), room)] + holdSuffix
}

// Querier is what a hold needs of PostgreSQL: a *pgx.Conn or a
// *pgxpool.Pool.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Hold makes the marker that pauses retention for slot, HoldName(slot);
// created is false when it existed already. It is made even beside a
// marker of the name earlier builds gave a long slot's hold: that name is
// also the hold of the slot named by this one's first 48 characters, and
// dropping that slot's hold once its gap is shipped must not lift this
// one's. Two markers hold until both are dropped; every message names the
// one left (HeldAs).
func Hold(ctx context.Context, q Querier, slot string) (created bool, err error) {
	// false: reserve no WAL (restart_lsn stays NULL), so the marker never
	// keeps WAL or holds back the catalog xmin.
	var name string
	err = q.QueryRow(ctx, `SELECT slot_name FROM pg_create_physical_replication_slot($1, false)`, HoldName(slot)).Scan(&name)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42710" { // duplicate_object
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("create the retention hold %s (a physical slot reserving no WAL): %w", HoldName(slot), err)
	}
	return true, nil
}

// HoldIfOutboxHasRows makes the hold when the outbox holds a row
// retention would delete: those are what a slot created now will never
// stream. An empty outbox has nothing to lose (a first start), nor one
// whose rows are all dated 'infinity' (never deleted): then no hold is
// made.
func HoldIfOutboxHasRows(ctx context.Context, q Querier, slot string) (created bool, err error) {
	var rows bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM outbox WHERE event_date_time < 'infinity')`).Scan(&rows); err != nil {
		return false, fmt.Errorf("read whether the outbox holds rows: %w", err)
	}
	if !rows {
		return false, nil
	}
	return Hold(ctx, q, slot)
}

// HoldAhead is HoldIfOutboxHasRows before slot is created: a process that
// ends between creating the slot and holding retention (a signal, a
// crash, a lost connection) would leave the gap unheld, and no later run
// knows the slot is new. It makes the hold only while two replication
// slots are free, so as never to take the one the slot needs
// (max_replication_slots); the creator holds again once the slot exists.
func HoldAhead(ctx context.Context, q Querier, slot string) (created bool, err error) {
	var free int
	if err := q.QueryRow(ctx, `SELECT current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)`).Scan(&free); err != nil {
		return false, fmt.Errorf("read how many replication slots are free: %w", err)
	}
	if free < 2 {
		return false, nil
	}
	return HoldIfOutboxHasRows(ctx, q, slot)
}

// Held reports whether the marker that holds retention for slot exists,
// by its name or by the name an earlier cdc gave it.
func Held(ctx context.Context, q Querier, slot string) (bool, error) {
	name, err := HeldAs(ctx, q, slot)
	return name != "", err
}

// HeldAs returns the name of the marker that holds retention for slot,
// "" when there is none: HoldName(slot), or the name an earlier cdc gave
// a long slot's hold, which is the one to drop to lift it.
func HeldAs(ctx context.Context, q Querier, slot string) (string, error) {
	var name string
	if err := q.QueryRow(ctx, `SELECT coalesce((SELECT slot_name::text FROM pg_replication_slots
		WHERE slot_name IN ($1, $2) ORDER BY slot_name = $1 DESC LIMIT 1), '')`, HoldName(slot), legacyHoldName(slot)).Scan(&name); err != nil {
		return "", fmt.Errorf("read whether the retention hold %s exists: %w", HoldName(slot), err)
	}
	return name, nil
}

// HeldForOutbox returns the name of the marker that holds retention of
// this database's outbox, "" when there is none, and the slot it holds
// for: slot's own (HeldAs), else that of another logical slot of this
// database. The outbox is the database's, not a slot's: a second pipeline
// of it (its own slot and publication, another ClickHouse) whose slot was
// made anew needs the rows of its gap kept as much, and a sweeper that
// looked at its own slot's hold alone deleted them. A hold whose slot
// belongs to another database of the cluster holds another outbox: not
// this one.
func HeldForOutbox(ctx context.Context, q Querier, slot string) (name, heldFor string, err error) {
	if name, err := HeldAs(ctx, q, slot); err != nil || name != "" {
		return name, slot, err
	}
	var slots []string
	if err := q.QueryRow(ctx, `SELECT coalesce(array_agg(slot_name::text ORDER BY slot_name), '{}') FROM pg_replication_slots
		WHERE database = current_database() AND slot_type = 'logical' AND slot_name <> $1`, slot).Scan(&slots); err != nil {
		return "", "", fmt.Errorf("read the other replication slots of this database, whose retention holds hold its outbox too: %w", err)
	}
	if len(slots) == 0 {
		return "", "", nil
	}
	holds := make(map[string]string, 2*len(slots)) // hold name -> its slot
	names := make([]string, 0, 2*len(slots))
	for _, s := range slots {
		for _, h := range []string{HoldName(s), legacyHoldName(s)} {
			if _, ok := holds[h]; !ok {
				holds[h] = s
				names = append(names, h)
			}
		}
	}
	if err := q.QueryRow(ctx, `SELECT coalesce((SELECT slot_name::text FROM pg_replication_slots
		WHERE slot_type = 'physical' AND slot_name = ANY($1) ORDER BY slot_name LIMIT 1), '')`, names).Scan(&name); err != nil {
		return "", "", fmt.Errorf("read whether a retention hold of another replication slot of this database exists: %w", err)
	}
	return name, holds[name], nil
}
