package replication

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// What the pause relies on, on this kernel: with the low-water mark raised,
// bytes queued on the socket do not make it readable to the poller (so Go's
// network poller is not woken by them), and once the mark is back to one
// byte they do.
func TestLowWaterMarkQuietsTheSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()

	set := lowWaterFunc(client)
	if set == nil {
		t.Fatal("no low-water setter for a TCP connection")
	}
	rc, err := client.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	// queued is how many bytes wait on the socket; readable asks poll(2)
	// without waiting.
	queued := func() (n int) {
		_ = rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
		return n
	}
	readable := func() bool {
		var n int
		_ = rc.Control(func(fd uintptr) {
			n, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		})
		return n == 1
	}

	if err := set(quietLowWater); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Write([]byte("ten bytes!")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); queued() < 10; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes queued after 5s, want 10", queued())
		}
	}
	if readable() {
		t.Fatal("10 bytes queued with the mark raised: the socket polls readable, so the poller would wake")
	}
	if err := set(1); err != nil {
		t.Fatal(err)
	}
	if !readable() {
		t.Fatal("10 bytes queued with the mark at 1: the socket does not poll readable")
	}
	buf := make([]byte, 100)
	if n, err := client.Read(buf); err != nil || string(buf[:n]) != "ten bytes!" {
		t.Fatalf("read: %q, %v", buf[:n], err)
	}

	if lowWaterFunc(&net.UnixConn{}) != nil {
		t.Error("a low-water setter for a Unix socket")
	}
}
