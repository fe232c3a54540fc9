#!/usr/bin/env bash
# deps.sh installs, from Debian's packages (Debian 12, bookworm: the one
# with PostgreSQL 15 and ClickHouse), what a make target needs and the
# machine lacks. It installs nothing that is already there, and stops and
# keeps from starting at boot any service a package it installs starts
# (the project runs its own servers, on ports of their own).
#
#   scripts/deps.sh demo   PostgreSQL 15 and ClickHouse
#   scripts/deps.sh test   + what `make test` uses
#   scripts/deps.sh ci     + what .ci/run's other checks use
set -euo pipefail

# ca-certificates: go build fetches modules over HTTPS, and a minimal
# system may lack the CA bundle (curl only recommends it).
demo=(postgresql-15 postgresql-client-15 clickhouse-server clickhouse-client curl ca-certificates python3)
test=(
	"${demo[@]}"
	make                                 # make test
	gcc libc6-dev                        # go test -race needs cgo
	tzdata                               # the unit tests run in a zone other than UTC
	python3-django python3-psycopg2      # e2e's Django use case (skipped without them)
)
case "${1:-}" in
demo) packages=("${demo[@]}") ;;
test) packages=("${test[@]}") ;;
ci) packages=(
	"${test[@]}"
	prometheus python3-yaml              # promtool and PyYAML: alert rules and dashboard checks
	python3-pytest python3-pytest-django # the Django example's own tests
	docker-compose                       # validates docker-compose.yml
) ;;
*) echo "usage: $0 demo|test|ci" >&2; exit 2 ;;
esac

# Installed, not merely known to dpkg: a package removed without a purge
# keeps its configuration and a status dpkg -s accepts.
installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }

missing=()
for p in "${packages[@]}"; do
	installed "$p" || missing+=("$p")
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
just_installed() { printf '%s\n' "${missing[@]}" | grep -qx "$1"; }
# Debian's own cluster of the PostgreSQL just installed: stopped, and left
# to start by hand only (start.conf), not at boot; other clusters on the
# machine are not touched.
if just_installed postgresql-15 && [ -f /etc/postgresql/15/main/start.conf ]; then
	$sudo pg_ctlcluster 15 main stop >/dev/null 2>&1 || true
	echo manual | $sudo tee /etc/postgresql/15/main/start.conf >/dev/null
fi
for s in clickhouse-server prometheus; do
	just_installed "$s" || continue
	if [ -d /run/systemd/system ]; then
		$sudo systemctl disable --now "$s" >/dev/null 2>&1 || true
	else
		$sudo service "$s" stop >/dev/null 2>&1 || true
	fi
done
