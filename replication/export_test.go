package replication

import "time"

// SetLookupTimeout sets the bound of a transaction status lookup for a
// test and returns the function that puts it back.
func SetLookupTimeout(d time.Duration) (restore func()) {
	old := lookupTimeout
	lookupTimeout = d
	return func() { lookupTimeout = old }
}

// SetSetupTimeout sets the bound of each session set-up step for a test
// and returns the function that puts it back.
func SetSetupTimeout(d time.Duration) (restore func()) {
	old := setupTimeout
	setupTimeout = d
	return func() { setupTimeout = old }
}
