"""Transfer worker: executes ``transfer.request`` jobs from ``jupiter.transfer.<node>``.

For each job: decode (bad bodies are dead-lettered without their password), answer
from the local job store if its idempotency key already completed, refuse it
``timeout`` if past its deadline, then copy with the requested engine, retrying
transient failures (refused/reset connections, timeouts) with exponential backoff
and jitter for a bounded number of attempts. The result is stored, published as
``transfer.done.<node>`` and sent to the request's ``reply_to``, and only then is
the job acked (a direct reply-to answer goes right after the ack: nothing can keep it,
and on a RabbitMQ cluster one to a requester whose node is down costs the worker its
connection). A job redelivered more than ``redelivery_limit`` times is
dead-lettered instead of being tried forever.

While a job runs, its progress goes out as ``transfer.progress.<node>`` events: the
first once it has run ``progress_interval`` seconds (a shorter job sends none), then at
most one every ``progress_interval`` seconds
(:mod:`~jupiter_providers.transfer_progress`), none after the result. The network
profiler's probes (granted jobs of this node's own providers) send none.

Options (``[providers.transfer]`` in the agent's configuration)::

    concurrency = 4            # jobs at once (the queue's prefetch)
    engine = "sftp"            # default engine: sftp, scp, openssh-scp, local
    allow_roots = ["/data"]    # sources must lie under these (none: any readable file)
    known_hosts = "/etc/jupiter/known_hosts"   # default ~/.ssh/known_hosts
    verify_host_keys = true    # false reproduces Jupiter's StrictHostKeyChecking=no
    client_keys = ["/etc/jupiter/id_ed25519"]  # default: ~/.ssh keys and agent
    max_attempts = 4
    redelivery_limit = 5
    seal_key_file = "/etc/jupiter/seal.key"    # open sealed passwords
    require_sealed = false     # refuse passwords sent in clear
    state_dir = "/var/lib/jupiter-bus/node1"   # the job store
    progress_interval = 0.5    # seconds between progress events (0: none)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupiter_bus import sealing
from jupiter_bus.backoff import Backoff
from jupiter_bus.errors import CopyFailure, ProviderError, SealError, TransportError
from jupiter_bus.messages import (
    TransferEngine,
    TransferError,
    TransferRequest,
    TransferResult,
    decode,
    encode,
    redact,
)
from jupiter_bus.options import Options, option
from jupiter_bus.plugins import NodeContext, Provider, TransferSample
from jupiter_bus.receive import decode_delivery
from jupiter_bus.topology import EVENTS_EXCHANGE, transfer_done_key
from jupiter_bus.transport import Delivery, WorkQueueOptions
from jupiter_bus.transport.base import QueueType

from .copy_engines import (
    CopyJob,
    Engine,
    LocalEngine,
    OpenSshOptions,
    OpenSshScpEngine,
    ScpEngine,
    SftpEngine,
    local_file_size,
)
from .job_store import JobStore
from .ssh_pool import SshOptions, SshPool
from .transfer_progress import ProgressReporter

__all__ = [
    "TransferOptions",
    "TransferProvider",
    "default_state_dir",
]

log = logging.getLogger(__name__)


def _default_or_positive(value: int) -> bool:
    return value == -1 or value > 0


def default_state_dir(node: str) -> Path:
    """Where a node's job store lives unless configured: ``$XDG_STATE_HOME/jupiter-bus/<node>``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "jupiter-bus" / node


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Read a left-over future's outcome, so asyncio does not report it as never retrieved."""
    if not future.cancelled():
        future.exception()


@dataclass(frozen=True, slots=True)
class TransferOptions(Options):
    """Options of the transfer worker (``[providers.transfer]``)."""

    concurrency: int = option(
        4, doc="jobs run at once (the prefetch of the node's work queue)", ge=1, le=65535
    )
    engine: TransferEngine = option("sftp", doc="engine of requests that name none")
    allow_roots: tuple[Path, ...] = option(
        (),
        doc="sources must lie under one of these folders (empty: any file this process "
        "can read, with a warning at start)",
    )
    known_hosts: Path | None = option(
        None,
        doc="known_hosts file the peers' host keys are checked against (none: ~/.ssh/known_hosts)",
    )
    verify_host_keys: bool = option(
        True, doc="false reproduces Jupiter's StrictHostKeyChecking=no (warned at start)"
    )
    client_keys: tuple[Path, ...] | None = option(
        None, doc="private keys for requests without a password (none: ~/.ssh keys and agent)"
    )
    connect_timeout: float = option(
        10.0, doc="seconds an SSH connection may take to open", unit="seconds", gt=0
    )
    idle_seconds: float = option(60.0, doc="pooled SSH connections unused this long close", ge=0)
    max_attempts: int = option(
        4, doc="attempts of a job failing transiently (refused, reset, timed out)", ge=1
    )
    retry_initial_seconds: float = option(
        0.5, doc="wait before the second attempt; doubled for each further one", ge=0
    )
    retry_max_seconds: float = option(10.0, doc="longest wait between two attempts", ge=0)
    redelivery_limit: int = option(
        5, doc="a job redelivered more often than this is dead-lettered, not run", ge=0
    )
    seal_key_file: Path | None = option(
        None, doc="deployment key that opens sealed passwords (jupiter_bus.sealing)"
    )
    require_sealed: bool = option(False, doc="refuse jobs whose password is sent in clear")
    state_dir: Path | None = option(
        None, doc="folder of the job store (none: $XDG_STATE_HOME/jupiter-bus/<node>)"
    )
    queue_type: QueueType = option(
        "classic", doc="type of the work queue; every declarer in a deployment must agree"
    )
    delivery_limit: int | None = option(
        None, doc="quorum queues: x-delivery-limit, after which the broker dead-letters", ge=1
    )
    sftp_block_size: int = option(
        -1,
        doc="bytes per SFTP read/write request (-1: asyncssh's choice)",
        check=_default_or_positive,
        expect="-1 or an integer > 0",
    )
    sftp_max_requests: int = option(
        -1,
        doc="SFTP requests in flight per file (-1: asyncssh's choice)",
        check=_default_or_positive,
        expect="-1 or an integer > 0",
    )
    progress_interval: float = option(
        0.5,
        doc="seconds between two transfer.progress events of a running job, the first this "
        "long into the copy (0: none; a shorter job sends none)",
        unit="seconds",
        ge=0,
    )


class TransferProvider(Provider):
    """The transfer worker of one node (provider name ``transfer``)."""

    name = "transfer"
    Options = TransferOptions
    settings: TransferOptions

    def __init__(
        self, context: NodeContext, options: Mapping[str, Any] | TransferOptions | None = None
    ) -> None:
        super().__init__(context, options)
        o = self.settings
        self.concurrency = o.concurrency
        self.default_engine: str = o.engine
        self.allow_roots = [os.path.realpath(os.path.expanduser(r)) for r in o.allow_roots]
        self.max_attempts = o.max_attempts
        self.retry = Backoff(o.retry_initial_seconds, o.retry_max_seconds, jitter=0.5)
        self.redelivery_limit = o.redelivery_limit
        self.require_sealed = o.require_sealed
        self.progress_interval = o.progress_interval
        try:
            self.seal_key = sealing.load_key(o.seal_key_file) if o.seal_key_file else None
        except SealError as exc:
            raise ProviderError(f"providers.transfer.seal_key_file: {exc}") from None
        self.state_dir = o.state_dir or default_state_dir(context.node)
        self.queue_options = WorkQueueOptions(
            queue_type=o.queue_type, delivery_limit=o.delivery_limit
        )
        known_hosts = str(o.known_hosts) if o.known_hosts else None
        client_keys = [str(k) for k in o.client_keys] if o.client_keys is not None else None
        self.pool = SshPool(
            SshOptions(
                known_hosts=known_hosts,
                verify_host_keys=o.verify_host_keys,
                client_keys=client_keys,
                connect_timeout=o.connect_timeout,
                idle_seconds=o.idle_seconds,
            )
        )
        self.engines: dict[str, Engine] = {
            "sftp": SftpEngine(
                self.pool, block_size=o.sftp_block_size, max_requests=o.sftp_max_requests
            ),
            "scp": ScpEngine(self.pool),
            "openssh-scp": OpenSshScpEngine(
                OpenSshOptions(
                    known_hosts=known_hosts,
                    verify_host_keys=o.verify_host_keys,
                    identity_files=tuple(client_keys or ()),
                    connect_timeout=o.connect_timeout,
                )
            ),
            "local": LocalEngine(),
        }
        self.completed = 0
        self.failed = 0
        self._running: dict[str, asyncio.Future[None]] = {}
        """Jobs being run, by idempotency key: done once the result is stored."""

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume the node's work queue until ``stopping``; in-flight jobs finish first."""
        if not self.allow_roots:
            log.warning(
                "node %s: transfer worker has no allow_roots: any file readable by this "
                "process can be sent by whoever can publish a job",
                self.context.node,
            )
        if not self.pool.options.verify_host_keys:
            log.warning(
                "node %s: host keys are NOT verified (verify_host_keys = false)", self.context.node
            )
        store = JobStore(self.state_dir)
        transport = self.context.transport
        queue = await transport.declare_work_queue(self.context.node, self.queue_options)
        try:
            async with transport.consume(queue, prefetch=self.concurrency) as jobs:
                self.set_health(True, f"consuming {queue}")
                # Leaving the group waits for the in-flight jobs to finish and be acked;
                # the agent cancels us (and so them) after its grace period, and unacked
                # jobs go back to the queue.
                async with asyncio.TaskGroup() as in_flight:
                    failure = await self._take_jobs(jobs, queue, stopping, in_flight, store)
                if failure is not None:
                    raise failure
        finally:
            await self.pool.close()
            store.close()

    async def _take_jobs(
        self,
        jobs: AsyncIterator[Delivery],
        queue: str,
        stopping: asyncio.Event,
        in_flight: asyncio.TaskGroup,
        store: JobStore,
    ) -> Exception | None:
        """Start a job per delivery until ``stopping``; return why the consumer failed, if it did.

        The failure is returned, not raised, so that the jobs in flight still finish first.
        """
        stop = asyncio.ensure_future(stopping.wait())
        take: asyncio.Future[Delivery] | None = None
        try:
            while not stopping.is_set():
                take = asyncio.ensure_future(anext(jobs))
                await asyncio.wait({take, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not take.done():
                    take.cancel()
                    await asyncio.gather(take, return_exceptions=True)
                    break
                try:
                    delivery = take.result()
                except StopAsyncIteration:
                    if stopping.is_set():
                        break
                    return TransportError(f"consumer of {queue} closed under us")
                except Exception as exc:
                    return exc
                in_flight.create_task(self._handle_unanswered(delivery, store))
        finally:
            stop.cancel()
            if take is not None:  # this task was cancelled (Ctrl-C) with a take pending
                take.cancel()
                take.add_done_callback(_retrieve)
        return None

    async def _handle_unanswered(self, delivery: Delivery, store: JobStore) -> None:
        """:meth:`_handle`, logging a failure: the job stays unacked and comes back later."""
        try:
            await self._handle(delivery, store)
        except Exception:
            log.exception(
                "node %s: job %s not answered (it goes back to the queue)",
                self.context.node,
                delivery.envelope.message_id or delivery.envelope.correlation_id or "?",
            )

    async def _handle(self, delivery: Delivery, store: JobStore) -> None:
        request = await decode_delivery(delivery, TransferRequest)
        if request is None:
            return
        key = request.idempotency_key
        while (running := self._running.get(key)) is not None:
            # Redelivered while its first run still copies (that run's ack went with a
            # lost connection): wait for that run and answer its result, not copy twice.
            await asyncio.shield(running)
        stored = await store.result(key)
        if stored is not None:
            log.info(
                "node %s job %s: already done, answering from the job store", self.context.node, key
            )
            await self._answer(delivery, decode(stored, TransferResult), stored)
            return
        if delivery.envelope.redelivered:
            count = await store.count_redelivery(key)
            if count > self.redelivery_limit:
                await delivery.dead_letter(
                    f"redelivered {count} times (limit {self.redelivery_limit}); not run again",
                    body=redact(delivery.envelope.body),
                )
                return
        finished = self._running[key] = asyncio.get_running_loop().create_future()
        try:
            result = await self.execute(request)
            self.context.offer_result(result)
            body = encode(result)
            await store.save_result(key, body)
        finally:
            del self._running[key]
            finished.set_result(None)
        await self._answer(delivery, result, body)

    async def _answer(self, delivery: Delivery, result: TransferResult, body: bytes) -> None:
        """Publish the result, ack the job: ``transfer.done`` and a ``reply_to`` queue are
        confirmed before the ack (neither waits for the other); a direct reply-to answer
        goes after it (:meth:`Delivery.ack_and_reply`), since nothing can keep it."""
        transport, envelope = self.context.transport, delivery.envelope
        correlation_id = envelope.correlation_id or result.request_id
        done = transport.publish(
            EVENTS_EXCHANGE, transfer_done_key(self.context.node), body, persistent=True
        )
        if delivery.direct_reply:
            await done
            await delivery.ack_and_reply(body, correlation_id=correlation_id)
            return
        await asyncio.gather(done, transport.reply(envelope, body, correlation_id=correlation_id))
        await delivery.ack()

    def _result(
        self,
        request: TransferRequest,
        started: float,
        attempts: int,
        size: int,
        error: TransferError | None,
    ) -> TransferResult:
        return TransferResult(
            request_id=request.id,
            node=self.context.node,
            ok=error is None,
            bytes=size if error is None else 0,
            seconds=round(time.monotonic() - started, 6),
            attempts=attempts,
            error=error,
        )

    async def execute(self, request: TransferRequest) -> TransferResult:
        """Run one request to completion (with retries) and return its result; never raises."""
        started = time.monotonic()
        node, job_id = self.context.node, request.idempotency_key
        password = request.password
        attempts = 0
        try:
            if request.deadline is not None and time.time() > request.deadline:
                raise CopyFailure("timeout", "the job's deadline passed before it could run")
            password = self._open_password(password)
            self._check_source(request)
            size = local_file_size(request.source)
            engine = self.engines[request.engine or self.default_engine]
            # Leaving the block stops the progress events: none may follow the result.
            async with self._progress(request, size) as progress:
                job = CopyJob(
                    host=request.host,
                    port=request.port,
                    user=request.user,
                    password=password,
                    source=request.source,
                    destination=request.destination,
                    idempotency_key=request.idempotency_key,
                    create_dirs=request.create_dirs,
                    size_bytes=size,
                    progress=progress,
                )
                while True:
                    attempts += 1
                    attempt_started = time.monotonic()
                    try:
                        with self.context.samples.sending(request.host, request.port, job_id):
                            await self._attempt(engine, job, request.deadline)
                        attempt_seconds = time.monotonic() - attempt_started
                        break
                    except CopyFailure as failure:
                        delay = self._retry_delay(failure, attempts, request.deadline)
                        if delay is None:
                            raise
                        log.info(
                            "node %s job %s: attempt %d failed (%s: %s); retrying in %.2f s",
                            node,
                            job_id,
                            attempts,
                            failure.kind,
                            failure.message,
                            delay,
                        )
                        await asyncio.sleep(delay)
        except CopyFailure as failure:
            message = failure.message
            if password:
                message = message.replace(password, "***")
            self.failed += 1
            log.warning(
                "node %s job %s: failed after %d attempt(s): %s: %s",
                node,
                job_id,
                attempts,
                failure.kind,
                message,
            )
            return self._result(request, started, attempts, 0, TransferError(failure.kind, message))
        result = self._result(request, started, attempts, size, None)
        self.completed += 1
        log.info(
            "node %s job %s: %d bytes to %s@%s:%s in %.3f s (%s)",
            node,
            job_id,
            size,
            request.user,
            request.host,
            request.port,
            result.seconds,
            engine.name,
        )
        self.context.samples.offer(
            TransferSample(
                src=node,
                dst_host=request.host,
                dst_port=request.port,
                size_bytes=size,
                seconds=attempt_seconds,  # the copy itself: no retries, no backoff
                engine=engine.name,
                ts=time.time(),
                job_id=job_id,
            )
        )
        return result

    @contextlib.asynccontextmanager
    async def _progress(
        self, request: TransferRequest, size: int
    ) -> AsyncIterator[Callable[[int], None] | None]:
        """The job's progress callback, between the start event on entering and the last
        event in flight settled on leaving.

        ``None`` with ``progress_interval = 0``, and for the jobs of this node's own
        providers (the network profiler's probes): those are measurements nobody follows,
        which progress events would only perturb and multiply.
        """
        if self.progress_interval <= 0 or self.context.granted(request.id, request.source):
            yield None
            return
        reporter = ProgressReporter(
            self.context.transport,
            self.context.node,
            request.id,
            total=size,
            interval=self.progress_interval,
        )
        reporter.start()
        try:
            yield reporter.update
        finally:
            await reporter.close()

    async def _attempt(self, engine: Engine, job: CopyJob, deadline: float | None) -> None:
        if deadline is None:
            await engine.copy(job)
            return
        remaining = deadline - time.time()
        try:
            await asyncio.wait_for(engine.copy(job), max(0.0, remaining))
        except TimeoutError:
            raise CopyFailure("timeout", "the job's deadline passed during the copy") from None

    def _retry_delay(
        self, failure: CopyFailure, attempts: int, deadline: float | None
    ) -> float | None:
        if not failure.transient or attempts >= self.max_attempts:
            return None
        delay = self.retry.delay(attempts)
        if deadline is not None and time.time() + delay >= deadline:
            return None
        return delay

    def _open_password(self, password: str | None) -> str | None:
        if password is None:
            return None
        if sealing.is_sealed(password):
            if self.seal_key is None:
                raise CopyFailure(
                    "invalid", "the password is sealed but this worker has no seal key"
                )
            try:
                return sealing.unseal(password, self.seal_key)
            except SealError as exc:
                raise CopyFailure("invalid", str(exc)) from None
        if self.require_sealed:
            raise CopyFailure("invalid", "this worker accepts sealed passwords only")
        return password

    def _check_source(self, request: TransferRequest) -> None:
        source = request.source
        if not self.allow_roots or self.context.granted(request.id, source):
            return  # granted: one of this node's own providers' files (its probes)
        real = os.path.realpath(source)
        for root in self.allow_roots:
            if os.path.commonpath([real, root]) == root:
                return
        raise CopyFailure("permission", f"source {source} is outside this worker's allowed roots")
