"""What every contender of ``bench/bus.py`` sends, and how much of it per sample."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

JSON: Final = "application/json"
DIRECT_REPLY_TO: Final = "amq.rabbitmq.reply-to"
WINDOW: Final = 100
PREFETCH: Final = 100
BODY_BYTES: Final = 1024
REQUEST_TIMEOUT_S: Final = 30.0
TARGET_RATIO: Final = 0.9


def _json_body(size: int) -> bytes:
    """A valid JSON object of exactly ``size`` bytes (FastStream decodes JSON bodies)."""
    head, tail = b'{"v":1,"type":"bench","pad":"', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


BODY: Final = _json_body(BODY_BYTES)


@dataclass(frozen=True, slots=True)
class Settings:
    """How much work each sample does; the same for every contender."""

    url: str
    rounds: int
    publish_one_count: int
    publish_window_count: int
    consume_count: int
    request_one_count: int
    request_window_count: int
    sample_timeout_s: float = 300.0


def settings_for(url: str, quick: bool, rounds: int | None) -> Settings:
    if quick:
        return Settings(url, rounds or 3, 300, 2_000, 2_000, 150, 400)
    return Settings(url, rounds or 7, 600, 5_000, 6_000, 400, 1_000)
