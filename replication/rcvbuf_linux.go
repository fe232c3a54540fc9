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
// when it cannot be told. Where /proc/sys/net/core/rmem_max cannot be read
// — in a container, on a kernel that does not give each network namespace
// its own — a throwaway socket asked for asked bytes tells: the kernel
// grants it at most the maximum, and less than asked only because of it.
func receiveBufferMax(asked int) int {
	return receiveBufferMaxFrom("/proc/sys/net/core/rmem_max", asked)
}

func receiveBufferMaxFrom(path string, asked int) int {
	if b, err := os.ReadFile(path); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			return n
		}
	}
	return probeReceiveBuffer(asked)
}

// probeReceiveBuffer asks a socket that is never connected for asked
// bytes of receive buffer and returns what it was granted, in the unit it
// was asked in; 0 when that cannot be done.
func probeReceiveBuffer(asked int) int {
	if asked <= 0 {
		return 0
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	defer syscall.Close(fd)
	if syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, asked) != nil {
		return 0
	}
	n, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	if err != nil {
		return 0
	}
	return n / 2
}
