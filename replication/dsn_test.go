package replication

import "testing"

func TestWithReplication(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://u@h:5432/db", "postgres://u@h:5432/db?replication=database"},
		{"postgres://u@h/db?sslmode=require", "postgres://u@h/db?replication=database&sslmode=require"},
		// A space stays a space: pgconn reads '+' literally.
		{"postgres://u@h/db?options=-c%20logical_decoding_work_mem%3D64kB", "postgres://u@h/db?options=-c%20logical_decoding_work_mem%3D64kB&replication=database"},
		// (A plus in the password is literal in the user info either way.)
		{"postgres://u:p%2Bq@h/db?application_name=a%2Bb", "postgres://u:p+q@h/db?application_name=a%2Bb&replication=database"},
		{"host=h dbname=db", "host=h dbname=db replication=database"},
	} {
		if got := withReplication(tc.in); got != tc.want {
			t.Errorf("withReplication(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
