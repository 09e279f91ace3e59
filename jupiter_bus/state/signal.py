"""Change notification: a version counter coroutines can wait on, and the states' base.

Example::

    seen = state.version
    ...                                         # read a snapshot
    seen = await state.wait_changed(seen, timeout=5.0)
"""

from __future__ import annotations

import asyncio

__all__ = ["ChangeSignal", "VersionedState"]


class ChangeSignal:
    """Counts changes and wakes coroutines waiting for the next one: an ``asyncio.Event``
    that remembers how often it fired, so a waiter never misses a change.

    Example::

        seen = signal.version
        ...                                    # read the state
        seen = await signal.wait_changed(seen, timeout=5.0)
    """

    __slots__ = ("_failure", "_waiters", "version")

    def __init__(self) -> None:
        self.version = 0
        self._waiters: list[asyncio.Future[int]] = []
        self._failure: BaseException | None = None

    def bump(self) -> None:
        """Record one change and wake the waiters."""
        self.version += 1
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(self.version)

    def fail(self, error: BaseException) -> None:
        """Make current and future waits raise ``error`` (the feed behind the state is gone)."""
        self._failure = error
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)

    async def wait_changed(self, since: int, timeout: float | None = None) -> int:
        """Return the current version once it differs from ``since``.

        Returns at once when a change happened already; raises :class:`TimeoutError`
        after ``timeout`` seconds without one.
        """
        if self._failure is not None:
            raise self._failure
        if self.version != since:
            return self.version
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        finally:
            if not waiter.done():
                waiter.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)


class VersionedState:
    """What every live state offers its readers: a version, and a wait for the next one.

    A subclass calls ``self._signal.bump()`` once per change it applies.

    Example::

        version = await state.wait_changed(state.version, timeout=5.0)
    """

    def __init__(self) -> None:
        self._signal = ChangeSignal()

    @property
    def version(self) -> int:
        """Number of changes applied so far."""
        return self._signal.version

    async def wait_changed(self, since: int, timeout: float | None = None) -> int:
        """Wait until the version differs from ``since``; return the new version."""
        return await self._signal.wait_changed(since, timeout)

    def fail_waiters(self, error: BaseException) -> None:
        """Make every current and later :meth:`wait_changed` raise ``error``."""
        self._signal.fail(error)
