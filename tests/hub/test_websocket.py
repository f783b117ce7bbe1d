"""What a held connection keeps (hub/websocket.py, api/middleware.py): the packet queue, the
environ, the frames and the tasks a websocket holds for its whole life (docs/optimisations.md, P1).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from aiohttp.typedefs import Handler
from multidict import CIMultiDict

from api.middleware import by_endpoint
from hub.typedefs import SIO
from hub.websocket import HubEngineIO, SocketQueue, translate_request
from tests.conftest import ClientFactory, Hub, HubFactory
from tests.hub.test_tracker import tracker

# -- the packet queue -------------------------------------------------------------------------


async def test_the_queue_is_first_in_first_out_whether_or_not_a_getter_waits() -> None:
    queue = SocketQueue()
    waiting = asyncio.ensure_future(asyncio.wait_for(queue.get(), 1))
    await asyncio.sleep(0)
    queue.put_nowait("a")
    queue.put_nowait("b")
    await queue.put("c")
    assert await waiting == "a"
    assert await asyncio.wait_for(queue.get(), 1) == "b"
    assert queue.get_nowait() == "c"
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    assert queue.empty() and queue.qsize() == 0 and not queue.full()


async def test_a_wait_given_up_loses_no_packet() -> None:
    queue = SocketQueue()
    for _ in range(3):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(queue.get(), 0.01)
    queue.put_nowait("after")
    assert await asyncio.wait_for(queue.get(), 1) == "after"
    assert queue._getters == []  # the abandoned getters are gone too


async def test_join_waits_for_every_packet_to_be_done() -> None:
    queue = SocketQueue()
    await asyncio.wait_for(queue.join(), 1)  # nothing put: returns at once
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert queue.unsent == 2
    joined = asyncio.ensure_future(queue.join())
    queue.get_nowait()
    queue.task_done()
    await asyncio.sleep(0)
    assert not joined.done() and queue.unsent == 1
    queue.get_nowait()
    queue.task_done()
    await asyncio.wait_for(joined, 1)
    with pytest.raises(ValueError, match="too many times"):
        queue.task_done()


# -- the environ ------------------------------------------------------------------------------


def test_the_environ_holds_what_is_read_of_the_request() -> None:
    headers = CIMultiDict(
        [
            ("Host", "hub.example"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("User-Agent", "Mozilla/5.0"),
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Forwarded-Proto", "https"),
            ("Accept-Language", "en"),
            ("Cookie", "a=b"),
        ]
    )
    request = make_mocked_request(
        "GET", "/ws-assist/socket/?EIO=4&transport=websocket&identity=session", headers=headers
    )
    environ = translate_request(request)
    assert environ == {
        "REQUEST_METHOD": "GET",
        "QUERY_STRING": "EIO=4&transport=websocket&identity=session",
        "wsgi.input": request.content,
        "aiohttp.request": request,
        "HTTP_HOST": "hub.example",
        "HTTP_UPGRADE": "websocket",
        "HTTP_CONNECTION": "Upgrade",
        "HTTP_USER_AGENT": "Mozilla/5.0",
        "HTTP_X_FORWARDED_FOR": "203.0.113.9,10.0.0.1",  # joined, as WSGI does
        "HTTP_X_FORWARDED_PROTO": "https",
        "wsgi.url_scheme": "https",
    }


def test_the_environ_of_a_plain_request_says_http() -> None:
    environ = translate_request(make_mocked_request("POST", "/ws-assist/socket/"))
    assert environ["QUERY_STRING"] == ""
    assert environ["wsgi.url_scheme"] == "http"
    assert "HTTP_ORIGIN" not in environ


# -- the middlewares --------------------------------------------------------------------------


def tagging(tag: str, seen: list[str]) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.append(tag)
        return await handler(request)

    return middleware


async def test_socket_requests_run_their_own_middlewares_only(aiohttp_client: Any) -> None:
    seen: list[str] = []
    endpoint = by_endpoint(
        "/sock/", rest=[tagging("r1", seen), tagging("r2", seen)], socket=[tagging("s", seen)]
    )
    assert not inspect.iscoroutinefunction(endpoint)  # no frame of its own

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(middlewares=[endpoint])
    app.router.add_get("/sock/", ok)
    app.router.add_get("/sock/{tail:.*}", ok)
    app.router.add_get("/api", ok)
    client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    for path, status, expected in [
        ("/sock/", 200, ["s"]),
        ("/sock/x", 200, ["s"]),
        ("/api", 200, ["r1", "r2"]),  # outermost first
        ("/api", 200, ["r1", "r2"]),  # the cached chain
        ("/missing", 404, ["r1", "r2"]),  # aiohttp's 404 handler gets the REST chain
    ]:
        seen.clear()
        async with client.get(path) as response:
            assert response.status == status
        assert seen == expected, path


async def test_socket_requests_keep_the_error_middleware(make_hub: HubFactory) -> None:
    hub = await make_hub()
    async with hub.client.get("/ws-assist/socket/?EIO=3&transport=polling") as response:
        assert response.status == 400  # python-engineio's own answer, untouched
        assert "X-Request-Id" not in response.headers
    async with hub.client.get("/health") as response:
        assert response.status == 200
        assert "X-Request-Id" in response.headers


# -- a held websocket -------------------------------------------------------------------------


def awaited_chain(task: asyncio.Task[Any]) -> list[str]:
    """The qualified names of the coroutines a task is suspended in, outermost first."""
    names: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        code = getattr(awaited, "cr_code", None) or getattr(awaited, "gi_code", None)
        if code is None:
            break
        names.append(code.co_qualname)
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return names


@pytest.mark.parametrize("transports", [["websocket"], ["polling", "websocket"]])
async def test_a_held_websocket_keeps_no_request_handling_frames(
    make_hub: HubFactory, sio_connect: ClientFactory, transports: list[str]
) -> None:
    hub = await make_hub()
    project = await hub.project()
    client = await tracker(sio_connect, hub, project, transports=transports)
    eio = hub.app[SIO].eio
    assert isinstance(eio, HubEngineIO)
    for _ in range(100):
        if client.transport() == "websocket" and eio.websockets:
            break
        await asyncio.sleep(0.01)
    chains = [awaited_chain(t) for t in asyncio.all_tasks()]
    holding = [c for c in chains if "HubEngineIO.handle_request" in c]
    assert len(holding) == 1
    chain = holding[0]
    assert "AsyncSocket._websocket_handler" in chain
    # Neither python-engineio's request handling nor the REST middlewares stay suspended.
    for gone in ("AsyncServer.handle_request", "AsyncServer._handle_connect",
                 "AsyncSocket.handle_get_request", "request_context.<locals>.middleware",
                 "observe.<locals>.middleware", "cors.<locals>.middleware"):  # fmt: skip
        assert not any(gone in c for c in chains), gone
    environ = hub.app[SIO].environ[next(iter(hub.app[SIO].environ))]
    assert "RAW_URI" not in environ and "identity=session" in environ["QUERY_STRING"]

    await client.disconnect()
    for _ in range(100):
        if not eio.sockets and not eio.websockets:
            break
        await asyncio.sleep(0.01)
    assert eio.sockets == {} and eio.websockets == {}


async def test_pings_wait_on_a_timer_and_keep_the_connection(
    make_hub: HubFactory, sio_connect: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings: list[float] = []
    ping = HubEngineIO._ping

    def counted(self: HubEngineIO, socket: Any) -> None:
        pings.append(time.monotonic())
        ping(self, socket)

    monkeypatch.setattr(HubEngineIO, "_ping", counted)
    hub: Hub = await make_hub(ping_interval=0.1, ping_timeout=0.3)
    project = await hub.project()
    client = await tracker(sio_connect, hub, project)
    socket = next(iter(hub.app[SIO].eio.sockets.values()))
    for _ in range(40):
        await asyncio.sleep(0.03)
        chains = [awaited_chain(t) for t in asyncio.all_tasks()]
        assert not any("AsyncSocket._send_ping" in c for c in chains)
    # About one ping a 0.1 s, each answered: a missed PONG would have closed it (0.3 s).
    assert len(pings) >= 5
    assert client.connected and not socket.closed
