"""The one way a node opens its Redis clients (the registry and the agent directory)."""

from __future__ import annotations

import asyncio
from contextlib import suppress

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

# redis-py's ``from_url`` retries nothing: after Redis restarts, every pooled connection fails
# its next command once ("Connection closed by server"), which would fail a tracker's leave or
# update for nothing. A closed connection is reopened and the command sent again. Only
# connection errors are retried, not timeouts: a command that timed out may have run, and the
# registry's scripts are not all idempotent. (Redis closes a connection after running a command
# only on a restart, when what it ran is lost anyway.)
RETRIES = 3
# Connections of one client at most. redis-py's own pool refuses a command beyond its 100
# connections ("Too many connections"), which turned trackers away when a few hundred connected
# at once; this pool makes such a command wait for a free connection instead.
MAX_CONNECTIONS = 100
COMMAND_TIMEOUT = 10.0  # seconds for a reply, and for a free connection


def open_redis(url: str) -> Redis:
    """A client with the node's timeouts that reconnects and retries on a closed connection."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=COMMAND_TIMEOUT,
        decode_responses=True,
        socket_timeout=COMMAND_TIMEOUT,
        socket_connect_timeout=5,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), RETRIES),
        retry_on_error=[RedisConnectionError],
    )
    client = Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # aclose() closes the pool, as with from_url
    return client


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel a task that talks to Redis, and wait until it has really stopped.

    redis-py (8.1, with a socket timeout) can swallow a cancellation that lands while it reads a
    reply, so the task is cancelled again until it is done.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.2)
    with suppress(asyncio.CancelledError):
        await task
