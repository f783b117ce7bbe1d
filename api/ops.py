"""Operations endpoints (SPEC §5.3): ``/health`` (liveness), ``/ready`` (readiness) and
``/metrics`` (Prometheus).

None needs a key: they say nothing about any project, and load balancers, orchestrators and
Prometheus call them without credentials (docs/operations.md: keep ``/metrics`` off the public
internet).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from hub.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from hub.typedefs import METRICS, REGISTRY, STORE

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

# Seconds each readiness check may take: a probe must answer well within the timeout of the
# load balancer or orchestrator that calls it (often 1 to 5 s), whatever the backend does.
READY_TIMEOUT = 2.0

Check = Callable[[], Awaitable[None]]


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """200 while the process runs and its event loop answers."""
    return web.json_response({"status": "ok"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Every metric of this node in the Prometheus text format."""
    return web.Response(
        body=request.app[METRICS].render(), headers={"Content-Type": METRICS_CONTENT_TYPE}
    )


@routes.get("/ready")
async def ready(request: web.Request) -> web.Response:
    """200 when the registry and the store answer, else 503 naming those that do not."""
    registry = request.app.get(REGISTRY)
    store = request.app.get(STORE)
    # Absent while the node starts or stops: not ready.
    checks: dict[str, Check | None] = {
        "registry": registry.check if registry is not None else None,
        "store": store.check if store is not None else None,
    }
    return await readiness(checks, seconds=READY_TIMEOUT)


async def readiness(checks: dict[str, Check | None], *, seconds: float) -> web.Response:
    """Run every check at once, each bounded by ``seconds``; the response of ``/ready``.

    ``{"status": "ready", "checks": {name: "ok"}}`` or, with 503,
    ``{"status": "unavailable", "error": "<names> unavailable", "checks": {name: "ok" |
    "unavailable"}}``.
    """
    names = list(checks)
    results = await asyncio.gather(*(_passes(n, checks[n], seconds) for n in names))
    states = {name: "ok" if ok else "unavailable" for name, ok in zip(names, results, strict=True)}
    failing = [name for name, ok in zip(names, results, strict=True) if not ok]
    if not failing:
        return web.json_response({"status": "ready", "checks": states})
    body = {
        "status": "unavailable",
        "error": f"{' and '.join(failing)} unavailable",
        "checks": states,
    }
    return web.json_response(body, status=503)


async def _passes(name: str, check: Check | None, seconds: float) -> bool:
    if check is None:
        return False
    task = asyncio.ensure_future(check())
    # Not asyncio.timeout(): it waits for the cancelled check to finish, and a check stuck in a
    # driver that ignores cancellation would hold the probe. The abandoned task is cancelled and
    # its outcome collected by a callback, so nothing is left unretrieved.
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        _abandon(task)
        raise
    if not done:
        _abandon(task)
        log.warning("readiness: the %s did not answer within %.1f s", name, seconds)
        return False
    error = task.exception()
    if error is not None:
        # Any failure of a check means "not ready"; the reason is for the log, not the probe.
        log.warning("readiness: the %s is unavailable: %s", name, error)
        return False
    return True


def _abandon(task: asyncio.Future[None]) -> None:
    task.cancel()
    task.add_done_callback(_collect)


def _collect(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()
