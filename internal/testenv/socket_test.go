package testenv

import "testing"

func TestSocketDSN(t *testing.T) {
	for _, tc := range []struct{ dsn, dir, want string }{
		{"postgres://postgres@127.0.0.1:5432/app?sslmode=disable", "/srv/pg",
			"postgres://postgres@/app?host=%2Fsrv%2Fpg&port=5432&sslmode=disable"},
		{"postgres://cdc:secret@db.internal:6543/app", "/var/run/postgresql",
			"postgres://cdc:secret@/app?host=%2Fvar%2Frun%2Fpostgresql&port=6543"},
	} {
		got, err := SocketDSN(tc.dsn, tc.dir)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("SocketDSN(%q, %q) = %q, want %q", tc.dsn, tc.dir, got, tc.want)
		}
	}
	if _, err := SocketDSN("postgres://%zz", "/x"); err == nil {
		t.Error("SocketDSN accepted an unparsable URL")
	}
}
