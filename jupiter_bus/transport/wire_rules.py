"""What the wire allows, checked before anything is sent, and how topic names match.

Topic patterns match routing keys exactly as RabbitMQ's topic exchanges do (the in-memory
bus routes with it); header values, message TTLs and prefetch limits are refused here when
AMQP cannot carry them; URLs lose their credentials before they reach a log line.

Example::

    >>> topic_matches("network.*.node2", "network.node1.node2")
    True
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ..errors import TransportError

__all__ = ["check_prefetch", "safe_url", "topic_matches"]


@functools.lru_cache(maxsize=4096)
def _topic_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    for word in pattern.split("."):
        if word == "#":
            parts.append(r"(?:\.[^.]*)*")
        elif word == "*":
            parts.append(r"\.[^.]*")
        else:
            parts.append(r"\." + re.escape(word))
    return re.compile("".join(parts), re.DOTALL)


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether ``routing_key`` matches the topic ``pattern`` exactly as RabbitMQ does.

    Words are separated by ``.``; ``*`` matches one word, ``#`` zero or more.

    Example::

        >>> topic_matches("network.*.node2", "network.node1.node2")
        True
        >>> topic_matches("resource.#", "resource")
        True
    """
    return _topic_regex(pattern).fullmatch("." + routing_key) is not None


def safe_url(url: str) -> str:
    """``url`` without its credentials, for logs, errors and ``repr``.

    Example::

        >>> safe_url("amqp://guest:secret@10.0.0.1:5672/prod")
        'amqp://10.0.0.1:5672/prod'
    """
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{hosts}{parts.path}"


def _check_expiration(seconds: float) -> float:
    """A message's time to live, checked: finite and ``>= 0``."""
    if not 0 <= seconds < float("inf"):
        raise TransportError(f"expiration must be a finite number of seconds >= 0, got {seconds}")
    return float(seconds)


_INT64 = range(-(2**63), 2**63)
_FLOAT32_MAX = 3.4028234663852886e38


def _check_headers(headers: Mapping[str, Any]) -> None:
    """Refuse header values AMQP cannot carry before they reach the broker.

    RabbitMQ answers a NaN or infinite float in a header table by closing the whole
    connection (INTERNAL_ERROR), and a robust connection then retries the same publish:
    every consumer of the process would go down with it, again and again.
    """
    for key, value in headers.items():
        if not _carried(value):
            raise TransportError(
                f"header {key[:64]!r} holds a value AMQP cannot carry (a NaN, infinite or "
                "beyond-32-bit float, or an integer beyond 64 bits): send it as a string"
            )


def _carried(value: object) -> bool:
    if type(value) is float:  # aio-pika sends header floats as 32-bit ones
        return math.isfinite(value) and abs(value) <= _FLOAT32_MAX
    if type(value) is int:
        return value in _INT64
    if isinstance(value, list | tuple):
        return all(_carried(v) for v in value)
    if isinstance(value, dict):
        return all(_carried(v) for v in value.values())
    return True


def check_prefetch(prefetch: int) -> int:
    """Validate a prefetch limit (1..65535, AMQP's range)."""
    if not 1 <= prefetch <= 65_535:
        raise TransportError(f"prefetch must be between 1 and 65535, got {prefetch}")
    return prefetch
