"""``deploy/nginx/livehub.conf`` in front of two real nodes, run by a real nginx.

The site file is rendered for the test (upstreams on the nodes' ports, a free listen port, every
path in the test's directory), checked with ``nginx -t`` and served. Polling trackers work through
it only if every request of one tab reaches the same node: nginx hashes on ``peerId``, and its
access log shows which node served each request.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import signal
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ClientFactory
from tests.e2e.conftest import Cluster, ClusterFactory
from tests.e2e.harness import NGINX_SITE, FailoverTracker, NginxProcess, Rest

pytestmark = pytest.mark.e2e

TRACKERS = 16  # enough that both nodes get some: all on one would happen 1 time in 30,000
GRACE = 2.0


@pytest.fixture
async def nginx(tmp_path: Path) -> AsyncIterator[NginxProcess]:
    assert shutil.which("nginx"), "nginx is needed for this test (scripts/test.sh installs it)"
    proxy = NginxProcess(tmp_path / "nginx")
    yield proxy
    proxy.stop()


async def two_nodes(start_cluster: ClusterFactory, tmp_path: Path, redis_url: str) -> Cluster:
    return await start_cluster(
        2,
        HUB_DATABASE_URL=f"sqlite:///{tmp_path / 'hub.db'}",
        HUB_REDIS_URL=redis_url,
        HUB_TRUSTED_PROXIES="127.0.0.1/32",
        # Short polls: python-engineio's polling client waits for its last poll to close.
        HUB_PING_INTERVAL="1",
        HUB_PING_TIMEOUT="2",
        HUB_SESSION_GRACE=str(GRACE),
    )


async def test_nginx_config_routes_polling_trackers_by_peer_id_and_rest_anywhere(
    tmp_path: Path,
    redis_url: str,
    start_cluster: ClusterFactory,
    sio_connect: ClientFactory,
    rest_session: aiohttp.ClientSession,
    nginx: NginxProcess,
) -> None:
    cluster = await two_nodes(start_cluster, tmp_path, redis_url)
    a, b = cluster.nodes
    nginx.write({"hub1": a.port, "hub2": b.port})
    checked = nginx.test_config()
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr and "test is successful" in checked.stderr
    await nginx.start()

    pk = cluster.project_key
    trackers = [
        await sio_connect(nginx.url, query=cluster.query(f"px{i:02d}"), transports=["polling"])
        for i in range(TRACKERS)
    ]
    # A polling tab makes many requests; one reaching the wrong node would fail its session.
    for round_ in range(3):
        acks = await asyncio.gather(
            *(
                t.call("UPDATE_SESSION", {"metadata": {"round": str(round_)}}, timeout=10)
                for t in trackers
            )
        )
        assert acks == [{"ok": True}] * TRACKERS
    # Upgraded to a websocket through nginx (the Upgrade headers of the site).
    upgraded = await sio_connect(
        nginx.url, query=cluster.query("wsx"), transports=["polling", "websocket"]
    )
    assert await upgraded.call("UPDATE_SESSION", {"userID": "ws"}, timeout=5) == {"ok": True}
    assert upgraded.transport() == "websocket"

    routes: dict[str, set[str]] = defaultdict(set)
    for line in nginx.access_log():
        peer, upstream, _status = line.split(" ")
        if peer != "-":
            routes[peer].add(upstream)
    assert len(routes) == TRACKERS + 1
    assert all(len(nodes) == 1 for nodes in routes.values()), routes
    served = set().union(*routes.values())
    assert served == {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"}, "both nodes get trackers"

    # REST through nginx, from whichever node it picks, sees every tracker of both nodes.
    rest = Rest(rest_session, cluster.api_key)
    for _ in range(4):
        listed = await rest.live(nginx.url, pk)
        assert listed["total"] == TRACKERS + 1
    record = await rest.session(nginx.url, pk, "px00")
    assert record is not None and record["metadata"] == {"round": "2"}
    assert record["userCountry"] is None  # X-Forwarded-For from a trusted proxy, no GeoIP db
    found = await rest.search(nginx.url, cluster.project_id, "anything")
    assert found["pagination"]["total"] == 0
    async with rest_session.get(f"{nginx.url}/api/v1/{pk}/assist/sessions") as r:
        assert r.status == 401
        assert "error" in await r.json()
    # The hub's own 413 (JSON), not nginx's: nginx lets up to 2 MiB through.
    big = json.dumps({"filters": [], "padding": "x" * (1024 * 1024 + 10)}).encode()
    async with rest_session.post(
        f"{nginx.url}/api/v1/{pk}/assist/sessions",
        data=io.BytesIO(big),
        headers={"Authorization": cluster.api_key, "Content-Type": "application/json"},
    ) as r:
        assert r.status == 413
        assert "error" in await r.json()
    async with rest_session.get(f"{nginx.url}/health") as r:
        assert r.status == 200 and await r.json() == {"status": "ok"}

    await asyncio.gather(*(t.disconnect() for t in [*trackers, upgraded]))


async def test_trackers_behind_nginx_move_to_the_other_node_on_sigterm(
    tmp_path: Path,
    redis_url: str,
    start_cluster: ClusterFactory,
    rest_session: aiohttp.ClientSession,
    nginx: NginxProcess,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster = await two_nodes(start_cluster, tmp_path, redis_url)
    a, b = cluster.nodes
    nginx.write({"hub1": a.port, "hub2": b.port})
    await nginx.start()
    rest = Rest(rest_session, cluster.api_key)
    ids = [f"mv{i:02d}" for i in range(TRACKERS)]
    # Polling first, then the websocket: the handshake request is in the access log at once.
    trackers = [
        FailoverTracker([nginx.url], cluster.query(sid), transports=("polling", "websocket"))
        for sid in ids
    ]
    try:
        for tracker in trackers:
            await tracker.connect()
            assert await tracker.call("UPDATE_SESSION", {"userID": "before"}) == {"ok": True}
        before = await rest.live(nginx.url, cluster.project_key)
        assert before["total"] == TRACKERS
        on_a = {
            peer.split("-")[1]
            for peer, upstream, _ in (line.split(" ") for line in nginx.access_log())
            if peer != "-" and upstream == f"127.0.0.1:{a.port}"
        }
        assert on_a, "some trackers are on the node that stops"

        stopping = time.monotonic()
        assert await a.stop(signal.SIGTERM) == 0
        moving = [t for sid, t in zip(ids, trackers, strict=True) if sid in on_a]
        await asyncio.wait_for(asyncio.gather(*(t.reconnected.wait() for t in moving)), GRACE)
        with capsys.disabled():
            print(
                f"\n[nginx] SIGTERM: {len(moving)} trackers back through nginx on the other node "
                f"{time.monotonic() - stopping:.2f}s after the signal"
            )
        for tracker in trackers:
            assert await tracker.call("UPDATE_SESSION", {"userID": "after"}) == {"ok": True}
            assert not [e for e in tracker.events if e[0] == "SESSION_ALREADY_CONNECTED"]
        after = await rest.live(nginx.url, cluster.project_key)
        assert after["total"] == TRACKERS
        for old, new in zip(before["sessions"], after["sessions"], strict=True):
            assert new == {**old, "userID": "after"}, "the same sessions, not new ones"
        assert await rest.stored_total(nginx.url, cluster.project_id, '"sessionID":"mv') == 0
    finally:
        for tracker in trackers:
            await tracker.close()


def test_deploy_files_agree_with_the_hub() -> None:
    """compose.yaml, the systemd env file and the nginx site name real settings and services."""
    import re

    import yaml  # type: ignore[import-untyped]  # comes with schemathesis (test extra)

    from hub.settings import SETTINGS, Settings

    known = {spec.env for spec in SETTINGS}
    deploy = NGINX_SITE.parent.parent
    compose = yaml.safe_load((deploy / "compose.yaml").read_text())
    services = compose["services"]
    hubs = {name: s for name, s in services.items() if "HUB_REDIS_URL" in s.get("environment", {})}
    assert set(hubs) == {"hub1", "hub2"}
    node_ids = set()
    for name, service in hubs.items():
        env = {k: str(v) for k, v in service["environment"].items()}
        assert set(env) <= known, f"{name}: unknown settings {set(env) - known}"
        node_ids.add(Settings.from_env(env).node_id)
    assert len(node_ids) == len(hubs), "node ids must be unique in a cluster"
    # nginx serves the site this file's tests run, and its upstreams are the hub services.
    assert "./nginx/livehub.conf:/etc/nginx/conf.d/default.conf:ro" in services["nginx"]["volumes"]
    upstreams = set(re.findall(r"server\s+([A-Za-z0-9_-]+):8080", NGINX_SITE.read_text()))
    assert upstreams == set(hubs)
    assert "HUB_PORT=8080" in (deploy / "Containerfile").read_text()

    env_file = (deploy / "systemd" / "livehub.env").read_text().splitlines()
    env = dict(line.split("=", 1) for line in env_file if line.strip() and not line.startswith("#"))
    assert set(env) <= known, f"livehub.env: unknown settings {set(env) - known}"
    Settings.from_env(env)
    unit = (deploy / "systemd" / "livehub.service").read_text()
    assert "EnvironmentFile=/etc/livehub/livehub.env" in unit
    assert "KillSignal=SIGTERM" in unit
