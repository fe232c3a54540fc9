package deadletter

import "context"

// WrittenQuery is the statement Written reads positions with, slot $4.
var WrittenQuery = writtenQuery(true)

// CountQuery is the statement CountUpTo counts with: limit $1, slot $2.
var CountQuery = countQuery(true)

// DurableCommit is the statement Put starts its transaction with.
const DurableCommit = durableCommit

// UnboundedStatements is the statement Put lifts statement_timeout with.
const UnboundedStatements = unboundedStatements

// ReplayLockKeys are the two keys of the advisory lock a replay holds.
var ReplayLockKeys = [2]int64{lockClass, replayLock}

// SlotColumnQuery is the statement a store looks its table's slot column up with.
const SlotColumnQuery = slotColumnQuery

// Shared reports whether every letter is every pipeline's: the table lacks
// slot_name, as an earlier build's migrate left it.
func (s *Store) Shared(ctx context.Context) (bool, error) {
	tagged, err := s.scope(ctx)
	return !tagged, err
}
