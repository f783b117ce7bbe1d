"""Versioned schema migrations, shipped as package data under ``hub/store/migrations/<dialect>/``.

A migration is a file ``NNN_description.sql``; ``NNN`` is its version. Each store applies, at
open and inside one transaction holding a lock, every migration whose version is above the
highest one recorded in its ``schema_version`` table, and records it there.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from importlib import resources

_FILE = re.compile(r"(\d{3})_[a-z0-9_]+\.sql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(dialect: str) -> list[Migration]:
    """Every migration of ``dialect`` (``sqlite`` or ``postgres``), oldest first."""
    folder = resources.files("hub.store").joinpath("migrations", dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE.fullmatch(entry.name)
        if match is None:
            continue
        found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two {dialect} migrations share a version: {versions}")
    return found


def sqlite_statements(sql: str) -> list[str]:
    """Split a SQLite script into complete statements (trigger bodies hold ``;`` too)."""
    statements: list[str] = []
    pending = ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip() and not _only_comments(pending):
        raise RuntimeError(f"incomplete SQL statement at the end of a migration: {pending!r}")
    return statements


def _only_comments(sql: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in sql.splitlines())
