#!/usr/bin/env bash
# deps.sh installs, from Debian's packages, what a make target needs and the
# machine lacks; it installs nothing that is already there, and stops any
# service a package starts on install (the project runs its own servers).
#
#   scripts/deps.sh demo   PostgreSQL 15 and ClickHouse
#   scripts/deps.sh test   + the tools the test suite and its checks use
set -euo pipefail

case "${1:-}" in
demo) packages=(postgresql-15 postgresql-client-15 clickhouse-server clickhouse-client curl python3) ;;
test) packages=(
	make                                 # make test
	gcc libc6-dev                        # go test -race needs cgo
	postgresql-15 postgresql-client-15   # the source database (server binaries run by the harness)
	clickhouse-server clickhouse-client  # the sink
	prometheus python3-yaml              # promtool and PyYAML: alert rules and dashboard checks
	python3-django python3-psycopg2 python3-pytest python3-pytest-django  # the Django example's tests
	docker-compose                       # validates docker-compose.yml
) ;;
*) echo "usage: $0 demo|test" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

echo "installing Debian packages: ${missing[*]}"
sudo=""
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null || { echo "deps.sh: need root or sudo to install ${missing[*]}" >&2; exit 1; }
	sudo=sudo
fi
# sudo resets the environment: pass the frontend on explicitly.
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for s in clickhouse-server prometheus postgresql; do
	if printf '%s\n' "${missing[@]}" | grep -q "^$s"; then
		$sudo service "$s" stop >/dev/null 2>&1 || true
	fi
done
