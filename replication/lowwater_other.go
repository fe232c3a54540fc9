//go:build !linux

package replication

import "net"

// lowWaterFunc: raising SO_RCVLOWAT to quiet the poller is done on Linux,
// where cdc runs; elsewhere reads are paced without it.
func lowWaterFunc(net.Conn) func(bytes int) error { return nil }
