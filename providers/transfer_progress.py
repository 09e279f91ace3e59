"""Progress events of a running transfer: ``transfer.progress.<node>``, rate-limited.

A :class:`ProgressReporter` is made per job the worker runs. Engines call its
:meth:`~ProgressReporter.update` (through :attr:`CopyJob.progress
<jupiter_providers.copy_job.CopyJob.progress>`) with the bytes copied so far, as often as
they like; the reporter publishes the first :class:`~jupiter_bus.messages.TransferProgress`
once the copy has run ``interval`` seconds (a copy that ends sooner sends none: a
thousand 4 KB files a second need no progress bar, and publishing one event each cost
the worker about a tenth of its throughput), then at most one every ``interval``
seconds, fire-and-forget, with at most one publish in flight: an update
arriving while the previous one is still being sent is skipped. Publishing never fails
or slows the copy: errors are logged at DEBUG and forgotten. :meth:`~ProgressReporter.close`
stops it before the job's result goes out, so no progress follows the result.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from jupiter_bus.messages import TransferProgress, encode
from jupiter_bus.topology import EVENTS_EXCHANGE, transfer_progress_key
from jupiter_bus.transport import Transport

__all__ = ["FLUSH_SECONDS", "PROGRESS_EXPIRATION_SECONDS", "ProgressReporter"]

log = logging.getLogger(__name__)

PROGRESS_EXPIRATION_SECONDS: Final = 10.0
"""AMQP ``expiration`` of a progress event: a reader that fell behind never sees old news."""

FLUSH_SECONDS: Final = 2.0
"""Longest wait, on closing, for the progress publish still in flight (then it is cancelled):
it must reach the broker before the result, and must not hold the result up for long."""


class ProgressReporter:
    """Publishes the progress of one job: after ``interval``, then at most once per ``interval``.

    ``update`` must be called on the event loop (engines that copy in a thread hand it to
    the loop with ``call_soon_threadsafe``). ``published`` and ``skipped`` count what
    it sent and what it left out because the previous event was still being sent.

    Example::

        reporter = ProgressReporter(transport, "node1", request.id, total=size, interval=0.5)
        reporter.start()                      # the first event in 0.5 s, if still copying
        job = CopyJob(..., progress=reporter.update)
        try:
            await engine.copy(job)
        finally:
            await reporter.close()            # before the result is published
    """

    def __init__(
        self,
        transport: Transport,
        node: str,
        request_id: str,
        *,
        total: int | None,
        interval: float,
    ) -> None:
        self._transport = transport
        self._node = node
        self._key = transfer_progress_key(node)
        self._request_id = request_id
        self._total = total
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._last_sent = -float("inf")
        self._done = 0
        self._timer: asyncio.TimerHandle | None = None
        self._sending: asyncio.Task[None] | None = None
        self._closed = False
        self.published = 0
        """Progress events handed to the transport."""
        self.skipped = 0
        """Updates left out because the previous event was still being sent."""

    def start(self) -> None:
        """The copy starts: announce it once it has run ``interval`` seconds (with the bytes
        done by then, 0 for an engine that reports none); with ``interval`` 0, at once."""
        if self._interval <= 0:
            self._send_soon(0)
            return
        self._last_sent = self._loop.time()  # updates, too, wait an interval from here
        self._timer = self._loop.call_later(self._interval, self._announce)

    def _announce(self) -> None:
        self._timer = None
        if self.published == 0:  # no update came due first
            self._send_soon(self._done)

    def update(self, bytes_done: int) -> None:
        """The copy has reached ``bytes_done`` bytes: publish it if one is due. Never raises."""
        self._done = max(self._done, bytes_done)
        if self._closed or self._loop.time() - self._last_sent < self._interval:
            return
        if self._sending is not None and not self._sending.done():
            self.skipped += 1
            return
        self._send_soon(bytes_done)

    def _send_soon(self, bytes_done: int) -> None:
        if self._closed:
            return
        self._last_sent = self._loop.time()
        self.published += 1
        self._sending = self._loop.create_task(
            self._send(bytes_done), name=f"jupiter-bus progress {self._request_id}"
        )

    async def _send(self, bytes_done: int) -> None:
        try:
            total = self._total
            if total is not None:
                bytes_done = min(bytes_done, total)  # a source that grew while copied
            body = encode(
                TransferProgress(
                    request_id=self._request_id,
                    node=self._node,
                    bytes_done=max(0, bytes_done),
                    bytes_total=total,
                )
            )
            await self._transport.publish(
                EVENTS_EXCHANGE, self._key, body, expiration=PROGRESS_EXPIRATION_SECONDS
            )
        except Exception as exc:  # progress is best effort: the copy goes on regardless
            log.debug(
                "node %s job %s: progress event not published: %s",
                self._node,
                self._request_id,
                exc,
            )

    async def close(self) -> None:
        """Publish nothing more; let the event in flight reach the broker (at most
        :data:`FLUSH_SECONDS`, then it is cancelled), so that none follows the result."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task, self._sending = self._sending, None
        if task is None or task.done():
            return
        try:
            await asyncio.wait({task}, timeout=FLUSH_SECONDS)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
