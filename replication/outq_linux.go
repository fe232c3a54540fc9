package replication

import (
	"net"
	"syscall"
	"unsafe"
)

// queuedFunc returns a reader of how many bytes c's socket holds that the
// peer has not acknowledged (SIOCOUTQ), or nil when c has no socket to ask.
func queuedFunc(c net.Conn) func() int {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return func() int {
		n := -1
		_ = rc.Control(func(fd uintptr) {
			var v int32
			if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&v))); errno == 0 {
				n = int(v)
			}
		})
		return n
	}
}
