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

func TestDecodingMemoryDSN(t *testing.T) {
	for _, tc := range []struct{ dsn, mem, want string }{
		{"postgres://postgres@127.0.0.1:5432/app?sslmode=disable", "4MB",
			"postgres://postgres@127.0.0.1:5432/app?options=-c%20logical_decoding_work_mem%3D4MB&sslmode=disable"},
		{"postgres://cdc@/app?host=%2Fsrv%2Fpg&port=5432", "64kB",
			"postgres://cdc@/app?host=%2Fsrv%2Fpg&options=-c%20logical_decoding_work_mem%3D64kB&port=5432"},
	} {
		got, err := DecodingMemoryDSN(tc.dsn, tc.mem)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("DecodingMemoryDSN(%q, %q) = %q, want %q", tc.dsn, tc.mem, got, tc.want)
		}
	}
	if _, err := DecodingMemoryDSN("postgres://%zz", "4MB"); err == nil {
		t.Error("DecodingMemoryDSN accepted an unparsable URL")
	}
}
