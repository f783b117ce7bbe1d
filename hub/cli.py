"""The ``livehub`` command: serve a node, manage projects and keys.

Each management command prints one JSON object on stdout; errors go to stderr with exit 1
(2 for bad usage).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from hub.errors import HubError, SettingsError
from hub.settings import SETTINGS, Settings


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # exit 2 with one line, as argparse does
        self.print_usage(sys.stderr)
        self.exit(2, f"livehub: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="livehub", description="A real-time hub for live user sessions.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="run one hub node")
    for spec in SETTINGS:
        if spec.flag:
            serve.add_argument(spec.flag, dest=spec.attr, default=None, help=spec.help)

    project = commands.add_parser("project", help="manage projects")
    project_commands = project.add_subparsers(dest="action", required=True, parser_class=_Parser)
    create = project_commands.add_parser("create", help="create a project")
    create.add_argument("--name", required=True)
    project_list = project_commands.add_parser("list", help="list projects")

    key = commands.add_parser("key", help="manage API keys")
    key_commands = key.add_subparsers(dest="action", required=True, parser_class=_Parser)
    key_create = key_commands.add_parser("create", help="create an API key")
    key_create.add_argument("--project", type=int, default=None, help="project id")
    key_create.add_argument("--name", default="")
    key_revoke = key_commands.add_parser("revoke", help="revoke an API key")
    key_revoke.add_argument("key_id")

    for sub in (create, project_list, key_create, key_revoke):
        sub.add_argument("--database-url", dest="database_url", default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "action")}
    try:
        settings = Settings.from_env(flags=flags)
    except SettingsError as e:
        print(f"livehub: {e}", file=sys.stderr)
        return 1
    if args.command == "serve":
        return serve(settings)
    try:
        result = asyncio.run(_manage(settings, args))
    except HubError as e:
        print(f"livehub: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


async def _manage(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from hub.store import open_store
    from hub.store.base import SessionStore

    store = open_store(settings)
    await store.open()
    try:
        actions: dict[tuple[str, str], Callable[[SessionStore], Awaitable[dict[str, Any]]]] = {
            ("project", "create"): lambda s: _project_create(s, args.name),
            ("project", "list"): _project_list,
            ("key", "create"): lambda s: _key_create(s, args.project, args.name),
            ("key", "revoke"): lambda s: _key_revoke(s, args.key_id),
        }
        return await actions[(args.command, args.action)](store)
    finally:
        await store.close()


async def _project_create(store: Any, name: str) -> dict[str, Any]:
    if not name.strip():
        from hub.errors import InvalidInput

        raise InvalidInput("--name must not be empty", "name")
    p = await store.create_project(name)
    return {"projectId": p.project_id, "projectKey": p.project_key, "name": p.name}


async def _project_list(store: Any) -> dict[str, Any]:
    projects = await store.list_projects()
    return {
        "projects": [
            {"projectId": p.project_id, "projectKey": p.project_key, "name": p.name}
            for p in projects
        ]
    }


async def _key_create(store: Any, project_id: int | None, name: str) -> dict[str, Any]:
    k = await store.create_key(project_id, name)
    return {"keyId": k.key_id, "key": k.secret, "projectId": k.project_id, "name": k.name}


async def _key_revoke(store: Any, key_id: str) -> dict[str, Any]:
    await store.revoke_key(key_id)
    return {"keyId": key_id, "revoked": True}


# Python's cyclic garbage collector looks at the young objects every 700 net allocations, and as
# the heap grows it walks all of it: with thousands of connections held, a node spent so much
# time there that 10,000 registrations ran at 724/s instead of 1,008/s, connect p99 1.17 s instead
# of 0.63 s (docs/optimisations.md, P2). What a node allocates per event is almost all freed by
# reference counting, so it looks far less often; what start-up built (modules, parsers, tables)
# is frozen out of every collection.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Collect once, freeze what survives (start-up's objects), and collect far less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serve(settings: Settings) -> int:
    """Run one node until SIGTERM or SIGINT; the cleanup contexts flush what is owed."""
    from aiohttp import web

    from hub import logs
    from hub.app import create_app

    logs.configure(settings.log_level, settings.log_format)
    app = create_app(settings)

    async def announce(_: web.Application) -> None:
        tune_gc()
        logging.getLogger("hub").info(
            "livehub node %s listening on http://%s:%d (socket path %s, registry %s)",
            settings.node_id,
            settings.host,
            settings.port,
            settings.socket_path,
            "redis" if settings.redis_url else "in-process",
        )

    app.on_startup.append(announce)
    try:
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            backlog=settings.listen_backlog,
            print=None,
            access_log=None,
            handle_signals=True,
            shutdown_timeout=5.0,
            reuse_address=True,
        )
    except OSError as e:
        print(f"livehub: cannot listen on {settings.host}:{settings.port}: {e}", file=sys.stderr)
        return 1
    except HubError as e:
        print(f"livehub: {e}", file=sys.stderr)
        return 1
    return 0
