package sink

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// A DSN parameter one or two edits from one of the client's own options
// is a misspelling, refused before anything connects: clickhouse-go would
// send it to the server as a setting, which every query would then fail
// on. Real settings, however named, pass.
func TestCheckDSN(t *testing.T) {
	for _, tc := range []struct {
		dsn, wantErr string
	}{
		{"clickhouse://u:pw@ch:9000/db?read_timeout=2m&dial_timeout=3s&secure=false", ""},
		{"clickhouse://u:pw@ch:9000/db?max_insert_block_size=100000&insert_quorum=2&readonly=0", ""},
		{"clickhouse://u:pw@ch:9000/db?send_timeout=300&receive_timeout=300&connect_timeout=10", ""}, // settings near options
		{"clickhouse://u:pw@ch:9000/db?compres=lz4", "compres (compress?)"},
		{"clickhouse://u:pw@ch:9000/db?read_timout=2m", "read_timout (read_timeout?): not an option of the ClickHouse client"},
		{"clickhouse://u:pw@ch:9000/db?sucure=true&dail_timeout=5s", "dail_timeout (dial_timeout?), sucure (secure?): not an option"},
		{"clickhouse://u:pw@ch:9000/db?skip_verfy=true", "skip_verfy (skip_verify?)"},
		{"clickhouse://u:pw@ch:9000/db?read_timeout=-1s", "read_timeout -1s must be positive"},
		{"clickhouse://u:pw@ch:9000/db?compress=off", `compress: "off" is not true, false, none, lz4, lz4hc or zstd`},
		{"clickhouse://u:pw@ch:9000/db?compress=gzip", `compress: "gzip" is not true, false, none, lz4, lz4hc or zstd (the native protocol's)`},
		{"clickhouse://u:pw@ch:9000/db?compress=zstd&conn_max_lifetime=1h", ""},
		{"clickhouse://u:pw@ch:9000/db?max_open_conns=20", "max_open_conns: cdc sizes its own connections (at most 20 a pool, whatever CDC_INSERTS_IN_FLIGHT is): remove it"},
		{"clickhouse://u:pw@ch:9000/db?max_idle_conns=1", "max_idle_conns: cdc sizes its own connections"},
		{"clickhouse://u:pw@ch:9000/db?conn_max_lifetime=-1s", "conn_max_lifetime -1s must be positive"},
		{"clickhouse://u:pw@ch:9000/db?conn_max_lifetime=0s", "conn_max_lifetime 0s must be positive"},
		{"clickhouse://u:pw@ch:9000/db?compress=", ""},
	} {
		err := CheckDSN(tc.dsn)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("CheckDSN(%q) = %v, want an error containing %q", tc.dsn, err, tc.wantErr)
		}
	}
}

// A host without a port is dialled at the native protocol's: 9000, or
// 9440 with secure=true, as clickhouse-client does; a port given stays.
func TestClientOptions_DefaultPort(t *testing.T) {
	for _, tc := range []struct {
		dsn  string
		want []string
	}{
		{"clickhouse://u@ch/db", []string{"ch:9000"}},
		{"clickhouse://u@ch/db?secure=true", []string{"ch:9440"}},
		{"clickhouse://u@ch:19000/db?secure=true", []string{"ch:19000"}},
		{"clickhouse://u@[::1]/db", []string{"[::1]:9000"}},
		{"clickhouse://u@[::1]:9001/db", []string{"[::1]:9001"}},
		{"clickhouse://u@ch1,ch2:9001/db", []string{"ch1:9000", "ch2:9001"}},
		{"clickhouse://u@ch/db?alt_hosts=ch2,ch3:9002", []string{"ch:9000", "ch2:9000", "ch3:9002"}},
	} {
		opts, err := clientOptions(tc.dsn)
		if err != nil {
			t.Fatalf("clientOptions(%q): %v", tc.dsn, err)
		}
		if fmt.Sprint(opts.Addr) != fmt.Sprint(tc.want) {
			t.Errorf("clientOptions(%q).Addr = %v, want %v", tc.dsn, opts.Addr, tc.want)
		}
	}
}

// What the DSN says of compression and connection lifetime holds; where
// it says nothing, LZ4 and 10 minutes.
func TestClientOptions(t *testing.T) {
	for _, tc := range []struct {
		dsn      string
		method   clickhouse.CompressionMethod
		lifetime time.Duration
	}{
		{"clickhouse://u@ch/db", clickhouse.CompressionLZ4, 10 * time.Minute},
		{"clickhouse://u@ch/db?compress=false", clickhouse.CompressionNone, 10 * time.Minute},
		{"clickhouse://u@ch/db?compress=0", clickhouse.CompressionNone, 10 * time.Minute},
		{"clickhouse://u@ch/db?compress=none", clickhouse.CompressionNone, 10 * time.Minute},
		{"clickhouse://u@ch/db?compress=true", clickhouse.CompressionLZ4, 10 * time.Minute},
		{"clickhouse://u@ch/db?compress=", clickhouse.CompressionLZ4, 10 * time.Minute},
		{"clickhouse://u@ch/db?compress=zstd&conn_max_lifetime=1h", clickhouse.CompressionZSTD, time.Hour},
	} {
		opts, err := clientOptions(tc.dsn)
		if err != nil {
			t.Fatalf("%s: %v", tc.dsn, err)
		}
		if opts.Compression == nil || opts.Compression.Method != tc.method || opts.ConnMaxLifetime != tc.lifetime {
			t.Errorf("%s: compression %+v, lifetime %v; want %v, %v", tc.dsn, opts.Compression, opts.ConnMaxLifetime, tc.method, tc.lifetime)
		}
	}
}

// An INSERT is answered before its rows are written only with
// asynchronous inserts on and not waited for.
func TestUnwaitedAsync(t *testing.T) {
	for _, tc := range []struct {
		async, wait string
		unwaited    bool
	}{
		{"", "", false}, {"0", "0", false}, {"1", "1", false}, {"1", "", false}, {"1", "0", true}, {"2", "0", true},
	} {
		if got := unwaitedAsync(tc.async, tc.wait); got != tc.unwaited {
			t.Errorf("unwaitedAsync(%q, %q) = %v, want %v", tc.async, tc.wait, got, tc.unwaited)
		}
	}
}

// What an INSERT sets follows from what the user may change, not from the
// values now (a profile may change while cdc runs): asynchronous inserts
// the user turned on are waited for, off they are kept off; nothing where
// the profile fixes both safely, or on a server without them (18.16
// refuses unknown settings); an error where it fixes them unwaited.
func TestInsertSettingsFor(t *testing.T) {
	free := map[string]string{"async_insert": "0", "wait_for_async_insert": "0"}
	fixed := map[string]string{"async_insert": "1", "wait_for_async_insert": "1"}
	asyncFixed := map[string]string{"async_insert": "1", "wait_for_async_insert": "0"}
	waitFixed := map[string]string{"async_insert": "0", "wait_for_async_insert": "1"}
	v := func(async, wait string) map[string]string {
		return map[string]string{"async_insert": async, "wait_for_async_insert": wait}
	}
	for _, tc := range []struct {
		name             string
		values, readonly map[string]string
		want             string
	}{
		{"server without them", map[string]string{}, map[string]string{}, "map[]"},
		{"off, changeable", v("0", "1"), free, "map[async_insert:0]"},
		{"off and unwaited, changeable", v("0", "0"), free, "map[async_insert:0]"},
		{"on unwaited, changeable", v("1", "0"), free, "map[wait_for_async_insert:1]"},
		{"on waited, changeable: kept, and waited", v("1", "1"), free, "map[wait_for_async_insert:1]"},
		{"async fixed off, wait changeable", v("0", "0"), asyncFixed, "map[wait_for_async_insert:1]"},
		{"async fixed on, wait changeable", v("1", "0"), asyncFixed, "map[wait_for_async_insert:1]"},
		{"wait fixed on, async changeable and on", v("1", "1"), waitFixed, "map[]"},
		{"wait fixed on, async changeable and off", v("0", "1"), waitFixed, "map[]"},
		{"wait fixed off, async changeable and off", v("0", "0"), waitFixed, "map[async_insert:0]"},
		{"wait fixed off, async changeable and on", v("1", "0"), waitFixed, "map[async_insert:0]"},
		{"both fixed, waited", v("1", "1"), fixed, "map[]"},
		{"both fixed off", v("0", "0"), fixed, "map[]"},
		{"both fixed, unwaited", v("1", "0"), fixed, "error"},
	} {
		s, err := insertSettingsFor(tc.values, tc.readonly)
		got := fmt.Sprint(map[string]any(s))
		if err != nil {
			got = "error"
			if !strings.Contains(err.Error(), "set wait_for_async_insert = 1 or async_insert = 0 for this user") {
				t.Errorf("%s: error %q does not say what to set", tc.name, err)
			}
		}
		if got != tc.want {
			t.Errorf("%s: insertSettingsFor = %s, want %s", tc.name, got, tc.want)
		}
	}
}
