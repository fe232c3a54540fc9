package replication

import (
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// receiveBufferControl is a net.Dialer Control that sets a TCP socket's
// SO_RCVBUF before it connects, as the read pattern was measured with.
// Setting it turns off the kernel's autotuning of that buffer, and Linux
// silently caps it at net.core.rmem_max (grantedReceiveBuffer says what it
// got).
func receiveBufferControl(bytes int) func(network, address string, c syscall.RawConn) error {
	return func(network, _ string, c syscall.RawConn) error {
		if !strings.HasPrefix(network, "tcp") {
			return nil
		}
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, bytes)
		}); err != nil {
			return err
		}
		if serr != nil {
			return wrapf(serr, "set the socket's receive buffer (CDC_PG_RECEIVE_BUFFER)")
		}
		return nil
	}
}

// grantedReceiveBuffer is the receive buffer the kernel gave c's socket,
// in the unit SO_RCVBUF was set in (Linux reports twice the setting, the
// other half being its bookkeeping), or 0 when c is not a TCP socket.
func grantedReceiveBuffer(c net.Conn) int {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0
	}
	var n int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		n, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	}); err != nil || serr != nil {
		return 0
	}
	return n / 2
}

// receiveBufferMax is net.core.rmem_max, the most SO_RCVBUF may set, or 0
// when it cannot be read.
func receiveBufferMax() int {
	b, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return n
}
