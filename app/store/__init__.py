"""The call store, chosen by CALL_STORE_URL: `open_store(url)` (see app/store/base.py for what it holds).

    sqlite:///bargein-calls.db     one SQLite file (relative to the working directory; sqlite:////abs.db)
    postgresql://user:pw@host/db   PostgreSQL, shared by every replica (also postgres://)
    memory://                      nothing kept outside the process (records in memory, as before the store)
"""

from __future__ import annotations

from urllib.parse import urlsplit

from app.store.base import CallStore, StoreError

SCHEMES = ("sqlite", "postgresql", "postgres", "memory")


def store_scheme(url: str) -> str:
    """The URL's scheme if it names a store this build has; ValueError otherwise."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(
            f"CALL_STORE_URL must start with sqlite:///, postgresql:// or memory:// (got scheme {scheme!r})")
    if scheme == "sqlite":
        from app.store.sqlite import sqlite_path

        sqlite_path(url)  # raises on a URL without a path
    return scheme


def is_shared(url: str) -> bool:
    """True when the store can be reached from other hosts, so several replicas may serve the same calls."""
    return store_scheme(url) in ("postgresql", "postgres")


def open_store(url: str) -> CallStore | None:
    """The store CALL_STORE_URL names, not yet started (`await store.start()`); None for memory://."""
    scheme = store_scheme(url)
    if scheme == "memory":
        return None
    if scheme == "sqlite":
        from app.store.sqlite import SqliteStore, sqlite_path

        return SqliteStore(sqlite_path(url))
    from app.store.postgres import PostgresStore  # asyncpg is imported only when PostgreSQL is configured

    return PostgresStore(url)


def safe_url(url: str) -> str:
    """The URL for a log line: the password replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


__all__ = ["CallStore", "StoreError", "is_shared", "open_store", "safe_url", "store_scheme"]
