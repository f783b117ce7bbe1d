"""Property-based tests against a running hub: Hypothesis drives, the event loop serves.

Hypothesis runs its examples synchronously, and the hub, its registry and the Socket.IO clients live
on the test's event loop. :func:`fuzz` runs the Hypothesis test in a worker thread and hands each
example to the loop (``run_coroutine_threadsafe``), which is free meanwhile: the test awaits the
thread. Examples run one after another, as Hypothesis means them to.
"""

from __future__ import annotations

import asyncio
import json
import string
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

T = TypeVar("T")

# Seconds one example may take before the test fails (a hang is a finding too).
EXAMPLE_TIMEOUT = 30.0


async def fuzz(
    strategy: st.SearchStrategy[T],
    check: Callable[[T], Coroutine[Any, Any, None]],
    *,
    examples: int,
) -> int:
    """Run ``check`` on up to ``examples`` values of ``strategy``; the number of examples run.

    A failing example is shrunk and reported by Hypothesis as usual (with its seed).
    """
    loop = asyncio.get_running_loop()
    ran = 0

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,  # nothing written to the work tree
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(strategy)
    def run(value: T) -> None:
        nonlocal ran
        ran += 1
        asyncio.run_coroutine_threadsafe(check(value), loop).result(EXAMPLE_TIMEOUT)

    await asyncio.to_thread(run)
    return ran


# -- strategies shared by the fuzz tests ---------------------------------------------------------

ID_CHARS = string.ascii_letters + string.digits + "._:-"

# Any JSON value, small; strings of any Unicode but lone surrogates (which JSON text can carry as
# escapes but a URL or a UTF-8 frame cannot).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
big_text = st.integers(min_value=0, max_value=20).map(lambda k: "x" * (k * 1024))


def json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
