package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// djangoPython is a python3 that has Debian's Django and psycopg2 (a pyenv
// python3 earlier on PATH may lack them).
func djangoPython(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"python3", "/usr/bin/python3"} {
		if exec.Command(py, "-c", "import django, psycopg2").Run() == nil {
			return py
		}
	}
	t.Skip("no python3 with Django and psycopg2 (apt-get install python3-django python3-psycopg2)")
	return ""
}

// TestDjango_UseCaseEventsReachClickHouse drives the Django example with the
// real connector: the committed use case's event arrives, the rolled-back
// one never does.
func TestDjango_UseCaseEventsReachClickHouse(t *testing.T) {
	py := djangoPython(t)
	w := newWorld(t)
	dir, err := filepath.Abs("../examples/django")
	if err != nil {
		t.Fatal(err)
	}
	manage := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, py, append([]string{"manage.py"}, args...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "DATABASE_URL="+w.pgDSN, "APP_ENV=e2e", "PYTHONDONTWRITEBYTECODE=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("manage.py %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	manage("migrate", "--noinput", "-v", "0")
	w.start(nil)

	manage("shell", "-c", `
from accounts.usecases import create_user
from django.db import transaction
from outbox import publish
create_user("Ada@Example.com")
try:
    with transaction.atomic():
        publish("user_created", {"email": "ghost@example.com"})
        raise RuntimeError("the business change failed")
except RuntimeError:
    pass
`)
	w.waitRows(1, 30*time.Second)
	time.Sleep(500 * time.Millisecond) // two flush intervals: a second event would be here by now
	var typ, env, ctx string
	if err := w.ch.QueryRow(context.Background(), `SELECT event_type, environment, event_context FROM event_log FINAL`).Scan(&typ, &env, &ctx); err != nil {
		t.Fatal(err)
	}
	if typ != "user_created" || env != "e2e" || ctx != `{"user_id":1,"email":"ada@example.com"}` {
		t.Fatalf("event = %s/%s %s; want user_created/e2e for ada@example.com", typ, env, ctx)
	}
	if n := w.chCount("SELECT count() FROM event_log"); n != 1 {
		t.Fatalf("event_log holds %d rows, want 1: the rolled-back use case must publish nothing", n)
	}
}
