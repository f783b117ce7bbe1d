"""GET /metrics (SPEC §5.3): every metric counts real traffic of a real hub."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
import socketio
from prometheus_client.parser import text_string_to_metric_families

from hub.errors import RegistryUnavailable, StoreUnavailable
from hub.metrics import KNOWN_EVENTS, Metrics, event_label, role_label
from hub.registry.base import Change, EndedSession
from hub.typedefs import METRICS, REGISTRY, STORE
from tests.conftest import ClientFactory, Hub, HubFactory

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(hub: Hub) -> Samples:
    response = await hub.client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def eventually(hub: Hub, check: Callable[[Samples], bool]) -> Samples:
    """Scrape until ``check`` holds (the server finishes a disconnect after the client did)."""
    deadline = asyncio.get_running_loop().time() + 5.0
    while True:
        samples = await scrape(hub)
        if check(samples):
            return samples
        assert asyncio.get_running_loop().time() < deadline, "metrics did not reach the state"
        await asyncio.sleep(0.02)


async def connect_tracker(
    sio_connect: ClientFactory, hub: Hub, peer_id: str, **query: str
) -> socketio.AsyncClient:
    return await sio_connect(hub.url, query={"identity": "session", "peerId": peer_id, **query})


@pytest.fixture
async def metered(make_hub: HubFactory, registry_overrides: dict[str, Any]) -> Hub:
    """A hub on each registry (tests/api/conftest.py), with a short grace."""
    return await make_hub(session_grace=0.2, **registry_overrides)


async def test_socket_traffic_is_counted(metered: Hub, sio_connect: ClientFactory) -> None:
    hub = metered
    project = await hub.project()
    pk = project.project_key
    ended: asyncio.Queue[Change] = asyncio.Queue()
    hub.app[REGISTRY].listen(lambda c: ended.put_nowait(c) if c.kind == "ended" else None)

    tracker = await connect_tracker(sio_connect, hub, f"{pk}-s1-t1")
    other = await connect_tracker(sio_connect, hub, f"{pk}-s2-t1")
    samples = await scrape(hub)
    assert value(samples, "livehub_connections", role="tracker") == 2
    assert value(samples, "livehub_connects_total", role="tracker") == 2
    assert value(samples, "livehub_live_sessions") == 2

    with pytest.raises(socketio.exceptions.ConnectionError):
        await connect_tracker(sio_connect, hub, "NoSuchProject-s3")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio_connect(hub.url, query={"identity": "robot", "peerId": f"{pk}-s4"})
    # The same tab again: accepted, told SESSION_ALREADY_CONNECTED and sent away.
    duplicate = await connect_tracker(sio_connect, hub, f"{pk}-s1-t1")

    assert await tracker.call("UPDATE_SESSION", {"userID": "ada"}, timeout=5) == {"ok": True}
    assert await tracker.call("SESSION_MESSAGE", {"role": "u", "content": "hi"}, timeout=5) == {
        "ok": True
    }
    bad = await tracker.call("UPDATE_SESSION", {"active": "yes"}, timeout=5)
    assert bad["ok"] is False
    for n in range(3):  # names nobody knows share one label
        assert (await tracker.call(f"made-up-{n}", {}, timeout=5))["ok"] is True

    samples = await eventually(hub, lambda s: value(s, "livehub_connections", role="tracker") == 2)
    assert not duplicate.connected
    assert value(samples, "livehub_connects_total", role="tracker") == 3
    assert value(samples, "livehub_connections_refused_total", role="tracker") == 1
    assert value(samples, "livehub_connections_refused_total", role="other") == 1
    events_in = "livehub_events_in_total"
    assert value(samples, events_in, role="tracker", event="UPDATE_SESSION") == 2
    assert value(samples, events_in, role="tracker", event="SESSION_MESSAGE") == 1
    assert value(samples, events_in, role="tracker", event="other") == 3
    assert not any(dict(labels).get("event", "").startswith("made-up") for _, labels in samples)
    assert value(samples, "livehub_events_out_total", event="ERROR") == 1
    assert value(samples, "livehub_event_errors_total", code="invalid_payload") == 1
    assert value(samples, "livehub_events_out_total", event="SESSION_ALREADY_CONNECTED") == 1

    await tracker.disconnect()
    await other.disconnect()
    for _ in range(2):
        await asyncio.wait_for(ended.get(), 10)
    samples = await eventually(hub, lambda s: value(s, "livehub_sessions_stored_total") == 2)
    assert value(samples, "livehub_connections", role="tracker") == 0
    assert value(samples, "livehub_live_sessions") == 0
    assert value(samples, "livehub_sessions_ended_total") == 2
    assert value(samples, "livehub_store_errors_total") == 0


async def test_rest_latency_is_by_route_template(hub: Hub) -> None:
    project = await hub.project()
    key = await hub.key(project.project_id)
    pk = project.project_key
    path = f"/api/v1/{pk}/assist/sessions"
    for _ in range(3):
        assert (await hub.client.get(path, headers={"Authorization": key.secret})).status == 200
    assert (await hub.client.get(path)).status == 401
    assert (await hub.client.get(f"{path}/secret-session-id")).status == 401
    assert (await hub.client.get("/no/such/route/for/sure")).status == 404
    assert (await hub.client.put("/health")).status == 405

    samples = await scrape(hub)
    count = "livehub_rest_request_seconds_count"
    route = "/api/v1/{projectKey}/assist/sessions"
    assert value(samples, count, method="GET", route=route, status="200") == 3
    assert value(samples, count, method="GET", route=route, status="401") == 1
    assert value(samples, count, method="GET", route=route + "/{sessionId}", status="401") == 1
    assert value(samples, count, method="GET", route="unmatched", status="404") == 1
    assert value(samples, count, method="PUT", route="unmatched", status="405") == 1
    labels = {v for (_, ls) in samples for _, v in ls}
    # No raw path, project key or session id ever becomes a label (one series each, forever).
    assert not any(pk in label or "secret-session-id" in label for label in labels)
    assert (
        value(samples, "livehub_rest_request_seconds_sum", method="GET", route=route, status="200")
        > 0
    )
    # The scrape itself is counted by the next one.
    again = await scrape(hub)
    assert value(again, count, method="GET", route="/metrics", status="200") >= 1


async def test_registry_failures_are_counted(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    project = await hub.project()
    key = await hub.key(project.project_id)

    async def down(*args: Any) -> Any:
        raise RegistryUnavailable("Redis does not answer")

    monkeypatch.setattr(hub.app[REGISTRY], "query", down)
    path = f"/api/v1/{project.project_key}/assist/sessions"
    response = await hub.client.get(path, headers={"Authorization": key.secret})
    assert response.status == 503
    samples = await scrape(hub)
    assert value(samples, "livehub_registry_errors_total") == 1
    assert value(samples, "livehub_store_errors_total") == 0


async def test_store_failures_are_counted(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    project = await hub.project()
    key = await hub.key(project.project_id)

    async def down(*args: Any) -> Any:
        raise StoreUnavailable("database is locked")

    monkeypatch.setattr(hub.app[STORE], "search", down)
    path = f"/api/project/{project.project_id}/integration/api/session/search"
    body = json.dumps({"search_string": "x"})
    response = await hub.client.post(path, data=body, headers={"Authorization": key.secret})
    assert response.status == 500  # the stored API's document: a failure is a bare 500
    assert value(await scrape(hub), "livehub_store_errors_total") == 1


async def test_the_sink_counts_ends_saves_and_failures() -> None:
    metrics = Metrics()
    answers: list[bool | Exception] = [True, False, StoreUnavailable("down")]

    async def save(ended: EndedSession) -> bool:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    sink = metrics.count_saves(save)
    ended = EndedSession("e1", 1, "pk", "s1", {}, 0, 0)
    assert await sink(ended) is True
    assert await sink(ended) is False  # the same end again (a retry): ended, not stored again
    with pytest.raises(StoreUnavailable):
        await sink(ended)
    read = metrics.registry.get_sample_value
    assert read("livehub_sessions_ended_total") == 2
    assert read("livehub_sessions_stored_total") == 1
    assert read("livehub_store_errors_total") == 1


def test_label_values_are_bounded() -> None:
    assert role_label("session") == "tracker"
    assert role_label("agent") == "agent"
    assert role_label("anything else") == "other"
    assert event_label("UPDATE_SESSION") == "UPDATE_SESSION"
    assert event_label("x" * 1000) == "other"
    assert "other" not in KNOWN_EVENTS


async def test_metrics_of_two_apps_are_separate(make_hub: HubFactory) -> None:
    first, second = await make_hub(), await make_hub()
    assert first.app[METRICS] is not second.app[METRICS]
    await first.client.get("/health")
    count = "livehub_rest_request_seconds_count"
    health = {"method": "GET", "route": "/health", "status": "200"}
    assert value(await scrape(first), count, **health) == 1
    assert value(await scrape(second), count, **health) == 0
