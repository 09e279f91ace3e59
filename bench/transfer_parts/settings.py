"""How much work each part of ``bench/transfer.py`` does, and how long it may wait."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MB: Final = 1_000_000
PROGRAM_TIMEOUT_S: Final = 300.0
REQUEST_TIMEOUT_S: Final = 30.0
START_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class Settings:
    """How much work each part does; the same for every contender of a part."""

    url: str
    rounds: int
    tune_rounds: int
    big_bytes: int = 100 * MB
    small_count: int = 1000
    small_bytes: int = 4096
    legacy_count: int = 50
    latency_count: int = 200
    windows: tuple[int, ...] = (32, 64)


def settings_for(url: str, quick: bool, rounds: int | None) -> Settings:
    if quick:
        return Settings(url, rounds or 2, 1, legacy_count=10, latency_count=100)
    return Settings(url, rounds or 5, 3)
