"""Topic matching against an independent, word-by-word reference of RabbitMQ's rules."""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupiter_bus.transport import topic_matches


def reference(pattern: str, key: str) -> bool:
    pwords, kwords = pattern.split("."), key.split(".")

    @cache
    def match(i: int, j: int) -> bool:
        if i == len(pwords):
            return j == len(kwords)
        if pwords[i] == "#":
            return match(i + 1, j) or (j < len(kwords) and match(i, j + 1))
        if j == len(kwords):
            return False
        return (pwords[i] in ("*", kwords[j])) and match(i + 1, j + 1)

    return match(0, 0)


words = st.sampled_from(["a", "b", "node1", "x-y", ""])
keys = st.lists(words, min_size=1, max_size=6).map(".".join)
patterns = st.lists(st.sampled_from(["a", "b", "node1", "*", "#"]), min_size=1, max_size=6).map(
    ".".join
)


@given(patterns, keys)
def test_topic_matching_agrees_with_the_reference(pattern: str, key: str) -> None:
    assert topic_matches(pattern, key) == reference(pattern, key)


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("resource.*", "resource.node1", True),
        ("resource.*", "resource", False),
        ("resource.#", "resource", True),
        ("network.*.node2", "network.node1.node2", True),
        ("network.#", "network.a.b", True),
        ("#.node2", "network.node1.node2", True),
        ("*", "a.b", False),
        ("#", "", True),
        ("a.b", "a.b.c", False),
        ("a.+", "a.b", False),  # regex metacharacters are literal words
        ("a.+", "a.+", True),
    ],
)
def test_topic_matching_examples(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected
