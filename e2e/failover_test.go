package e2e

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventcdc/cdc/internal/testenv"
)

// standby is a physical standby of the local PostgreSQL server, made with
// pg_basebackup -R and started on a port of its own: PostgreSQL 15 carries
// no logical slot to it, as after a failover.
type standby struct {
	t     *testing.T
	bin   string // PostgreSQL's server binaries
	data  string
	port  int
	asPG  bool // run the server's tools as the postgres user (the tests run as root)
	dbDSN func(db string) string
}

// newStandby takes a base backup of the server primaryDSN names and starts
// it as a hot standby streaming from it; it skips the test when the
// PostgreSQL tools are not installed. It is stopped (immediate) at the
// test's end.
func newStandby(t *testing.T, primaryDSN string) *standby {
	t.Helper()
	bin := os.Getenv("PG_BIN")
	if bin == "" {
		bin = "/usr/lib/postgresql/15/bin"
	}
	for _, tool := range []string{"pg_basebackup", "pg_ctl"} {
		if _, err := os.Stat(filepath.Join(bin, tool)); err != nil {
			t.Skipf("%s not found in %s (PG_BIN): cannot make a standby", tool, bin)
		}
	}
	s := &standby{t: t, bin: bin, asPG: os.Geteuid() == 0}
	// Not t.TempDir: its parent is private to this user, and as root the
	// server runs as postgres, which must reach the folder.
	dir, err := os.MkdirTemp("", "cdc-standby-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if s.asPG {
		if _, err := exec.LookPath("runuser"); err != nil {
			t.Skip("runuser not found: as root, PostgreSQL runs as postgres through it")
		}
		pg, err := user.Lookup("postgres")
		if err != nil {
			t.Skipf("no postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(pg.Uid)
		gid, _ := strconv.Atoi(pg.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s.data = filepath.Join(dir, "pg")
	u, err := url.Parse(primaryDSN)
	if err != nil {
		t.Fatal(err)
	}
	s.run("pg_basebackup", "-d", fmt.Sprintf("host=%s port=%s user=%s", u.Hostname(), u.Port(), u.User.Username()),
		"-D", s.data, "-R", "-X", "stream", "-c", "fast")
	addr := testenv.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	s.port, _ = strconv.Atoi(port)
	s.run("pg_ctl", "-D", s.data, "-o", fmt.Sprintf("-p %d -k %s", s.port, dir), "-l", filepath.Join(dir, "pg.log"), "-w", "-t", "60", "start")
	t.Cleanup(func() {
		_ = s.command("pg_ctl", "-D", s.data, "-m", "immediate", "-w", "-t", "30", "stop").Run()
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "pg.log")); err == nil {
				t.Logf("standby log:\n%s", tail(string(b), 30))
			}
		}
	})
	s.dbDSN = func(db string) string {
		v := *u
		v.Host = net.JoinHostPort(u.Hostname(), port)
		v.Path = "/" + db
		return v.String()
	}
	return s
}

func (s *standby) command(tool string, args ...string) *exec.Cmd {
	path := filepath.Join(s.bin, tool)
	if s.asPG {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	}
	return exec.Command(path, args...)
}

func (s *standby) run(tool string, args ...string) {
	s.t.Helper()
	if out, err := s.command(tool, args...).CombinedOutput(); err != nil {
		s.t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
	}
}

// DSN is primary's DSN (a URL) with the standby's port.
func (s *standby) DSN(primary string) string {
	u, err := url.Parse(primary)
	if err != nil {
		s.t.Fatal(err)
	}
	return s.dbDSN(strings.TrimPrefix(u.Path, "/"))
}

// waitReplayed waits until the standby has replayed all the WAL primary
// has written so far.
func (s *standby) waitReplayed(primary, standby *pgxpool.Pool) {
	s.t.Helper()
	var lsn string
	if err := primary.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&lsn); err != nil {
		s.t.Fatal(err)
	}
	waitFor(s.t, 30*time.Second, "the standby to replay "+lsn, func() (bool, string) {
		var done bool
		var at string
		err := standby.QueryRow(context.Background(), `SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false), coalesce(pg_last_wal_replay_lsn()::text, '')`, lsn).Scan(&done, &at)
		return err == nil && done, fmt.Sprintf("at %s, %v", at, err)
	})
}

func slotNames(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var names string
	if err := pool.QueryRow(context.Background(), `SELECT coalesce(string_agg(slot_name, ',' ORDER BY slot_name), '') FROM pg_replication_slots`).Scan(&names); err != nil {
		t.Fatal(err)
	}
	return names
}

// worldStandby makes a standby of w's server (newStandby), with the DSN
// of w's database on it and a pool of that DSN.
func worldStandby(t *testing.T, w *world) (*standby, string, *pgxpool.Pool) {
	t.Helper()
	w.env.PostgresDataDir(t) // a local server: the test takes a base backup of it
	sb := newStandby(t, w.env.PGDSN)
	dsn := sb.DSN(w.pgDSN)
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return sb, dsn, pool
}

// TestFailover_PromotedStandby follows docs/operations.md (Failures: the
// slot is missing; Slot invalidated) through a physical failover: events
// the old primary's slot had not acknowledged when cdc stopped are on the
// standby but in no slot there. Pointed at the standby while it is still in
// recovery, where PostgreSQL 15 cannot decode logically, cdc run says so
// and waits, making nothing there; once it is promoted it makes the slot
// and the retention hold and streams, and names the --since that ships
// the gap: backfill from then, and verify finds nothing missing, and FINAL
// shows every event once.
func TestFailover_PromotedStandby(t *testing.T) {
	w := newWorld(t)
	sb, sbDSN, sbPool := worldStandby(t, w)

	c := w.start(nil)
	w.insertEvents("before", 100)
	w.waitRows(100, 30*time.Second)
	c.kill()
	// Committed after the last acknowledgement: the old slot's to stream,
	// and no slot on the standby has them.
	w.insertEvents("gap", 50)
	sb.waitReplayed(w.pg, sbPool)

	s := w.start(map[string]string{"CDC_PG_DSN": sbDSN})
	// The replication's warning; the monitor's says the server is a
	// standby too, once a minute.
	const inRecovery = "CDC_PG_DSN leads to a standby in recovery, where PostgreSQL before 16 cannot decode logically: waiting for it to be promoted"
	waitFor(t, 20*time.Second, "cdc run to say the server is a standby", func() (bool, string) {
		return strings.Contains(s.out.String(), inRecovery), lastLine(s.out.String())
	})
	time.Sleep(2 * time.Second) // a few more tries
	select {
	case <-s.done:
		t.Fatalf("cdc run on a standby in recovery exited (%v); want it to wait for the promotion:\n%s", s.err, tail(s.out.String(), 20))
	default:
	}
	if n := strings.Count(s.out.String(), inRecovery); n != 1 {
		t.Errorf("said %d times that the server is a standby; want once until it changes:\n%s", n, tail(s.out.String(), 20))
	}
	if strings.Contains(s.out.String(), "creating the replication slot") {
		t.Errorf("said it creates the slot on a standby in recovery:\n%s", tail(s.out.String(), 20))
	}
	if names := slotNames(t, sbPool); names != "" {
		t.Errorf("slots on the standby in recovery: %q; want none (no retention hold on a server that is not the primary)", names)
	}

	sb.run("pg_ctl", "-D", sb.data, "-w", "-t", "60", "promote")
	waitFor(t, 20*time.Second, "the slot made on the promoted standby", func() (bool, string) {
		return strings.Contains(s.out.String(), "replication slot did not exist and was created"), lastLine(s.out.String())
	})
	// The --since to backfill from is the oldest event the outbox holds,
	// named in the log: the gap began where cdc last acknowledged, before
	// the promotion, and a --since at the time of the loss (all the log
	// said) left the 50 out, and verify from then found none missing.
	var oldest time.Time
	if err := sbPool.QueryRow(context.Background(), `SELECT min(event_date_time) FROM outbox`).Scan(&oldest); err != nil {
		t.Fatal(err)
	}
	sinceArg := oldest.UTC().Truncate(time.Second).Format(time.RFC3339)
	advice := "ship them with `cdc backfill --since " + sinceArg + "`, then `cdc verify --since " + sinceArg + "`"
	waitFor(t, 10*time.Second, "cdc run to name the backfill's --since", func() (bool, string) {
		return strings.Contains(s.out.String(), advice), lastLine(s.out.String())
	})
	if strings.Contains(s.out.String(), "<time of the loss>") {
		t.Errorf("cdc run says to backfill from the time of the loss, which misses what it had not shipped before it:\n%s", tail(s.out.String(), 20))
	}
	if names := slotNames(t, sbPool); names != "cdc_outbox,cdc_outbox_retention_hold" {
		t.Errorf("slots on the promoted standby: %q; want the slot and the retention hold", names)
	}
	if _, err := sbPool.Exec(context.Background(), `INSERT INTO outbox (event_type, environment, event_context)
		SELECT 'after', 'test', json_build_object('n', g) FROM generate_series(1, 30) g`); err != nil {
		t.Fatal(err)
	}
	w.waitRows(130, 30*time.Second)

	op := map[string]string{"CDC_PG_DSN": sbDSN}
	// --grace 0s: every event is committed and stored or missing by now.
	out, stderr, code := w.runOperator(op, "verify", "--since", sinceArg, "--grace", "0s")
	if code != 1 || !strings.Contains(out, "missing:           50\n") {
		t.Fatalf("verify before the backfill exited %d, want 1 with 50 missing:\n%s%s", code, out, stderr)
	}
	out, stderr, code = w.runOperator(op, "backfill", "--since", sinceArg)
	if code != 0 {
		t.Fatalf("backfill exited %d:\n%s%s", code, out, stderr)
	}
	out, stderr, code = w.runOperator(op, "verify", "--since", sinceArg, "--grace", "0s")
	if code != 0 || !strings.Contains(out, "outbox rows:       180\n") || !strings.Contains(out, "missing:           0\n") {
		t.Fatalf("verify after the backfill exited %d, want 0 with 180 rows, none missing:\n%s%s", code, out, stderr)
	}
	if n := w.chCount("SELECT count() FROM event_log FINAL"); n != 180 {
		t.Errorf("event_log FINAL holds %d rows, want 180", n)
	}
	if n := w.chCount("SELECT uniqExact(event_id) FROM event_log FINAL"); n != 180 {
		t.Errorf("event_log FINAL holds %d distinct events, want 180", n)
	}
	if code, _ := s.term(30 * time.Second); code != 0 {
		t.Errorf("cdc run exited %d on SIGTERM, want 0", code)
	}
}

// TestFailover_LaggingStandby promotes a standby that had not received the
// last events cdc stored from the old primary (docs/operations.md,
// Failures: failed over to a standby that lagged): event_log holds
// positions of the old WAL past the promoted server's end, where the new
// timeline's events land. cdc run says so, and skips none of the new
// events as stored.
func TestFailover_LaggingStandby(t *testing.T) {
	w := newWorld(t)
	sb, sbDSN, sbPool := worldStandby(t, w)

	c := w.start(nil)
	w.insertEvents("early", 100)
	w.waitRows(100, 30*time.Second)
	sb.waitReplayed(w.pg, sbPool)
	sbPool.Reset()
	sb.run("pg_ctl", "-D", sb.data, "-m", "fast", "-w", "-t", "60", "stop")
	// Stored from the old primary, never on the standby. About 2 MB of
	// WAL, little of it compressible: far more than the promoted standby
	// writes before cdc's session starts (its restart, the promotion, the
	// slot), so that event_log holds positions past that server's WAL.
	// With 100 small events (35 KB) the standby's own WAL passed them in
	// one clean-clone CI, and cdc rightly had nothing to say.
	for i := 0; i < 10; i++ {
		w.exec(`INSERT INTO outbox (event_type, environment, event_context)
			SELECT 'lost', 'test', json_build_object('n', g, 'pad', (SELECT string_agg(md5(random()::text || g || k), '') FROM generate_series(1, 600) k))
			FROM generate_series(1, 10) g`)
	}
	w.waitRows(200, 30*time.Second)
	c.kill()

	// The standby starts without its primary, as after the old one died.
	auto := filepath.Join(sb.data, "postgresql.auto.conf")
	if err := os.WriteFile(auto, []byte("# primary_conninfo removed: the primary is gone\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if sb.asPG {
		if out, err := exec.Command("chown", "postgres", auto).CombinedOutput(); err != nil {
			t.Fatalf("chown %s: %v\n%s", auto, err, out)
		}
	}
	dir := filepath.Dir(sb.data)
	s := sb.command("pg_ctl", "-D", sb.data, "-o", fmt.Sprintf("-p %d -k %s", sb.port, dir), "-l", filepath.Join(dir, "pg.log"), "-w", "-t", "60", "start")
	if out, err := s.CombinedOutput(); err != nil {
		t.Fatalf("start the standby again: %v\n%s", err, out)
	}
	sb.run("pg_ctl", "-D", sb.data, "-w", "-t", "60", "promote")

	r := w.start(map[string]string{"CDC_PG_DSN": sbDSN})
	waitFor(t, 20*time.Second, "the slot made on the promoted standby", func() (bool, string) {
		return strings.Contains(r.out.String(), "replication slot did not exist and was created"), lastLine(r.out.String())
	})
	for i := 0; i < 10; i++ {
		if _, err := sbPool.Exec(context.Background(), `INSERT INTO outbox (event_type, environment, event_context)
			SELECT 'new', 'test', json_build_object('n', g, 'pad', repeat('x', 200)) FROM generate_series(1, 10) g`); err != nil {
			t.Fatal(err)
		}
	}
	w.waitRows(300, 30*time.Second)
	if n := w.chCount("SELECT count() FROM event_log FINAL WHERE event_type = 'new'"); n != 100 {
		t.Errorf("event_log FINAL holds %d of the 100 events committed after the promotion", n)
	}
	if code, _ := r.term(30 * time.Second); code != 0 {
		t.Errorf("cdc run exited %d on SIGTERM, want 0", code)
	}
	if !strings.Contains(r.out.String(), "the sink holds positions past this server's WAL, from another WAL history") {
		t.Errorf("cdc run did not say that event_log holds positions of another WAL history:\n%s", tail(r.out.String(), 20))
	}
}

// cdc migrate run against a standby still in recovery (step 3 of Slot
// invalidated, before the promotion has ended; a replica's address) can
// change nothing there: it exits 2 naming the DSN and what to do, at
// once, not with PostgreSQL's refusal of its first DDL. cdc status, which
// an operator runs in a failover, exits 1 saying the same of the server.
func TestFailover_MigrateAndStatusOnAStandbyInRecovery(t *testing.T) {
	w := newWorld(t)
	w.env.PostgresDataDir(t) // a local server: the test takes a base backup of it
	sb := newStandby(t, w.env.PGDSN)
	env := map[string]string{"CDC_PG_DSN": sb.DSN(w.pgDSN)}
	out, stderr, code := w.runOperator(env, "migrate")
	const want = "cdc migrate: CDC_PG_DSN leads to a standby in recovery, which takes no DDL and no replication slot: run cdc migrate against the primary (after a failover, once the standby is promoted; a DSN that lists several hosts: add target_session_attrs=primary)\n"
	if code != 2 || out != "" || stderr != want {
		t.Fatalf("migrate on a standby in recovery exited %d:\n%s%s\nwant 2 and:\n%s", code, out, stderr, want)
	}
	out, stderr, code = w.runOperator(env, "status")
	const wantStatus = "read current wal position: ERROR: recovery is in progress (SQLSTATE 55000): CDC_PG_DSN leads to a standby in recovery, which has no WAL position of its own nor, before PostgreSQL 16, a logical slot: point it at the primary, or wait for the standby's promotion"
	if code != 1 || out != "" || !strings.Contains(stderr, wantStatus) {
		t.Fatalf("status on a standby in recovery exited %d:\n%s%s\nwant 1 and: %s", code, out, stderr, wantStatus)
	}
}
