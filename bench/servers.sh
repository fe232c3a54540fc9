# servers.sh is sourced by the bench's helper scripts (run from the module
# root). fresh_servers DIR starts throwaway PostgreSQL and ClickHouse under
# DIR with scripts/localdb.sh, removing what an earlier run left there,
# exports their DSNs (CDC_PG_DSN, CDC_CLICKHOUSE_DSN, LOCALDB_*), and stops
# them when the script exits. A script with more to clean up sets on_exit
# to a command run first.
on_exit=:
fresh_servers() {
	servers_dir=$1
	scripts/localdb.sh stop "$servers_dir" >/dev/null 2>&1 || true
	rm -rf "$servers_dir"
	mkdir -p "$servers_dir"
	eval "$(scripts/localdb.sh start "$servers_dir" | sed 's/^/export /')"
	trap 'eval "$on_exit"; scripts/localdb.sh stop "$servers_dir" >/dev/null' EXIT
}
