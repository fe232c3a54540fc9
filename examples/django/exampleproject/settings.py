"""Settings of the outbox example project.

DATABASE_URL names the PostgreSQL database, e.g.
postgres://postgres@127.0.0.1:5432/app?sslmode=disable. It must hold the
outbox table, which `cdc migrate` creates (sql/postgres.sql in the cdc repo).
APP_ENV is the environment events are published in (default "dev").
"""

import os
from urllib.parse import parse_qsl, unquote, urlsplit


def database_from_url(url):
    """Django's DATABASES entry for a postgres:// URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"DATABASE_URL must be a postgres:// URL, not {url!r}")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "OPTIONS": dict(parse_qsl(parts.query)),
        # One test database per test run, so runs sharing a server do not
        # clobber each other's.
        "TEST": {"NAME": f"test_outbox_example_{os.getpid()}"},
    }


SECRET_KEY = "outbox-example-not-secret"
DEBUG = False
ALLOWED_HOSTS = []
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "accounts",
]

DATABASES = {
    "default": database_from_url(
        os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    )
}

# The environment every event is published in, unless publish() is told
# otherwise.
CDC_ENVIRONMENT = os.environ.get("APP_ENV", "dev")
