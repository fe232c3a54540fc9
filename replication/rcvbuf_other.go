//go:build !linux

package replication

import (
	"net"
	"syscall"
)

// receiveBufferControl: the fixed receive buffer and its read-ahead are
// set on Linux, where cdc runs; elsewhere the kernel sizes the buffer and
// reads go straight to the socket.
func receiveBufferControl(int) func(network, address string, c syscall.RawConn) error { return nil }

func grantedReceiveBuffer(net.Conn) int { return 0 }

func receiveBufferMax(int) int { return 0 }
