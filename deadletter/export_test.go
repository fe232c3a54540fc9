package deadletter

// WrittenQuery is the statement Written reads positions with.
const WrittenQuery = writtenQuery

// DurableCommit is the statement Put starts its transaction with.
const DurableCommit = durableCommit
