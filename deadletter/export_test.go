package deadletter

// WrittenQuery is the statement Written reads positions with.
const WrittenQuery = writtenQuery

// DurableCommit is the statement Put starts its transaction with.
const DurableCommit = durableCommit

// UnboundedStatements is the statement Put lifts statement_timeout with.
const UnboundedStatements = unboundedStatements

// ReplayLockKeys are the two keys of the advisory lock a replay holds.
var ReplayLockKeys = [2]int64{lockClass, replayLock}
