package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A clone deep enough that PostgreSQL's socket path (folder +
// "/.s.PGSQL.NNNNN") passes the 107 bytes a Unix socket's path may have
// still gets its servers: the socket goes to a short folder under /tmp,
// which pg.socket_dir names and stop removes.
func TestLocalDB_DeepFolderGetsAShortSocketFolder(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL and a ClickHouse server")
	}
	script, err := Script()
	if err != nil {
		t.Fatal(err)
	}
	top, err := os.MkdirTemp("", "cdc-deep-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(top)
	dir := filepath.Join(top, strings.Repeat("a-deep-folder/", 7), "db")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// As root, PostgreSQL runs as postgres, which must reach the folder.
	for d := dir; d != filepath.Dir(top); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(dir) + len("/.s.PGSQL.65535"); n <= 107 {
		t.Fatalf("the folder makes a socket path of %d bytes: not deep enough for this test", n)
	}
	// A -timeout panic runs no deferred stop; the watchdog stops the
	// servers however the test binary ends.
	guard, err := watchdog(script, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer guard.Close()
	stop := func() {
		if out, err := exec.Command(script, "stop", dir).CombinedOutput(); err != nil {
			t.Errorf("localdb.sh stop: %v: %s", err, out)
		}
	}
	out, err := exec.Command(script, "start", dir).CombinedOutput()
	if err != nil {
		stop()
		t.Fatalf("localdb.sh start in a folder of %d bytes: %v: %s", len(dir), err, out)
	}
	sock := SocketDir(dir)
	port := parseEnv(out)["LOCALDB_PG_PORT"]
	if !strings.HasPrefix(sock, "/tmp/cdc-pg-") || port == "" {
		stop()
		t.Fatalf("socket folder %q, port %q; want a folder under /tmp/cdc-pg-", sock, port)
	}
	c, err := net.Dial("unix", filepath.Join(sock, ".s.PGSQL."+port))
	if err != nil {
		t.Errorf("PostgreSQL's socket does not answer: %v", err)
	} else {
		c.Close()
	}
	stop()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("stop left the socket folder %s: %v", sock, err)
		os.RemoveAll(sock)
	}
}

// The servers start whatever locale the caller's environment names: an
// ssh session often forwards a LANG the machine has no locale for, which
// initdb refused. The cluster takes C.UTF-8, as in CI.
func TestLocalDB_StartsWhateverTheCallersLocale(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL and a ClickHouse server")
	}
	script, dir := serversFolder(t, "cdc-locale-")
	run := func(args ...string) ([]byte, error) {
		cmd := exec.Command(script, args...)
		cmd.Env = append(os.Environ(), "LANG=xx_XX.UTF-8", "LC_ALL=xx_XX.UTF-8", "LC_CTYPE=UTF-8")
		return cmd.CombinedOutput()
	}
	defer func() {
		if out, err := run("stop", dir); err != nil {
			t.Errorf("localdb.sh stop: %v: %s", err, out)
		}
	}()
	if out, err := run("start", dir); err != nil {
		t.Fatalf("localdb.sh start with LANG=xx_XX.UTF-8: %v: %s", err, out)
	}
	conf, err := os.ReadFile(filepath.Join(dir, "pg", "postgresql.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(conf), "\nlc_messages = 'C.UTF-8'") {
		t.Errorf("postgresql.conf does not set lc_messages = 'C.UTF-8':\n%s", conf)
	}
}

// stop after a crash or a reboot finds pid files naming processes that
// are not the servers any more: it signals none of them, and forgets the
// files.
func TestLocalDB_StopLeavesAProcessOfAStalePidFileAlone(t *testing.T) {
	script, err := Script()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = other.Wait(); close(exited) }()
	defer func() { _ = other.Process.Kill(); <-exited }()
	pid := fmt.Sprint(other.Process.Pid)
	pgPid, chPid := filepath.Join(dir, "pg", "postmaster.pid"), filepath.Join(dir, "ch", "server.pid")
	for file, text := range map[string]string{pgPid: pid + "\n" + filepath.Join(dir, "pg") + "\n", chPid: pid + "\n"} {
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(script, "stop", dir).CombinedOutput(); err != nil {
		t.Fatalf("localdb.sh stop: %v: %s", err, out)
	}
	select {
	case <-exited:
		t.Fatalf("the process named by the stale pid files was killed: %v", other.ProcessState)
	case <-time.After(300 * time.Millisecond):
	}
	for _, file := range []string{pgPid, chPid} {
		if _, err := os.Stat(file); !os.IsNotExist(err) {
			t.Errorf("stop left %s: %v", file, err)
		}
	}
}

// A start whose second server cannot start (ClickHouse's port is taken)
// stops the first one again and says so: a failed start prints no DSNs,
// so nobody would stop what it left running.
func TestLocalDB_FailedStartStopsWhatItStarted(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL server")
	}
	script, dir := serversFolder(t, "cdc-failed-start-")
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	pgPort, err := net.Listen("tcp", "127.0.0.1:0") // a free port, given back for PostgreSQL
	if err != nil {
		t.Fatal(err)
	}
	pg := fmt.Sprint(pgPort.Addr().(*net.TCPAddr).Port)
	pgPort.Close()
	ch := fmt.Sprint(taken.Addr().(*net.TCPAddr).Port)

	cmd := exec.Command(script, "start", dir, pg, ch)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || stdout.Len() != 0 {
		t.Fatalf("start with ClickHouse's port %s taken: %v, stdout %q; want exit 1 and no DSNs\n%s", ch, err, stdout.String(), stderr.String())
	}
	for _, want := range []string{
		"localdb: clickhouse-server exited before answering on port " + ch,
		"localdb: start failed; stopped the PostgreSQL and ClickHouse it had started under " + dir + "\n",
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "pg", "postmaster.pid")); !os.IsNotExist(err) {
		t.Errorf("PostgreSQL's postmaster.pid is still there after the failed start: %v", err)
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+pg, time.Second); err == nil {
		c.Close()
		t.Errorf("PostgreSQL still answers on port %s after the failed start", pg)
	}
}

// serversFolder is localdb.sh and a new folder for a test's servers, which
// postgres can enter; both go when the test ends, with the servers in it
// stopped however the test binary ends (watchdog).
func serversFolder(t *testing.T, prefix string) (script, dir string) {
	t.Helper()
	script, err := Script()
	if err != nil {
		t.Fatal(err)
	}
	dir, err = os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // as root, PostgreSQL runs as postgres
		t.Fatal(err)
	}
	guard, err := watchdog(script, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { guard.Close() })
	return script, dir
}

// ClickHouse's HTTP (and TLS) port is chosen while its native port, chosen
// just before, is not listening yet: a bind test alone would not rule it
// out, and a server given one port twice exits ("Address already in use").
// With the candidates in order (random.shuffle a no-op) every unguarded
// pick is the same port, which makes the rare collision certain.
func TestLocalDB_ClickHousePortsDiffer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL and a ClickHouse server")
	}
	script, dir := serversFolder(t, "cdc-ports-")
	site := t.TempDir()
	if err := os.WriteFile(filepath.Join(site, "sitecustomize.py"), []byte("import random\nrandom.shuffle = lambda x, *a, **k: None\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(script, args...)
		cmd.Env = append(os.Environ(), "PYTHONPATH="+site)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("localdb.sh %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	defer func() {
		if out, err := exec.Command(script, "stop", dir).CombinedOutput(); err != nil {
			t.Errorf("localdb.sh stop: %v: %s", err, out)
		}
	}()
	run("start", dir)
	// A certificate adds the TLS port at the next start.
	certPEM, keyPEM := SelfSignedCert(t)
	tlsDir := filepath.Join(dir, "ch", "tls")
	if err := os.MkdirAll(tlsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"server.crt": certPEM, "server.key": keyPEM} {
		if err := os.WriteFile(filepath.Join(tlsDir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run("stop-ch", dir)
	run("start-ch", dir)
	conf, err := os.ReadFile(filepath.Join(dir, "ch", "config.xml"))
	if err != nil {
		t.Fatal(err)
	}
	ports := map[string]bool{}
	for _, tag := range []string{"tcp_port", "http_port", "tcp_port_secure"} {
		_, rest, ok := strings.Cut(string(conf), "<"+tag+">")
		port, _, _ := strings.Cut(rest, "<")
		if !ok || port == "" {
			t.Fatalf("config.xml has no <%s>:\n%s", tag, conf)
		}
		if ports[port] {
			t.Errorf("port %s given twice in config.xml:\n%s", port, conf)
		}
		ports[port] = true
	}
}
