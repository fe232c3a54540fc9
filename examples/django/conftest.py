"""Test setup: a real PostgreSQL holding cdc's outbox table.

The server is CDC_TEST_PG_DSN when set (CI), otherwise one this file starts
with scripts/localdb.sh under a temporary folder and stops at the end.
pytest-django then creates a test database on it, runs Django's migrations
and, below, applies cdc's own DDL (sql/postgres.sql, what `cdc migrate`
runs) for the outbox table.
"""

import atexit
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile

import psycopg2
import pytest

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
LOCALDB = REPO / "scripts" / "localdb.sh"
POSTGRES_DDL = REPO / "sql" / "postgres.sql"

_localdb_dir = None


def _stop_localdb():
    global _localdb_dir
    if _localdb_dir:
        subprocess.run([str(LOCALDB), "stop", _localdb_dir], check=False, capture_output=True)
        shutil.rmtree(_localdb_dir, ignore_errors=True)
        _localdb_dir = None


def _exit_on_sigterm(signum, frame):
    # KeyboardInterrupt, as for Ctrl-C: pytest ends the run on it, in a test
    # or between tests, and pytest_unconfigure stops the servers (a
    # SystemExit inside a test would only fail that test).
    raise KeyboardInterrupt


def _start_localdb():
    global _localdb_dir
    _localdb_dir = tempfile.mkdtemp(prefix="cdc-django-")
    # PostgreSQL runs as the postgres user when the tests run as root.
    os.chmod(_localdb_dir, 0o755)
    atexit.register(_stop_localdb)
    # Python ends on SIGTERM (a timeout, an IDE's stop button, a cancelled
    # CI job) without running atexit: the servers, which run in sessions of
    # their own, would be left running.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    proc = subprocess.run([str(LOCALDB), "start", _localdb_dir], capture_output=True, text=True)
    if proc.returncode != 0:
        _stop_localdb()
        raise pytest.UsageError(f"{LOCALDB} start failed:\n{proc.stderr}")
    env = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return env["CDC_PG_DSN"]


def pytest_configure(config):
    dsn = os.environ.get("CDC_TEST_PG_DSN") or _start_localdb()
    os.environ["DATABASE_URL"] = dsn
    os.environ["DJANGO_SETTINGS_MODULE"] = "exampleproject.settings"
    from django.conf import settings

    settings.DATABASES  # load the settings now; pytest-django then sets Django up


def pytest_unconfigure(config):
    _stop_localdb()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The test database, with cdc's outbox table."""
    from django.db import connection

    ddl = POSTGRES_DDL.read_text().replace("{{.Publication}}", "cdc_outbox")
    with django_db_blocker.unblock():
        with connection.cursor() as cursor:
            cursor.execute(ddl)


@pytest.fixture
def outbox_rows(transactional_db):
    """Empties the outbox; returns a function reading it back, committed
    rows only: it reads over a connection of its own."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE outbox")

    def rows():
        s = connection.settings_dict
        conn = psycopg2.connect(
            dbname=s["NAME"],
            user=s["USER"],
            password=s["PASSWORD"],
            host=s["HOST"],
            port=s["PORT"],
            **s["OPTIONS"],
        )
        try:
            with conn.cursor() as cursor:
                cursor.execute(
                    """SELECT id::text AS id, event_type, event_date_time, environment, event_context::text,
                              metadata_version, traceparent
                       FROM outbox ORDER BY event_date_time, ctid"""
                )
                names = [c.name for c in cursor.description]
                return [dict(zip(names, r)) for r in cursor.fetchall()]
        finally:
            conn.close()

    return rows
