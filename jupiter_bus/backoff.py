"""The one backoff policy: exponential delays, capped, with optional jitter.

Used by the agent between restarts of a crashed provider, by the transfer worker
between attempts of a job, and by the network profiler before probing a failed link
again.

Example::

    >>> Backoff(initial_seconds=0.5, max_seconds=10.0, jitter=0.0).delay(3)
    2.0
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .errors import ConfigError

__all__ = ["Backoff"]

_MAX_DOUBLINGS = 1000
"""Beyond this many doublings the float would overflow; the cap has long been reached."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """``initial_seconds * 2**(attempt - 1)``, capped at ``max_seconds``, then jittered.

    ``jitter`` is the fraction by which a delay may be shortened at random: with 0.5 a
    delay lies in ``[base / 2, base]`` (so many failing peers do not retry in step);
    0 gives exactly ``base``.

    Example::

        backoff = Backoff(initial_seconds=0.5, max_seconds=30.0, jitter=0.5)
        await asyncio.sleep(backoff.delay(failures))
    """

    initial_seconds: float = 0.5
    max_seconds: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not (self.initial_seconds >= 0 and self.max_seconds >= 0):
            raise ConfigError(
                f"backoff: delays must be >= 0 seconds, got initial {self.initial_seconds!r} "
                f"and max {self.max_seconds!r}"
            )
        if not 0 <= self.jitter <= 1:
            raise ConfigError(f"backoff: jitter must be from 0 to 1, got {self.jitter!r}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th failure in a row (the first is 1)."""
        doublings = min(max(0, attempt - 1), _MAX_DOUBLINGS)
        base = min(self.max_seconds, self.initial_seconds * 2.0**doublings)
        if self.jitter:
            base *= random.uniform(1.0 - self.jitter, 1.0)
        return base
