"""The store of projects, API keys, the JWT secret and stored sessions (see :mod:`.base`)."""

from __future__ import annotations

from hub.errors import SettingsError
from hub.settings import Settings
from hub.store.base import SessionStore
from hub.store.postgres import PostgresStore
from hub.store.sqlite import SqliteStore, sqlite_path


def open_store(settings: Settings) -> SessionStore:
    """The store named by ``settings.database_url``; call ``await store.open()`` before use.

    ``sqlite:///PATH`` (``sqlite:///./livehub.db`` is relative, ``sqlite:////var/lib/x.db``
    absolute) or ``postgresql://…`` / ``postgres://…``.
    """
    url = settings.database_url
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or not sqlite_path(url):
            raise SettingsError("HUB_DATABASE_URL: a SQLite URL is sqlite:///PATH")
        return SqliteStore(
            sqlite_path(url),
            jwt_secret=settings.jwt_secret,
            search_timeout=settings.search_timeout,
        )
    if scheme in ("postgresql", "postgres"):
        return PostgresStore(
            url, jwt_secret=settings.jwt_secret, search_timeout=settings.search_timeout
        )
    raise SettingsError("HUB_DATABASE_URL: must be sqlite:///PATH or postgresql://…")


__all__ = ["SessionStore", "open_store"]
