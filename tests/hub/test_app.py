"""The node's Socket.IO server closes clients whose packets it cannot decode."""

from __future__ import annotations

import logging

import pytest
import socketio

from tests.conftest import ClientFactory, Hub


@pytest.mark.parametrize(("auth", "namespace"), [(1.5, "/"), (1.5, "/live")])
async def test_an_undecodable_connect_is_closed_not_left_waiting(
    hub: Hub,
    sio_connect: ClientFactory,
    caplog: pytest.LogCaptureFixture,
    auth: float,
    namespace: str,
) -> None:
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio_connect(
            hub.url,
            query={"identity": "session", "peerId": "nope-s1"},
            auth=auth,
            namespaces=[namespace],
            wait_timeout=2,
        )
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert any("cannot decode" in r.getMessage() for r in caplog.records)
