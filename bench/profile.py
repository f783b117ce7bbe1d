"""Sampling profiles of hub processes with py-spy (``--profile``): where a node spends its CPU.

py-spy attaches to a running ``livehub serve`` (it needs ptrace: root, or
``kernel.yama.ptrace_scope`` 0), samples it 100 times a second without slowing it much, and
writes collapsed stacks. :func:`summarize` turns them into the functions that use the most CPU,
by self time and inclusive time.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path

RATE = 100
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    """The py-spy executable of this environment, if installed (``pip install -e .[bench]``)."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


class Profiler:
    """py-spy recording one process until :meth:`stop`."""

    def __init__(self, pid: int, output: Path) -> None:
        self.pid = pid
        self.output = output
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("--profile needs py-spy: pip install -e '.[bench]'")
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            exe, "record", "--pid", str(self.pid), "--rate", str(RATE), "--format", "raw",
            "--output", str(self.output), "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    async def stop(self) -> str:
        """Stop recording (py-spy writes its file on SIGINT); the summary, or why there is none."""
        if self.proc is None:
            return "not recorded"
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if not self.output.exists():
            return "py-spy wrote nothing (is ptrace allowed?)"
        return summarize(self.output.read_text())


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})"


def summarize(raw: str, top: int = 12) -> str:
    """The top functions by self and by inclusive samples, from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        # The first frame is the thread (py-spy's "process … thread …" marker): not a function.
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "no samples (the process was idle)"
    lines = [f"{total:,} samples at {RATE}/s (≈ {total / RATE:.1f} s of CPU)", "", "self time:"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive time (project code):"]
    project = [
        (name, n) for name, n in inclusive.most_common() if "(hub/" in name or "(api/" in name
    ][:top]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in project]
    lines += ["", "inclusive time (libraries):"]
    libraries = [
        (name, n)
        for name, n in inclusive.most_common()
        if ("(socketio/" in name or "(engineio/" in name or "(aiohttp/" in name
            or "(redis/" in name or "(asyncio/" in name or "(aiosqlite/" in name)
        and n < total  # not the event loop's run_forever, which holds everything
    ][:top]  # fmt: skip
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in libraries]
    return "\n".join(lines)
