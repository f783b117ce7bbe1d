"""hub/logs.py: JSON lines, request and connection ids on every line, and no secret in any."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from hub import logs
from hub.store.base import Project
from hub.tracker import TrackerHooks, TrackerTab, tracker_role
from hub.typedefs import SIO
from tests.conftest import ClientFactory, Hub

KEY = "lh_abcdef123456_" + "A1b2C3d4" * 5 + "xyz"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJwcm9qZWN0SWQiOjEsInNlc3Npb25JZCI6InMxIn0."
    "c2lnbmF0dXJlLW9mLXRoZS10b2tlbi1oZXJlLTEyMzQ"
)


class Captured:
    """Log lines written by a handler set up as ``livehub serve`` sets up its own."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def text(self) -> str:
        return self.stream.getvalue()


def _handler(formatter: logging.Formatter, stream: io.StringIO) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(logs.ContextFilter())
    handler.addFilter(logs.RedactSecrets())
    return handler


@pytest.fixture
def captured() -> Iterator[Captured]:
    stream = io.StringIO()
    handler = _handler(logs.JsonFormatter(), stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield Captured(stream)
    root.removeHandler(handler)
    root.setLevel(level)


def emit(formatter: logging.Formatter, *args: Any, **kwargs: Any) -> str:
    stream = io.StringIO()
    logger = logging.Logger("livehub.test.emit")  # outside the hierarchy: only our handler
    handler = _handler(formatter, stream)
    logger.addHandler(handler)
    try:
        logger.error(*args, **kwargs)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


# -- redaction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key {KEY} used", "key lh_abcdef123456_[redacted] used"),
        (f"Authorization: {KEY}", "Authorization: [redacted]"),
        (f"Authorization: Bearer {KEY}", "Authorization: [redacted]"),
        ("authorization=hunter2; next", "authorization=[redacted]; next"),
        (
            "{'Authorization': 'Bearer s3cret', 'Host': 'x'}",
            "{'Authorization': '[redacted]', 'Host': 'x'}",
        ),
        ('{"HTTP_AUTHORIZATION":"s3cret"}', '{"HTTP_AUTHORIZATION":"[redacted]"}'),
        (f"token={JWT}&x=1", "token=[redacted]&x=1"),
        (f"Bearer {JWT}", "Bearer [redacted]"),
        ("nothing to hide: lh_ eyJ short", "nothing to hide: lh_ eyJ short"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert logs.redact(text) == expected


@pytest.mark.parametrize("formatter", [logs.JsonFormatter(), logs.TextFormatter()])
def test_no_secret_reaches_a_line_whatever_way_it_is_logged(formatter: logging.Formatter) -> None:
    try:
        raise ValueError(f"bad key {KEY} in {JWT}")
    except ValueError:
        out = emit(
            formatter,
            "request %s with %r",
            KEY,
            {"Authorization": f"Bearer {JWT}"},
            exc_info=True,
            extra={"headers": {"authorization": KEY}, "token": JWT, "tokens": [JWT]},
        )
    assert "ValueError" in out and "request lh_abcdef123456_[redacted]" in out
    assert KEY not in out and JWT not in out
    assert KEY[16:] not in out and JWT.split(".")[1] not in out


def test_a_bad_format_string_is_still_logged_and_redacted() -> None:
    out = emit(logs.JsonFormatter(), "%d items %s", "not a number", KEY)
    line = json.loads(out)
    assert "not a number" in line["message"]
    assert KEY not in out


# -- formats ---------------------------------------------------------------------------------


def test_json_lines_carry_time_level_logger_message_and_context() -> None:
    with logs.bind_request("req-1"), logs.bind_connection("sid-1"):
        out = emit(logs.JsonFormatter(), "hello %s", "world", extra={"projectKey": "pk"})
    line = json.loads(out)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert line["level"] == "error"
    assert line["logger"] == "livehub.test.emit"
    assert line["message"] == "hello world"
    assert line["request_id"] == "req-1"
    assert line["connection_id"] == "sid-1"
    assert line["projectKey"] == "pk"
    # Unbound once the block is left.
    assert "request_id" not in json.loads(emit(logs.JsonFormatter(), "later"))


def test_text_lines_carry_the_context_before_a_traceback() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        with logs.bind_request("req-2"):
            out = emit(logs.TextFormatter(), "failed", exc_info=True)
    first, _, rest = out.partition("\n")
    assert first.endswith("livehub.test.emit: failed [request_id=req-2]")
    assert "RuntimeError: boom" in rest


def test_configure_sets_up_the_root_logger() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("debug", "json")
        (handler,) = root.handlers
        assert isinstance(handler.formatter, logs.JsonFormatter)
        assert {type(f) for f in handler.filters} == {logs.ContextFilter, logs.RedactSecrets}
        assert root.level == logging.DEBUG
        # aiosqlite logs statements with their parameters (the JWT secret among them).
        assert logging.getLogger("aiosqlite").getEffectiveLevel() == logging.INFO
        logs.configure("info", "text")
        assert isinstance(root.handlers[0].formatter, logs.TextFormatter)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


# -- request ids -------------------------------------------------------------------------------


async def test_a_sane_request_id_is_kept_echoed_and_logged(hub: Hub, captured: Captured) -> None:
    response = await hub.client.get("/health", headers={"X-Request-Id": "trace-42:a/b+c=="})
    assert response.headers["X-Request-Id"] == "trace-42:a/b+c=="
    lines = [line for line in captured.lines() if line.get("request_id") == "trace-42:a/b+c=="]
    assert any(line["message"].startswith("GET /health 200") for line in lines), lines


@pytest.mark.parametrize("given", ["", "x" * 129, "two words", "a\tb", "<script>", "ünï"])
async def test_any_other_request_id_is_replaced(hub: Hub, given: str) -> None:
    headers = {"X-Request-Id": given} if given else {}
    response = await hub.client.get("/health", headers=headers)
    made = response.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    again = await hub.client.get("/health", headers=headers)
    assert again.headers["X-Request-Id"] != made


async def test_every_line_of_a_request_carries_its_id(hub: Hub, captured: Captured) -> None:
    project = await hub.project()
    key = await hub.key(project.project_id)
    path = f"/api/v1/{project.project_key}/assist/sessions"
    for n in range(3):
        headers = {"Authorization": key.secret, "X-Request-Id": f"req-{n}"}
        assert (await hub.client.get(path, headers=headers)).status == 200
    by_request = {line["request_id"]: line for line in captured.lines() if "request_id" in line}
    assert set(by_request) >= {"req-0", "req-1", "req-2"}
    assert by_request["req-1"]["message"].startswith(f"GET {path} 200")


# -- connection ids ----------------------------------------------------------------------------


class FailingRelay(TrackerHooks):
    async def relay(self, tab: TrackerTab, event: str, payload: Any) -> None:
        raise RuntimeError(f"relay broke with {KEY}")


async def test_socket_handler_lines_carry_the_connection_id(
    hub: Hub, sio_connect: ClientFactory, captured: Captured
) -> None:
    project: Project = await hub.project()
    tracker_role(hub.app[SIO]).hooks = FailingRelay()
    client = await sio_connect(
        hub.url, query={"identity": "session", "peerId": f"{project.project_key}-s1-t1"}
    )
    ack = await client.call("CUSTOM_EVENT", {"x": 1}, timeout=5)
    assert ack == {"ok": True}  # a failed relay is logged, not the tracker's error
    sid = client.get_sid("/")
    failures = [line for line in captured.lines() if "relaying" in line["message"]]
    assert len(failures) == 1
    assert failures[0]["connection_id"] == sid
    assert "request_id" not in failures[0]
    assert KEY not in captured.text()
    assert "lh_abcdef123456_[redacted]" in failures[0]["exception"]
