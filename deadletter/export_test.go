package deadletter

// WrittenQuery is the statement Written reads positions with.
const WrittenQuery = writtenQuery
