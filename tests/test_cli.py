"""The ``livehub project`` and ``livehub key`` commands, run as the operator runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hub.settings import Settings
from hub.store import open_store
from tests.conftest import ROOT


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        lines = self.stdout.splitlines()
        assert len(lines) == 1, self.stdout
        return json.loads(lines[0])


def livehub(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Run:
    """Run ``python -m hub ARGS`` with no HUB_* setting but those given."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    done = subprocess.run(
        [sys.executable, "-m", "hub", *args],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )
    return Run(done.returncode, done.stdout, done.stderr)


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


def test_project_create_and_list(db: str, tmp_path: Path) -> None:
    first = livehub("project", "create", "--name", "Shop", "--database-url", db, cwd=tmp_path)
    assert (first.code, first.stderr) == (0, "")
    assert list(first.json) == ["projectId", "projectKey", "name"]
    assert first.json["projectId"] == 1 and first.json["name"] == "Shop"
    assert re.fullmatch(r"[A-Za-z0-9]{20}", first.json["projectKey"])
    second = livehub("project", "create", "--name", "Blog 📝", "--database-url", db, cwd=tmp_path)
    assert second.json["projectId"] == 2 and second.json["name"] == "Blog 📝"
    listed = livehub("project", "list", "--database-url", db, cwd=tmp_path)
    assert listed.code == 0
    assert listed.json == {"projects": [first.json, second.json]}


async def test_key_create_and_revoke(db: str, tmp_path: Path) -> None:
    livehub("project", "create", "--name", "Shop", "--database-url", db, cwd=tmp_path)
    made = livehub(
        "key", "create", "--project", "1", "--name", "ci", "--database-url", db, cwd=tmp_path
    )
    assert (made.code, made.stderr) == (0, "")
    assert made.json["projectId"] == 1 and made.json["name"] == "ci"
    org = livehub("key", "create", "--database-url", db, cwd=tmp_path)
    assert org.json["projectId"] is None

    store = open_store(Settings(database_url=db))
    await store.open()
    try:
        key = await store.authenticate(made.json["key"])
        assert key is not None and key.key_id == made.json["keyId"] and key.project_id == 1
        assert await store.authenticate(org.json["key"]) is not None

        revoked = livehub("key", "revoke", made.json["keyId"], "--database-url", db, cwd=tmp_path)
        assert (revoked.code, revoked.stderr) == (0, "")
        assert revoked.json == {"keyId": made.json["keyId"], "revoked": True}
        assert await store.authenticate(made.json["key"]) is None
        assert await store.authenticate(org.json["key"]) is not None
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("key", "revoke", "nosuchkey"), "key nosuchkey not found"),
        (("key", "create", "--project", "7"), "project 7 not found"),
        (("key", "create", "--project", "-1"), "project -1 not found"),
        (("project", "create", "--name", " "), "--name must not be empty"),
    ],
)
def test_errors_exit_1_with_one_line_on_stderr(
    sqlite_url: str, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    run = livehub(*args, "--database-url", sqlite_url, cwd=tmp_path)
    assert run.code == 1
    assert run.stdout == ""
    assert run.stderr == f"livehub: {message}\n"


@pytest.mark.parametrize(
    "args",
    [
        ("project", "create"),
        ("project",),
        ("project", "delete", "--name", "x"),
        ("key", "create", "--project", "abc"),
        ("key", "revoke"),
        ("frobnicate",),
    ],
)
def test_bad_usage_exits_2(sqlite_url: str, tmp_path: Path, args: tuple[str, ...]) -> None:
    run = livehub(*args, cwd=tmp_path, env={"HUB_DATABASE_URL": sqlite_url})
    assert run.code == 2
    assert run.stdout == ""
    assert "usage: livehub" in run.stderr


def test_the_database_comes_from_the_environment_or_the_default(
    sqlite_url: str, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = {"HUB_DATABASE_URL": sqlite_url}
    assert livehub("project", "create", "--name", "A", cwd=work, env=env).code == 0
    assert livehub("project", "create", "--name", "B", cwd=work, env=env).json["projectId"] == 2
    default = livehub("project", "create", "--name", "C", cwd=work)
    assert (default.code, default.json["projectId"]) == (0, 1)
    assert (work / "livehub.db").is_file()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://db/x", "HUB_DATABASE_URL"),
        ("sqlite:///{tmp}/missing/dir/x.db", "cannot open the SQLite database"),
        ("postgresql://postgres@127.0.0.1:1/x", "cannot connect to PostgreSQL"),
    ],
)
def test_a_database_that_cannot_be_used_fails_cleanly(
    tmp_path: Path, url: str, message: str
) -> None:
    run = livehub("project", "list", "--database-url", url.format(tmp=tmp_path), cwd=tmp_path)
    assert run.code == 1
    assert run.stdout == ""
    assert message in run.stderr
    assert "Traceback" not in run.stderr
    assert len(run.stderr.splitlines()) == 1
