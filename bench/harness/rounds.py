"""The order contenders take within a round: rotated each round, so drift hits all alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def rotated(items: Sequence[T], turn: int) -> list[T]:
    """``items`` starting at position ``turn`` (modulo their number), wrapping around.

    Example::

        rotated(["a", "b", "c"], 4)  # ["b", "c", "a"]
    """
    turn %= len(items)
    return [*items[turn:], *items[:turn]]
