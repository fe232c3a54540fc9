//go:build !linux

package replication

import "net"

// queuedFunc: the send queue is asked on Linux, where cdc runs; elsewhere
// only the bytes a write handed the kernel tell a sending connection.
func queuedFunc(net.Conn) func() int { return nil }
