"""The facade's transfer client: requests to a node's worker, and their results.

- :class:`TransferClient` turns a :class:`TransferJob` (what the caller asked) into a
  :class:`~jupiter_bus.messages.TransferRequest` (password sealed when a key is given),
  sends it to the executing node's work queue and either awaits the reply
  (``data_transfer``) or returns the job id (``submit_transfer``);
- :class:`CompletionCollector` takes results from the interface's durable completion
  queue and from ``transfer.done`` events, holds them until a caller collects them
  (``wait_transfer``), and wakes the callers waiting.

Example::

    completions = CompletionCollector("jupiter.completions.x", named=False,
                                      max_results=100, is_open=lambda: True, owner="x")
    client = TransferClient(completions, node="node1", seal_key=None)
    job_id = await client.submit(transport, TransferJob("10.0.0.2", "jupiter", None, "/a", "/b"))
    result = await client.wait(job_id, timeout=60, check=True)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from .. import sealing
from ..errors import (
    InterfaceClosed,
    InvalidRequest,
    JupiterBusError,
    MessageError,
    NoReply,
    QueueMismatch,
    RemoteError,
    RequestTimeout,
    TransportError,
    Unreachable,
    Unroutable,
    transfer_error,
)
from ..messages import TransferEngine, TransferRequest, TransferResult, decode, encode
from ..receive import decode_delivery
from ..topology import TRANSFERS_EXCHANGE, check_node, work_queue
from ..transport import Consumer, Delivery, Envelope, Transport
from ..transport.base import HeaderValue, QueueType

__all__ = [
    "COMPLETION_PREFIX",
    "DEFAULT_COMPLETION_EXPIRES",
    "CompletionCollector",
    "TransferClient",
    "TransferJob",
    "default_completion_queue_type",
]

log = logging.getLogger(__name__)

COMPLETION_PREFIX: Final = "jupiter.completions."
"""Default completion queue of an interface: this prefix and its client id."""
DEFAULT_COMPLETION_EXPIRES: Final = 3600.0
"""Seconds a default completion queue outlives its last consumer (RabbitMQ's
``x-expires``): a facade killed before it could delete it leaves nothing behind for long,
and one restarted with the same ``client_id`` within that time finds its results."""


def default_completion_queue_type(url: str) -> QueueType:
    """``quorum`` when ``url`` names several brokers (a cluster: ``amqp://u:p@h1,h2,h3/``,
    :mod:`jupiter_bus.transport.broker_list`), ``classic`` otherwise.

    Example::

        >>> default_completion_queue_type("amqp://u:p@h1:5672,h2:5672/")
        'quorum'
    """
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        return "classic"
    hosts = parts.netloc.rpartition("@")[2]
    return "quorum" if len([h for h in hosts.split(",") if h]) > 1 else "classic"


class CompletionCollector:
    """Results of submitted jobs: the completion-queue consumer, the results held (taken,
    not yet collected: their deliveries are acked once collected), the recently collected
    ones, the recent ``transfer.done`` results, and the callers waiting. Each map keeps at
    most ``max_results``.

    ``named``: the queue was chosen by the caller (kept on close; the default one is
    deleted). ``is_open`` says whether the owning interface is still open; ``owner``
    (its client id) goes in log lines. ``expires``: seconds the queue outlives its last
    consumer (``x-expires``; ``None``: forever); given for the default queue only, since
    a named one is shared and must be declared alike everywhere. ``queue_type``:
    ``classic`` or ``quorum`` (on a RabbitMQ cluster a classic queue lives on one node, and
    its results are out of reach while that node is down; a quorum queue is replicated).

    Example::

        completions = CompletionCollector(queue, named=True, max_results=100,
                                          is_open=lambda: True, owner="c1")
        await completions.ensure(transport)
        result = await completions.wait(job_id, timeout=60.0)
    """

    def __init__(
        self,
        queue: str,
        *,
        named: bool,
        max_results: int,
        is_open: Callable[[], bool],
        owner: str,
        expires: float | None = None,
        queue_type: QueueType = "classic",
    ) -> None:
        self.queue = queue
        self.named = named
        self.expires = expires
        self.queue_type: QueueType = queue_type
        self._owner = owner
        self._max_results = max_results
        self._is_open = is_open
        self._transport: Transport | None = None
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._held: OrderedDict[str, tuple[TransferResult, Delivery]] = OrderedDict()
        self._collected: OrderedDict[str, TransferResult] = OrderedDict()
        self._done: OrderedDict[str, TransferResult] = OrderedDict()
        self._waiters: dict[str, list[asyncio.Future[TransferResult]]] = {}

    @property
    def held(self) -> int:
        """Results taken from the completion queue and not yet collected."""
        return len(self._held)

    async def wait(self, job_id: str, timeout: float) -> TransferResult:
        """The result of ``job_id``, collected (acked); :class:`NoReply` after ``timeout``."""
        result = await self._ready_result(job_id)
        if result is not None:
            return result
        waiter: asyncio.Future[TransferResult] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, []).append(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            held = len(self._held)
            raise NoReply(
                f"no result for job {job_id} within {timeout:g} s; the job may still run"
                + (
                    f" ({held} uncollected results are held: collect them with "
                    "wait_transfer, the rest wait in the queue)"
                    if held >= self._max_results
                    else ""
                ),
                job_id=job_id,
            ) from None
        finally:
            futures = self._waiters.get(job_id)
            if futures is not None and waiter in futures:
                futures.remove(waiter)
                if not futures:
                    del self._waiters[job_id]

    async def _ready_result(self, job_id: str) -> TransferResult | None:
        """A result already here for ``job_id``, marked collected (its delivery acked)."""
        result = self._collected.get(job_id)
        if result is not None:
            self._collected.move_to_end(job_id)
            return result
        held = self._held.pop(job_id, None)
        if held is not None:
            result, delivery = held
            self._remember(job_id, result)
            await delivery.ack()
            return result
        result = self._done.get(job_id)
        if result is not None:
            self._remember(job_id, result)
        return result

    def _remember(self, job_id: str, result: TransferResult) -> None:
        self._collected[job_id] = result
        self._collected.move_to_end(job_id)
        while len(self._collected) > self._max_results:
            self._collected.popitem(last=False)

    def _resolve(self, job_id: str, result: TransferResult) -> bool:
        """Hand ``result`` to the callers waiting for it; whether there were any."""
        futures = self._waiters.pop(job_id, None)
        if not futures:
            return False
        for future in futures:
            if not future.done():
                future.set_result(result)
        self._remember(job_id, result)
        return True

    def on_done(self, result: TransferResult) -> None:
        """A ``transfer.done`` event: remember it a while and wake its waiters."""
        job_id = result.request_id
        self._done[job_id] = result
        while len(self._done) > self._max_results:
            self._done.popitem(last=False)
        self._resolve(job_id, result)

    def fail_waiters(self, error: BaseException) -> None:
        """Make every caller waiting for a result raise ``error``."""
        waiters, self._waiters = self._waiters, {}
        for futures in waiters.values():
            for future in futures:
                if not future.done():
                    future.set_exception(error)

    async def ensure(self, transport: Transport) -> str:
        """Declare the completion queue and start collecting from it (once); its name."""
        if self._task is not None:
            return self.queue
        async with self._lock:
            if self._task is None:
                await self._declare(transport)
                self._transport = transport
                consumer = transport.consume(self.queue, prefetch=min(self._max_results, 65_535))
                try:
                    await consumer.start()
                    if not self._is_open():  # closed while this was starting
                        raise InterfaceClosed("the JupiterInterface was closed")
                except BaseException:
                    await consumer.close()
                    raise
                self._consumer = consumer
                self._task = asyncio.create_task(
                    self._collect(consumer), name=f"jupiter-bus completions {self.queue}"
                )
        return self.queue

    async def _declare(self, transport: Transport) -> None:
        """Declare the queue. The default one (this interface's own, by its client id)
        found with other arguments, left by an earlier version or another queue type, is
        used as it is: its results are this client's. A named (shared) one must match."""
        try:
            await transport.declare_queue(self.queue, arguments=self.arguments() or None)
        except QueueMismatch:
            if self.named:
                raise
            await transport.queue_stats(self.queue)  # it is there, as it is
            log.warning(
                "completion queue %s exists with other arguments than %s (made by an "
                "earlier version?): using it as it is, its results are this client's; "
                "delete it once empty to have it declared so",
                self.queue,
                self.arguments(),
            )

    def arguments(self) -> dict[str, HeaderValue]:
        """The ``x-`` arguments the completion queue is declared with."""
        arguments: dict[str, HeaderValue] = {}
        if self.queue_type == "quorum":
            arguments["x-queue-type"] = "quorum"
        if self.expires is not None:
            arguments["x-expires"] = round(self.expires * 1000)
        return arguments

    async def _collect(self, consumer: Consumer) -> None:
        """Take results from the completion queue; ack each once a caller collected it."""
        try:
            async for delivery in consumer:
                result = await decode_delivery(delivery, TransferResult)
                if result is None:
                    continue  # dead-lettered with its reason
                job_id = delivery.envelope.correlation_id or result.request_id
                if job_id in self._collected or self._resolve(job_id, result):
                    await delivery.ack()
                elif job_id in self._held:
                    # A second answer to one job (its worker's ack was lost, the rerun
                    # answered from its job store): one held copy is enough.
                    await delivery.ack()
                else:
                    self._held[job_id] = (result, delivery)
        except asyncio.CancelledError:
            raise
        except Exception:
            if self._is_open():
                log.exception("facade %s: completion queue %s failed", self._owner, self.queue)

    def cancel(self) -> list[asyncio.Task[None]]:
        """Cancel the collecting task and return it, to be awaited (results stay held
        until :meth:`close`)."""
        if self._task is None:
            return []
        self._task.cancel()
        return [self._task]

    async def close(self) -> None:
        """Close the consumer (held results go back to the queue); delete a default queue."""
        try:
            if self._consumer is not None:
                await self._consumer.close()
            if self._transport is not None and not self.named:
                with contextlib.suppress(TransportError):
                    await self._transport.delete_queue(self.queue)
        finally:
            self._held.clear()


@dataclass(frozen=True, slots=True)
class TransferJob:
    """What a caller asked to copy, as given to ``data_transfer``/``submit_transfer``
    (fields in their order), before it is checked and becomes a request.

    Example::

        TransferJob("10.0.0.2", "jupiter", None, "/out/a", "/in/a", via="node1")
    """

    ip: str
    user: str
    pword: str | None = field(repr=False)
    source: str
    destination: str
    via: str | None = None
    port: int = 22
    engine: TransferEngine | None = None
    idempotency_key: str | None = None
    create_dirs: bool = False
    deadline: float | None = None
    """UTC epoch seconds after which the job must not run (``None``: see the caller)."""


class TransferClient:
    """Sends transfer jobs to a node's worker (``node``: the default executing node;
    ``seal_key``: seal passwords first) and reads their results through ``completions``.

    Example::

        client = TransferClient(completions, node="node1", seal_key=None)
        job = TransferJob("10.0.0.2", "jupiter", None, "/a", "/b")
        result = await client.send(transport, job, timeout=60.0)
    """

    def __init__(
        self, completions: CompletionCollector, *, node: str | None, seal_key: bytes | None
    ) -> None:
        self._completions = completions
        self._node = node
        self._seal_key = seal_key
        self._listeners: list[Callable[[TransferResult], None]] = []

    def on_result(self, listener: Callable[[TransferResult], None]) -> Callable[[], None]:
        """Call ``listener`` with each result :meth:`send` or :meth:`wait` returns or raises
        for; return a function that removes it. A listener that raises is logged and kept."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _received(self, result: TransferResult) -> None:
        for listener in list(self._listeners):
            try:
                listener(result)
            except Exception:
                log.exception("transfer-result listener failed")

    def executing_node(self, via: str | None) -> str:
        """The node that runs a transfer: ``via``, else the default; checked."""
        node = via if via is not None else self._node
        if node is None:
            raise InvalidRequest(
                "no executing node: pass via='<node>' or JupiterInterface(..., node='<node>')"
            )
        try:
            return check_node(node, what="executing node")
        except JupiterBusError as exc:
            raise InvalidRequest(str(exc)) from None

    def request(self, job: TransferJob, deadline: float | None = None) -> TransferRequest:
        """``job`` as a validated request (password sealed with the key, if any), with
        ``deadline`` when the job gives none."""
        password = job.pword or None
        try:
            if password is not None and self._seal_key is not None:
                password = sealing.seal(password, self._seal_key)
            return TransferRequest(
                host=job.ip,
                port=job.port,
                user=job.user,
                password=password,
                source=job.source,
                destination=job.destination,
                engine=job.engine,
                idempotency_key=job.idempotency_key or "",
                deadline=job.deadline if job.deadline is not None else deadline,
                create_dirs=job.create_dirs,
            )
        except MessageError as exc:  # its text never echoes a value
            raise InvalidRequest(f"transfer request refused before sending: {exc}") from None

    async def send(
        self, transport: Transport, job: TransferJob, *, timeout: float
    ) -> TransferResult:
        """Send ``job`` and await its result (``JupiterInterface.data_transfer``).

        The job's deadline is its own or, without one, ``timeout`` from now: the caller
        stops waiting then, so the job must not start (or go on) unannounced later.

        The result is the reply or, whichever comes first, the job's ``transfer.done``
        event. A reply lost with the connection is not waited for in vain: once the
        connection is back, the same request (same id, so the same job) is sent again,
        and the worker answers it from its job store, or when the run in progress ends.
        """
        node = self.executing_node(job.via)
        request = self.request(job, deadline=time.time() + timeout)
        log.info("job %s: transfer via node %s to %s:%d", request.id, node, job.ip, job.port)
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        reconnected = asyncio.Event()
        forget = transport.on_reconnect(reconnected.set)
        announced = asyncio.ensure_future(self._completions.wait(request.id, timeout))
        asking: asyncio.Future[Envelope] | None = None
        try:
            while True:
                if asking is None:
                    reconnected.clear()
                    asking = asyncio.ensure_future(
                        transport.request(
                            TRANSFERS_EXCHANGE,
                            node,
                            encode(request),
                            timeout=max(0.0, until - loop.time()),
                            correlation_id=request.id,
                            expiration=_time_to_live(request),
                        )
                    )
                back = asyncio.ensure_future(reconnected.wait())
                try:
                    await asyncio.wait(
                        [f for f in (asking, announced, back) if not f.done()],
                        timeout=max(0.0, until - loop.time()),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    back.cancel()
                if asking.done() and not asking.cancelled() and asking.exception() is None:
                    return await self._read_reply(transport, asking.result(), request.id, node, job)
                if announced.done() and not isinstance(announced.exception(), NoReply):
                    result = announced.result()  # InterfaceClosed: raised as is
                    self._received(result)
                    return _checked(result, job.pword)
                if loop.time() >= until:
                    raise self._no_reply(request.id, node, timeout)
                if reconnected.is_set():
                    log.info(
                        "job %s: connection back, asking node %s again (a job already "
                        "done is answered from its job store)",
                        request.id,
                        node,
                    )
                    await _cancelled(asking)
                    asking = None
                elif asking.done():
                    error = asking.exception()
                    if isinstance(error, Unroutable):
                        raise _no_worker(node, request.id) from None
                    if isinstance(error, RequestTimeout):
                        raise self._no_reply(request.id, node, timeout)
                    assert error is not None
                    raise error
        finally:
            forget()
            await _cancelled(announced)
            if asking is not None:
                await _cancelled(asking)

    @staticmethod
    def _no_reply(job_id: str, node: str, timeout: float) -> NoReply:
        return NoReply(
            f"no result for job {job_id} from node {node} within {timeout:g} s; "
            "the job may still run (its result will appear on transfer.done)",
            job_id=job_id,
            node=node,
        )

    async def _read_reply(
        self, transport: Transport, reply: Envelope, job_id: str, node: str, job: TransferJob
    ) -> TransferResult:
        """The result in ``reply``; an unreadable one is dead-lettered (RemoteError)."""
        try:
            result = decode(reply.body, TransferResult)
        except MessageError as exc:
            await transport.dead_letter(reply, str(exc))  # the contract: refused, kept
            raise RemoteError(
                f"job {job_id}: node {node} answered something unreadable: {exc}",
                job_id=job_id,
                node=node,
            ) from None
        self._received(result)
        return _checked(result, job.pword)

    async def submit(self, transport: Transport, job: TransferJob) -> str:
        """Publish ``job`` persistent, its result to the completion queue; its id."""
        node = self.executing_node(job.via)
        request = self.request(job)
        queue = await self._completions.ensure(transport)
        try:
            await transport.publish(
                TRANSFERS_EXCHANGE,
                node,
                encode(request),
                persistent=True,
                mandatory=True,
                reply_to=queue,
                correlation_id=request.id,
                message_id=request.id,
                expiration=_time_to_live(request),
            )
        except Unroutable:
            raise _no_worker(node, request.id) from None
        log.info("job %s: submitted via node %s, results to %s", request.id, node, queue)
        return request.id

    async def wait(self, job_id: str, *, timeout: float, check: bool) -> TransferResult:
        """The result of a submitted job; with ``check``, raise its error if it failed."""
        result = await self._completions.wait(job_id, timeout)
        self._received(result)
        return _checked(result, None) if check else result


async def _cancelled(future: asyncio.Future[Any]) -> None:
    """Cancel ``future`` (if still running) and wait until it has ended (its outcome is
    dropped; the caller's own cancellation is not)."""
    if not future.done():
        future.cancel()
    await asyncio.wait([future])


def _time_to_live(request: TransferRequest) -> float | None:
    """Seconds from now to the request's ``deadline``: the queue TTL of its job.

    None for a job carrying a clear (unsealed) password: RabbitMQ dead-letters an
    expired message with its body as published, so its password would sit in
    ``jupiter.dead``. Such a job keeps its deadline, and a worker that takes it late
    answers ``timeout`` without running it.
    """
    if request.deadline is None:
        return None
    if request.password is not None and not sealing.is_sealed(request.password):
        return None
    return max(0.0, request.deadline - time.time())


def _no_worker(node: str, job_id: str) -> Unreachable:
    return Unreachable(
        f"node {node!r} runs no transfer worker: nothing consumes {work_queue(node)} "
        "(start its agent with the transfer provider, or choose another node with via=)",
        job_id=job_id,
        node=node,
    )


def _checked(result: TransferResult, password: str | None) -> TransferResult:
    """``result`` when it succeeded; otherwise raise the error of its kind."""
    if result.ok or result.error is None:
        return result
    kind = result.error.kind
    message = result.error.message
    if password:
        message = message.replace(password, "***")
    cls = transfer_error(kind)
    raise cls(
        f"transfer {result.request_id} via node {result.node} failed ({kind}): {message}",
        result=result,
    )
