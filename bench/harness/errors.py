"""The error a benchmark raises when it cannot measure what it set out to."""

from __future__ import annotations


class BenchError(RuntimeError):
    """A contender or a phase of a bench failed; the message says which and why.

    Example::

        raise BenchError("worker n1 did not start: connecting")
    """
