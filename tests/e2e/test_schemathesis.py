"""schemathesis against a real ``livehub serve``: no 5xx, and no answer outside /openapi.json.

Two runs of every phase (examples, coverage, fuzzing, stateful) over every operation:

- deep: the project's real key, id and session ids are fixed, so requests reach the handlers'
  core (a live session, a stored one, agent tokens), with ``Authorization: <key>``;
- broad: every path parameter is generated (unknown projects, odd ids), with
  ``Authorization: Bearer <key>``.

The checks are the document's own: no server error, every status, media type, header and body as
documented. The number of examples per operation is bounded so the whole test stays well under two
minutes; ``LIVEHUB_SCHEMATHESIS_EXAMPLES`` and ``LIVEHUB_SCHEMATHESIS_SEED`` change them (a failure
prints the seed and a curl command that reproduces it).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ClientFactory
from tests.e2e.conftest import NodeFactory
from tests.e2e.harness import HubProcess, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    )
)
EXAMPLES = int(os.environ.get("LIVEHUB_SCHEMATHESIS_EXAMPLES", "60"))
SEED = os.environ.get("LIVEHUB_SCHEMATHESIS_SEED", "20240115")


async def schemathesis(
    node: HubProcess, workdir: Path, authorization: str, config: str, examples: int
) -> tuple[int, str]:
    """Run ``schemathesis run`` against the node; its exit code and output."""
    workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (a local directory, once)
    config_file = workdir / "schemathesis.toml"
    config_file.write_text(config)
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "schemathesis.cli", "--no-color"),
        *("--config-file", str(config_file), "run", f"{node.url}/openapi.json"),
        *("--header", f"Authorization: {authorization}"),
        *("--checks", CHECKS, "--max-examples", str(examples), "--seed", SEED),
        *("--workers", "1", "--request-timeout", "10", "--output-truncate", "false"),
        cwd=workdir,  # its caches and reports stay in the test's directory
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string of letters and digits is a TOML basic string


async def test_schemathesis_finds_no_server_error_and_nothing_undocumented(
    tmp_path: Path, start_node: NodeFactory, sio_connect: ClientFactory
) -> None:
    env = {"HUB_DATABASE_URL": f"sqlite:///{tmp_path / 'hub.db'}", "HUB_SESSION_GRACE": "0.2"}
    project = run_cli("project", "create", "--name", "schemathesis", env=env)
    key = run_cli("key", "create", "--name", "org", env=env)["key"]
    node = await start_node(**env)
    pk, project_id = project["projectKey"], project["projectId"]

    def tracker_query(session_id: str) -> dict[str, str]:
        info = {"userID": "ada@example.com", "metadata": {"plan": "trial"}, "pageTitle": "Cart"}
        return {
            "identity": "session",
            "peerId": f"{pk}-{session_id}-tab1",
            "sessionInfo": json.dumps(info),
        }

    # One session ends and is stored; another stays live for the whole run.
    ended = await sio_connect(node.url, query=tracker_query("stored1"))
    message = {"role": "user", "content": "Hello"}
    assert await ended.call("SESSION_MESSAGE", message, timeout=5) == {"ok": True}
    await ended.disconnect()
    live = await sio_connect(node.url, query=tracker_query("live1"))
    update = {"variables": {"cart": 3}, "metadata": {"plan": "pro"}}
    assert await live.call("UPDATE_SESSION", update, timeout=5) == {"ok": True}
    search = f"{node.url}/api/project/{project_id}/integration/api/session/stored1"
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            async with http.get(search, headers={"Authorization": key}) as r:
                if r.status == 200:
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the ended session was not stored")

    deep = (
        "[parameters]\n"
        f'"path.projectKey" = {toml_string(pk)}\n'
        f'"path.projectId" = {project_id}\n'
        "\n[[operations]]\n"
        'include-path-regex = "^/api/v1/"\n'
        'parameters = { "path.sessionId" = "live1" }\n'
        "\n[[operations]]\n"
        'include-operation-id = "getStoredSession"\n'
        'parameters = { "path.sessionId" = "stored1" }\n'
    )
    runs = {
        "deep": (key, deep, EXAMPLES),
        "broad": (f"Bearer {key}", "", max(10, EXAMPLES // 2)),
    }
    for name, (authorization, config, examples) in runs.items():
        code, out = await schemathesis(node, tmp_path / name, authorization, config, examples)
        assert code == 0, f"schemathesis ({name} run) found problems:\n{out[-12000:]}"
        # Every operation of the document was tested (none filtered out or unreachable).
        selected = re.search(r"Operations:\s+(\d+) selected / (\d+) total", out)
        assert selected and selected[1] == selected[2] and int(selected[1]) >= 10, out[-3000:]
        tested = re.search(r"Tested:\s+(\d+)", out.split("SUMMARY")[-1])
        assert tested and tested[1] == selected[1], out[-3000:]
        assert " failed" not in out.split("SUMMARY")[-1], out[-6000:]
        cases = re.search(r"Test cases:\s*\n?\s*(.+)", out.split("SUMMARY")[-1])
        print(f"schemathesis {name} run: {cases[1] if cases else '?'}")
    assert live.connected, "the live tracker was dropped during the run"
    assert await node.stop() == 0
    log = node.log_path.read_text(errors="replace")
    # A malformed request (schemathesis probes a NUL in a header) is the client's fault: info.
    assert "Traceback" not in log and " ERROR " not in log, log[-4000:]
