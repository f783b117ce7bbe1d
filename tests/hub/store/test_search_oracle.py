"""Search against an oracle: every result must be exactly ``needle in compact_json(data)``.

A few hundred sessions full of the characters that trip search engines (quotes, backslashes,
LIKE and GLOB wildcards, FTS5 syntax, accents, CJK, emoji, escaped control characters), searched
with needles of 1, 2, 3 and more characters drawn from the data and at random, on both stores.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from hub.store.base import SessionStore
from hub.store.searchtext import compact_json
from tests.hub.store.conftest import ended

SEED = 20240115
SESSIONS = 300
ALPHABET = (
    "abcXYZ019 "
    "\"\\%_*?[]^'`:,{}()-+~|<>/.$#@!=;&"
    "éÉàüñçø"
    "日本語中文한"
    "👍🏽😀🚀"
    "\u0301\u2028\u00a0"
    "\n\t\x00\x7f\ud83d"
)
SPECIAL_NEEDLES = [
    '"', "\\", "%", "_", "*", "?", "[", "]", "%_", "_%", "\\%", "\\\\", '\\"', '":"', '","',
    "[]", "*?", "[a", "a*", '""', "''", "é", "É", "日本", "日本語", "👍", "👍🏽", "🚀\"", "\u0301",
    "\u2028", "\\n", "\\t", "\\u0000", "\\ud83d", "\n", "\x00", "\ud83d", "\x7f", "AND", "OR",
    "NOT", "NEAR", "^a", "a:b", "-", "+", "{", "}", '{"', "}]", "null", "true", "1.5", "role",
    '"messages":[', "content", "zzz-not-there", "abcXYZ019 ",
]  # fmt: skip


@dataclass(frozen=True)
class Kept:
    order: int
    project_id: int
    session_id: str
    text: str
    updated_at_ms: int


def random_text(rng: random.Random, low: int = 0, high: int = 12) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(low, high)))


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 2 else 5)
    if kind == 0:
        return rng.randint(-1000, 1000)
    if kind == 1:
        return rng.choice([None, True, False, 1.5, -0.25])
    if kind < 5:
        return random_text(rng)
    if kind < 7:
        return {random_text(rng, 1, 6): random_value(rng, depth + 1) for _ in range(3)}
    return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]


def random_data(rng: random.Random) -> dict[str, Any]:
    return {
        "sessionInfo": {"sessionID": f"s{rng.randrange(40)}", "userID": random_text(rng)},
        "variables": {random_text(rng, 1, 8): random_value(rng) for _ in range(rng.randint(0, 4))},
        "messages": [
            {"role": rng.choice(["user", "assistant"]), "content": random_text(rng, 0, 30)}
            for _ in range(rng.randint(0, 3))
        ],
    }


def needles(rng: random.Random, kept: list[Kept]) -> list[str]:
    found = list(SPECIAL_NEEDLES)
    for length in (1, 1, 2, 2, 3, 3, 4, 5, 8, 13, 21):
        for _ in range(6):
            text = rng.choice(kept).text
            start = rng.randrange(max(1, len(text) - length))
            found.append(text[start : start + length])
        found.append(random_text(rng, length, length))
    return found


async def test_search_agrees_with_python_substring(store: SessionStore) -> None:
    rng = random.Random(SEED)
    projects = [await store.create_project(name) for name in ("shop", "blog")]
    kept: list[Kept] = []
    for order in range(SESSIONS):
        project_id = rng.choice(projects).project_id
        session_id = f"s{rng.randrange(40)}"  # the same id ends several times
        data = random_data(rng)
        updated = 1_700_000_000_000 + rng.randrange(50)  # many ties
        session = ended(project_id, session_id, data, end_id=f"e{order}", updated_at_ms=updated)
        assert await store.save_session(session)
        kept.append(Kept(order, project_id, session_id, compact_json(data), updated))

    searched = needles(rng, kept)
    assert {len(n) for n in searched} >= {1, 2, 3, 4, 5, 8, 13, 21}
    matched_any = 0
    for needle in searched:
        for project in projects:
            expected = sorted(
                (k for k in kept if k.project_id == project.project_id and needle in k.text),
                key=lambda k: (-k.updated_at_ms, k.session_id, k.order),
            )
            page = await store.search(project.project_id, needle, 1000, 0)
            got = [(s.session_id, s.data_json, s.updated_at_ms) for s in page.sessions]
            want = [(k.session_id, k.text, k.updated_at_ms) for k in expected]
            assert page.total == len(expected), repr(needle)
            assert got == want, repr(needle)
            matched_any += bool(expected)
            if len(expected) > 3:
                middle = await store.search(project.project_id, needle, 2, 1)
                assert middle.total == len(expected), repr(needle)
                assert [s.data_json for s in middle.sessions] == [k.text for k in expected[1:3]]
    # The needles drawn from the data must have found something, or the test proves little.
    assert matched_any > len(searched) // 2
