#!/usr/bin/env bash
# localdb.sh starts and stops a throwaway PostgreSQL 15 (wal_level=logical) and
# ClickHouse server under one folder, on loopback only. It is the single way
# the test harness, `make test` and `make demo` get their databases, so what
# the tests run against is what the demo shows.
#
#   scripts/localdb.sh start DIR [PG_PORT CH_PORT]   start both, print DSNs as env lines
#                                                    (a failed start stops what it started)
#   scripts/localdb.sh stop DIR                      stop both (safe to call twice)
#   scripts/localdb.sh env DIR                       print the DSN env lines again
#   scripts/localdb.sh stop-ch|start-ch|crash-ch|restart-pg|crash-pg DIR   fault injection for tests
#                                                    (crash-pg: an immediate stop, as a crash:
#                                                    no checkpoint, WAL replayed at the start;
#                                                    crash-ch: SIGKILL, then a start)
#
# LOCALDB_CH_TIMEZONE (default UTC) is the ClickHouse server's timezone, the
# zone of a plain DateTime column, for the tests that check a value lands as
# the same instant whatever that zone is. A restart keeps the folder's zone.
set -euo pipefail
# The servers' locale is the project's, not the caller's: an ssh session
# often forwards a LANG the machine has no locale for (initdb refuses to
# start then), and a cluster would take the caller's collation.
export LC_ALL=C.UTF-8 LANG=C.UTF-8
unset LANGUAGE
# Debian puts clickhouse-server in /usr/sbin, which a regular user's PATH
# lacks.
export PATH="$PATH:/usr/sbin:/sbin"

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop|env DIR [PG_PORT CH_PORT]" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

pgbin=${PG_BIN:-$(ls -d /usr/lib/postgresql/15/bin 2>/dev/null || dirname "$(command -v postgres 2>/dev/null || echo /nonexistent/postgres)")}
[ -x "$pgbin/postgres" ] || { echo "localdb: PostgreSQL 15 server binaries not found (apt-get install postgresql-15)" >&2; exit 1; }

# A free port below the kernel's ephemeral range: the fault tests stop a
# server and start it again on its port, and a port from the ephemeral
# range may meanwhile be the local end of one of the suite's own client
# connections, which would fail that start (address in use). Ports given
# as arguments are skipped: ones already chosen for a server that is not
# listening yet (ClickHouse's native port when its HTTP port is chosen).
free_port() {
	python3 - "$@" <<'PY' 2>/dev/null || echo $((15000 + RANDOM % 15000))
import random, socket, sys
taken = {int(p) for p in sys.argv[1:] if p.isdigit()}
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    low = 32768
candidates = list(range(10000, low)) if low > 11000 else []
random.shuffle(candidates)
for port in [p for p in candidates if p not in taken][:200] or [0]:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(s.getsockname()[1])
        break
else:
    raise SystemExit(1)
PY
}

# PostgreSQL refuses to run as root; run it as the postgres user then.
as_pg() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

print_env() {
	local pgport chport
	pgport=$(cat "$dir/pg.port")
	chport=$(cat "$dir/ch.port")
	echo "CDC_PG_DSN=postgres://postgres@127.0.0.1:$pgport/postgres?sslmode=disable"
	echo "CDC_CLICKHOUSE_DSN=clickhouse://default@127.0.0.1:$chport/default"
	echo "LOCALDB_PG_PORT=$pgport"
	echo "LOCALDB_CH_PORT=$chport"
}

# socket_dir is the folder of PostgreSQL's Unix socket: this folder, unless
# the socket's path (folder + "/.s.PGSQL.NNNNN") would not fit the 107
# bytes a Unix socket's path may have, as in a deep clone; then a short
# folder under /tmp named after this one, removed again by stop. The
# choice is kept in pg.socket_dir for the test harness and the bench.
socket_dir() {
	if [ "$(printf %s "$dir" | wc -c)" -le 92 ]; then
		echo "$dir"
	else
		echo "/tmp/cdc-pg-$(printf %s "$dir" | md5sum | cut -c1-16)"
	fi
}

start_pg() {
	local port=$1 sock
	sock=$(socket_dir)
	if [ "$sock" != "$dir" ]; then
		mkdir -p "$sock"
		[ "$(id -u)" = 0 ] && chown postgres "$sock"
	fi
	echo "$sock" >"$dir/pg.socket_dir"
	if [ ! -f "$dir/pg/PG_VERSION" ]; then
		mkdir -p "$dir/pg"
		[ "$(id -u)" = 0 ] && chown postgres "$dir" "$dir/pg"
		# As root the server runs as postgres, which must be able to reach
		# the folder: a clone under /root (mode 700) is out of its reach.
		as_pg test -x "$dir/pg" || {
			echo "localdb: the postgres user cannot reach $dir: a parent folder is private (e.g. /root, mode 700)." >&2
			echo "localdb: run as a regular user, or from a clone that postgres can enter (e.g. under /srv or /tmp)." >&2
			exit 1
		}
		as_pg "$pgbin/initdb" -D "$dir/pg" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync >"$dir/pg-initdb.log" 2>&1 ||
			{ cat "$dir/pg-initdb.log" >&2; exit 1; }
		cat >>"$dir/pg/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sock'
wal_level = logical
max_wal_senders = 20
max_replication_slots = 40
max_connections = 200
fsync = off
full_page_writes = off
shared_buffers = 256MB
max_wal_size = 4GB
wal_sender_timeout = 60s
CONF
		echo "host replication all 127.0.0.1/32 trust" >>"$dir/pg/pg_hba.conf"
	fi
	# -k as well as the setting: a folder initialised elsewhere, or by an
	# older script, gets this start's socket folder. pg_ctl hands the
	# options to a shell, hence the quoting. A server of this folder that
	# already runs is not ours to stop if this start fails.
	pg_runs || started_pg=1
	as_pg "$pgbin/pg_ctl" -D "$dir/pg" -o "-p $port -k $(printf %q "$sock")" -l "$dir/pg.log" -w -t 60 start >/dev/null || {
		echo "localdb: PostgreSQL did not start on port $port; log:" >&2
		tail -n 30 "$dir/pg.log" >&2 || true
		exit 1
	}
	echo "$port" >"$dir/pg.port"
}

start_ch() {
	local port=$1 http tls="" secure="" tz
	tz=${LOCALDB_CH_TIMEZONE:-$(cat "$dir/ch.timezone" 2>/dev/null || echo UTC)}
	case "$tz" in *[!A-Za-z0-9/_+-]*|"") echo "localdb: LOCALDB_CH_TIMEZONE=$tz is not a timezone name" >&2; exit 2 ;; esac
	echo "$tz" >"$dir/ch.timezone"
	mkdir -p "$dir/ch/data" "$dir/ch/tmp" "$dir/ch/log" "$dir/ch/user_files" "$dir/ch/format_schemas"
	# A certificate in ch/tls (a test puts one there) adds the native
	# protocol over TLS on a port of its own, kept in ch.secure_port.
	if [ -f "$dir/ch/tls/server.crt" ] && [ -f "$dir/ch/tls/server.key" ]; then
		secure=$(cat "$dir/ch.secure_port" 2>/dev/null || free_port "$port")
		echo "$secure" >"$dir/ch.secure_port"
		tls="<tcp_port_secure>$secure</tcp_port_secure>
  <openSSL><server><certificateFile>$dir/ch/tls/server.crt</certificateFile><privateKeyFile>$dir/ch/tls/server.key</privateKeyFile><verificationMode>none</verificationMode><loadDefaultCAFile>false</loadDefaultCAFile><cacheSessions>true</cacheSessions><disableProtocols>sslv2,sslv3</disableProtocols><preferServerCiphers>true</preferServerCiphers></server></openSSL>"
	fi
	# Not the native or TLS port: neither listens yet, so a bind test alone
	# would not rule them out, and a server given one port twice exits.
	# shellcheck disable=SC2086 # $secure: none or one port
	http=$(free_port "$port" $secure)
	cat >"$dir/ch/config.xml" <<CONF
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$dir/ch/log/server.log</log><errorlog>$dir/ch/log/error.log</errorlog><size>10M</size><count>2</count></logger>
  <tcp_port>$port</tcp_port>
  <http_port>$http</http_port>
  $tls
  <listen_host>127.0.0.1</listen_host>
  <path>$dir/ch/data/</path>
  <tmp_path>$dir/ch/tmp/</tmp_path>
  <user_files_path>$dir/ch/user_files/</user_files_path>
  <format_schema_path>$dir/ch/format_schemas/</format_schema_path>
  <users_config>$dir/ch/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <max_concurrent_queries>200</max_concurrent_queries>
  <timezone>$tz</timezone>
  <mlock_executable>false</mlock_executable>
</yandex>
CONF
	# "cdc" is the least-privilege user the connector runs as: it may insert
	# and select but run no DDL (allow_ddl=0; GRANT INSERT, SELECT on servers
	# with SQL access control).
	cat >"$dir/ch/users.xml" <<CONF
<?xml version="1.0"?>
<yandex>
  <profiles>
    <default><max_memory_usage>4000000000</max_memory_usage></default>
    <writer><max_memory_usage>4000000000</max_memory_usage><allow_ddl>0</allow_ddl></writer>
  </profiles>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default>
    <cdc><password>cdc-secret</password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>writer</profile><quota>default</quota></cdc>
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
CONF
	need_ch
	clickhouse-server --config-file="$dir/ch/config.xml" >"$dir/ch/log/stdout.log" 2>&1 &
	local pid=$!
	started_ch=1
	echo "$pid" >"$dir/ch/server.pid"
	echo "$port" >"$dir/ch.port"
	# A deadline, not a count of tries: a try whose client hangs takes
	# its 5 s.
	local deadline=$((SECONDS + 30))
	while [ "$SECONDS" -lt "$deadline" ]; do
		# A server that exited (bad config, port taken) will not answer:
		# no need to wait the 30 s out.
		kill -0 "$pid" 2>/dev/null || break
		# Bounded: on a port another program holds, the client waits 300 s
		# for a handshake that never comes, whatever its timeout settings.
		if timeout 5 clickhouse-client --host 127.0.0.1 --port "$port" -q "SELECT 1" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.25
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "localdb: clickhouse-server did not answer on port $port within 30 s; log:" >&2
	else
		echo "localdb: clickhouse-server exited before answering on port $port; log:" >&2
	fi
	local f
	for f in "$dir/ch/log/error.log" "$dir/ch/log/stdout.log"; do
		[ -s "$f" ] && tail -n 30 "$f" >&2
	done
	exit 1
}

# runs PID WORD: process PID is alive and has WORD in its command line. A
# pid file left by a crash or a reboot may name a process that is not ours
# any more, which must not be signalled.
runs() {
	[ -n "$1" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qxF -- "$2"
}

stop_pg() {
	if [ -f "$dir/pg/postmaster.pid" ]; then
		local pid
		pid=$(head -n 1 "$dir/pg/postmaster.pid")
		if runs "$pid" "$dir/pg"; then
			# A fast stop waits for walsenders to send what is left; one
			# whose client holds it back (a connector that stores nothing
			# while ClickHouse is down) can hold it past the 60 s. Then
			# immediate, then SIGKILL: stop means stopped.
			as_pg "$pgbin/pg_ctl" -D "$dir/pg" -m fast -w -t 60 stop >/dev/null 2>&1 ||
				as_pg "$pgbin/pg_ctl" -D "$dir/pg" -m immediate -w -t 30 stop >/dev/null 2>&1 || {
				kill -9 "$pid" 2>/dev/null || true
				for _ in $(seq 1 40); do runs "$pid" "$dir/pg" || break; sleep 0.25; done
			}
			if runs "$pid" "$dir/pg"; then
				echo "localdb: PostgreSQL (pid $pid) under $dir did not stop" >&2
				return 1
			fi
		else
			rm -f "$dir/pg/postmaster.pid" # stale: its server is gone
		fi
	fi
	local sock
	sock=$(socket_dir)
	case "$sock" in /tmp/cdc-pg-*) rm -rf "$sock" || true ;; esac
}

stop_ch() {
	if [ -f "$dir/ch/server.pid" ]; then
		pid=$(cat "$dir/ch/server.pid" 2>/dev/null || true)
		if runs "$pid" "--config-file=$dir/ch/config.xml"; then
			kill "$pid" 2>/dev/null || true
			for _ in $(seq 1 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
			kill -9 "$pid" 2>/dev/null || true
		fi
		rm -f "$dir/ch/server.pid"
	fi
}

stop_all() {
	local rc=0
	stop_pg || rc=1
	stop_ch || rc=1
	return "$rc"
}

# pg_runs: a PostgreSQL server of this folder is running.
pg_runs() {
	[ -f "$dir/pg/postmaster.pid" ] && runs "$(head -n 1 "$dir/pg/postmaster.pid")" "$dir/pg"
}

# need_pg, need_ch: the binaries a start needs, checked before anything is
# started, so a missing one leaves no server behind.
need_pg() {
	local b
	for b in postgres initdb pg_ctl; do
		[ -x "$pgbin/$b" ] || { echo "localdb: $pgbin/$b not found (apt-get install postgresql-15)" >&2; exit 1; }
	done
	if [ "$(id -u)" = 0 ]; then
		command -v runuser >/dev/null || { echo "localdb: runuser not found: as root, PostgreSQL runs as postgres through runuser (util-linux)" >&2; exit 1; }
		id postgres >/dev/null 2>&1 || { echo "localdb: no postgres user: as root, PostgreSQL runs as postgres (apt-get install postgresql-15 creates it)" >&2; exit 1; }
	fi
}
need_ch() {
	local b
	for b in clickhouse-server clickhouse-client; do
		command -v "$b" >/dev/null || { echo "localdb: $b not found (apt-get install clickhouse-server clickhouse-client)" >&2; exit 1; }
	done
}

# A start that fails stops the servers it started, so a failed start leaves
# nothing running: the caller gets no DSNs, and would not stop them.
started_pg=0
started_ch=0
stop_started() {
	local rc=$? what=""
	trap - EXIT
	[ "$rc" = 0 ] && exit 0
	if [ "$started_ch" = 1 ]; then stop_ch || true; what="ClickHouse"; fi
	if [ "$started_pg" = 1 ]; then stop_pg || true; what="PostgreSQL${what:+ and $what}"; fi
	if [ -n "$what" ]; then
		echo "localdb: start failed; stopped the $what it had started under $dir" >&2
	else
		echo "localdb: start failed; no server was started under $dir" >&2
	fi
	exit "$rc"
}

case "$cmd" in
start)
	need_pg
	need_ch
	trap stop_started EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	trap 'exit 129' HUP
	start_pg "${3:-$(free_port)}"
	start_ch "${4:-$(free_port)}"
	trap - EXIT INT TERM HUP
	print_env
	;;
stop) stop_all ;;
stop-ch) stop_ch ;;
crash-ch)
	# SIGKILL, as a crash or the OOM killer: no query is finished, no
	# part written after the signal.
	pid=$(cat "$dir/ch/server.pid" 2>/dev/null || true)
	if runs "$pid" "--config-file=$dir/ch/config.xml"; then
		kill -9 "$pid" 2>/dev/null || true
		for _ in $(seq 1 40); do runs "$pid" "--config-file=$dir/ch/config.xml" || break; sleep 0.25; done
	fi
	rm -f "$dir/ch/server.pid"
	start_ch "$(cat "$dir/ch.port")"
	;;
start-ch) start_ch "$(cat "$dir/ch.port")" ;;
restart-pg) stop_pg; start_pg "$(cat "$dir/pg.port")" ;;
crash-pg)
	as_pg "$pgbin/pg_ctl" -D "$dir/pg" -m immediate -w -t 30 stop >/dev/null
	start_pg "$(cat "$dir/pg.port")"
	;;
env) print_env ;;
*) echo "usage: $0 start|stop|env DIR [PG_PORT CH_PORT]" >&2; exit 2 ;;
esac
