# servers.sh is sourced by the bench's helper scripts (run from the module
# root). fresh_servers DIR starts throwaway PostgreSQL and ClickHouse under
# DIR with scripts/localdb.sh, removing what an earlier run left there,
# exports their DSNs (CDC_PG_DSN, CDC_CLICKHOUSE_DSN, LOCALDB_*), and stops
# them when the script exits. A script with more to clean up sets on_exit
# to a command run first. migrated_servers DIR does that, builds cdc into
# DIR and runs `cdc migrate` on the servers. insert_backlog N inserts the
# bench's backlog (bench/main.go, insertBacklog) into the migrated outbox,
# in one transaction; insert_transactions N the same events each in its
# own; seconds_since T0 prints the seconds since T0, a `date +%s%N`.
on_exit=:
fresh_servers() {
	servers_dir=$1
	scripts/localdb.sh stop "$servers_dir" >/dev/null 2>&1 || true
	rm -rf "$servers_dir"
	mkdir -p "$servers_dir"
	# The trap first: a start that fails halfway leaves a server running.
	trap 'eval "$on_exit"; scripts/localdb.sh stop "$servers_dir" >/dev/null' EXIT
	started=$(scripts/localdb.sh start "$servers_dir") # captured: a failed start stops here (set -e)
	eval "$(sed 's/^/export /' <<<"$started")"
}

migrated_servers() {
	fresh_servers "$1"
	go build -buildvcs=false -o "$1/cdc" ./cmd/cdc
	"$1/cdc" migrate >"$1/migrate.log" 2>&1
}

# The event_context expression of bench/main.go (eventContextSQL), over i.
event_context_sql() {
	sed -n '/^const eventContextSQL = `/,/::json`$/p' bench/main.go |
		sed -E 's/^const eventContextSQL = `//; s/^\t`//; s/` \+$//; s/`$//' | tr -d '\n'
}

insert_backlog() {
	local ctx
	ctx=$(event_context_sql)
	command psql -X -q -v ON_ERROR_STOP=1 "$CDC_PG_DSN" \
		-c "INSERT INTO outbox (event_type, environment, event_context, traceparent)
			SELECT 'order.created', 'production', $ctx, '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
			FROM generate_series(1, $1) AS i" \
		-c "VACUUM ANALYZE outbox" -c "CHECKPOINT"
}

# insert_transactions N inserts the bench's N events each in a transaction
# of its own, as the bench's step "many" does (bench/many.go).
insert_transactions() {
	command psql -X -q -v ON_ERROR_STOP=1 "$CDC_PG_DSN" \
		-c "DO \$\$ BEGIN FOR i IN 1..$1 LOOP
			INSERT INTO outbox (event_type, environment, event_context, traceparent)
			VALUES ('order.created', 'production', $(event_context_sql), '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01');
			COMMIT; END LOOP; END \$\$" \
		-c "VACUUM ANALYZE outbox" -c "CHECKPOINT"
}

seconds_since() {
	awk -v a="$1" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'
}
