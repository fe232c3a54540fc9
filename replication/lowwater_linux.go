package replication

import (
	"net"
	"syscall"
)

// lowWaterFunc returns a setter of c's SO_RCVLOWAT, or nil when c is not a
// TCP socket (a Unix socket's poller ignores the mark).
func lowWaterFunc(c net.Conn) func(bytes int) error {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return func(bytes int) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, bytes)
		}); err != nil {
			return err
		}
		return serr
	}
}
