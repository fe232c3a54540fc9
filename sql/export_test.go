package sql

import "context"

// IndexExists is readIndex for the external tests: whether name exists
// on the outbox, as migrate sees it.
func IndexExists(ctx context.Context, conn pgQuerier, name string) (bool, error) {
	st, err := readIndex(ctx, conn, name)
	return st.exists, err
}
