"""Entry point of a load process: ``python -m bench.worker MODULE:FUNCTION PARAMS_JSON``.

The function is ``async def f(ctl: Control, **params) -> dict``. It talks to the harness in JSON
lines: ``ctl.report(name, **data)`` on stdout, ``await ctl.command(name)`` from stdin. Its return
value is reported as ``result``; an exception as ``error`` (and exit status 1).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import traceback
from typing import Any

from hub.cli import tune_gc


class Control:
    """The worker's side of the conversation with the harness."""

    def __init__(self) -> None:
        self._reader: asyncio.StreamReader | None = None

    def report(self, name: str, **data: Any) -> None:
        sys.stdout.write(json.dumps({"report": name, **data}) + "\n")
        sys.stdout.flush()

    async def command(self, name: str) -> dict[str, Any]:
        """Wait for the harness's command ``name`` (others before it are an error)."""
        message = await self.next_command()
        if message.get("command") != name:
            raise RuntimeError(f"expected command {name!r}, got {message.get('command')!r}")
        return message

    async def next_command(self) -> dict[str, Any]:
        """The harness's next command, whatever it is."""
        if self._reader is None:
            loop = asyncio.get_running_loop()
            self._reader = asyncio.StreamReader(limit=2**24)
            protocol = asyncio.StreamReaderProtocol(self._reader)
            await loop.connect_read_pipe(lambda: protocol, sys.stdin)
        line = await self._reader.readline()
        if not line:
            raise RuntimeError("the harness went away while a command was awaited")
        message: dict[str, Any] = json.loads(line)
        return message


async def _main(target: str, params: dict[str, Any]) -> int:
    module_name, _, function_name = target.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    ctl = Control()
    try:
        result = await function(ctl, **params)
    except Exception as e:
        traceback.print_exc()
        ctl.report("error", message=f"{type(e).__name__}: {e}")
        return 1
    ctl.report("result", **(result or {}))
    return 0


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python -m bench.worker MODULE:FUNCTION PARAMS_JSON")
    # A load process holding thousands of connections pays the same garbage-collector walks as a
    # node (hub/cli.py): tuned the same way, so the load generator is not what a rate measures.
    tune_gc()
    sys.exit(asyncio.run(_main(sys.argv[1], json.loads(sys.argv[2]))))


if __name__ == "__main__":
    main()
