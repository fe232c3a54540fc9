#!/usr/bin/env bash
# Runs the Django example's tests against a real PostgreSQL: the server named
# by CDC_TEST_PG_DSN, or else one that conftest.py starts with
# scripts/localdb.sh. Needs Debian's python3-django, python3-psycopg2,
# python3-pytest and python3-pytest-django (no pip). Extra arguments go to
# pytest. Exits non-zero when a test fails (or none ran).
set -euo pipefail
cd "$(dirname "$0")"
export PYTHONDONTWRITEBYTECODE=1

# A pyenv or virtualenv python3 may shadow the system one that has the
# Debian packages: take the first python3 that can import them.
py=${PYTHON:-}
if [ -z "$py" ]; then
	for candidate in python3 /usr/bin/python3; do
		if command -v "$candidate" >/dev/null && "$candidate" -c 'import django, psycopg2, pytest, pytest_django' 2>/dev/null; then
			py=$candidate
			break
		fi
	done
fi
if [ -z "$py" ]; then
	echo "run-tests.sh: no python3 with Django, psycopg2, pytest and pytest-django;" >&2
	echo "  apt-get install python3-django python3-psycopg2 python3-pytest python3-pytest-django" >&2
	exit 1
fi
exec "$py" -m pytest "$@"
