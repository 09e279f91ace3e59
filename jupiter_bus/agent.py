"""The node agent: runs a node's providers with one lifecycle.

- providers are found by name (:mod:`jupiter_bus.plugins`) and configured from a
  mapping (the ``[providers.<name>]`` tables of the agent's TOML file);
- :meth:`Agent.stop` (SIGTERM/SIGINT from the CLI) asks every provider to finish
  and return; one that has not finished within ``grace`` seconds is cancelled
  (transfer workers hand unfinished jobs back to the queue, never lose them);
- a provider that crashes is restarted with exponential backoff and jitter, logged,
  and its health says so; the agent itself keeps running;
- the agent answers ``snapshot.request`` events (:class:`SnapshotRequest`): it sends
  the latest body of every key its providers published through
  :meth:`NodeContext.publish_event` to the request's ``reply_to``, so a scheduler that
  starts late has the whole picture at once, not after the next publication.

Example::

    agent = Agent("node1", "amqp://guest:guest@127.0.0.1/", {"resources": {"interval": 5}})
    await agent.run()          # until agent.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Self

import orjson

from .backoff import Backoff
from .errors import MessageError
from .plugins import Health, NodeContext, Provider, load_provider
from .topology import DEFAULT_EXCHANGE, check_node
from .transport import Envelope, Subscription, Transport, connect

log = logging.getLogger(__name__)

SNAPSHOT_REQUEST_KEY: Final = "snapshot.request"
"""Routing key on ``jupiter.events`` of the requests that every agent answers."""
SNAPSHOT_REQUEST_TYPE: Final = "snapshot.request"
"""Body ``type`` of a snapshot request."""


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """A late joiner's request for the latest event of every key each node owns.

    Published on ``jupiter.events`` as ``snapshot.request`` with AMQP ``reply_to`` (the
    queue the answers go to) and, optionally, ``correlation_id`` (default: the body's
    ``id``); the body is ``{"v": 1, "type": "snapshot.request", "id", "ts"}`` and, from a
    reader of batches, ``"batch": true``. Every agent answers by sending each remembered
    body (``resource``, ``network.cost``...) unchanged to ``reply_to`` through the
    default exchange, with that correlation id; with ``batch``, its links travel as one
    binary ``network.batch`` instead of one message per link.

    Example::

        async with bus.subscribe(["resource.*", "network.*.*"]) as feed:
            await bus.publish("jupiter.events", SNAPSHOT_REQUEST_KEY, SnapshotRequest.body(),
                              reply_to=feed.name)
            async for envelope in feed:   # the answers, then live events
                ...
    """

    id: str
    ts: float
    reply_to: str
    correlation_id: str
    batch: bool = False
    """Whether the asker reads ``network.batch`` (links in one message per node)."""

    @staticmethod
    def body(
        request_id: str | None = None, ts: float | None = None, *, batch: bool = False
    ) -> bytes:
        """The JSON body of a new request (a fresh uuid4 ``id``; ``ts`` now)."""
        obj: dict[str, Any] = {
            "v": 1,
            "type": SNAPSHOT_REQUEST_TYPE,
            "id": request_id or str(uuid.uuid4()),
            "ts": time.time() if ts is None else ts,
        }
        if batch:
            obj["batch"] = True
        return orjson.dumps(obj)

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> Self:
        """Read a request loosely (unknown fields ignored); :class:`MessageError` if bad."""
        try:
            obj: Any = orjson.loads(envelope.body)
        except orjson.JSONDecodeError as exc:
            raise MessageError(f"body is not valid JSON: {exc}") from None
        if type(obj) is not dict:
            raise MessageError(f"body must be a JSON object, got {type(obj).__name__}")
        version, kind, request_id, ts = obj.get("v"), obj.get("type"), obj.get("id"), obj.get("ts")
        if type(version) is not int or version != 1:
            newer = type(version) is int and version > 1
            raise MessageError(
                f"version {version} is newer than this agent understands (1)"
                if newer
                else f"must be the integer 1, got {version!r:.40}",
                field="v",
            )
        if kind != SNAPSHOT_REQUEST_TYPE:
            shown = f"{kind!r:.70}"
            raise MessageError(f"expected {SNAPSHOT_REQUEST_TYPE!r}, got {shown}", field="type")
        if not isinstance(request_id, str) or not request_id:
            raise MessageError("must be a non-empty string", field="id")
        if (
            isinstance(ts, bool)
            or not isinstance(ts, int | float)
            or not (math.isfinite(ts) and ts >= 0)
        ):
            raise MessageError(f"must be epoch seconds >= 0, got {ts!r:.40}", field="ts")
        batch = obj.get("batch")  # null reads as absent
        if batch is not None and type(batch) is not bool:
            raise MessageError(f"must be true or false, got {batch!r:.40}", field="batch")
        if not envelope.reply_to:
            raise MessageError(
                "the AMQP property reply_to is missing: there is nowhere to send the snapshot",
                field="reply_to",
            )
        return cls(
            id=request_id,
            ts=float(ts),
            reply_to=envelope.reply_to,
            correlation_id=envelope.correlation_id or request_id,
            batch=batch is True,
        )


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Backoff between restarts of a crashed provider: ``initial * 2**n``, capped, jittered."""

    initial_seconds: float = 0.5
    max_seconds: float = 30.0
    healthy_after_seconds: float = 60.0
    """A provider that ran this long before crashing starts its backoff afresh."""
    jitter: float = 0.5
    """Each delay is shortened at random by up to this fraction (see :class:`Backoff`)."""

    @property
    def backoff(self) -> Backoff:
        """The delays, as the :class:`~jupiter_bus.backoff.Backoff` shared by all retries."""
        return Backoff(self.initial_seconds, self.max_seconds, self.jitter)

    def delay(self, failures: int) -> float:
        """Seconds to wait before the restart that follows ``failures`` crashes in a row."""
        return self.backoff.delay(failures)


@dataclass(slots=True)
class ProviderStatus:
    """What the agent knows of one provider: its health and its crash record."""

    name: str
    running: bool = False
    restarts: int = 0
    last_error: str | None = None
    health: Health | None = None


class Agent:
    """Runs the providers of one node against one bus.

    ``providers`` maps provider names to their options. ``host`` and ``ssh_port`` say
    where other nodes reach this one (published with resource events).
    """

    def __init__(
        self,
        node: str,
        broker: str | Transport,
        providers: Mapping[str, Mapping[str, Any]],
        *,
        host: str | None = None,
        ssh_port: int | None = None,
        grace: float = 30.0,
        restart: RestartPolicy | None = None,
    ) -> None:
        self.node = check_node(node)
        self._broker = broker
        self._config = {name: dict(options) for name, options in providers.items()}
        self._host = host
        self._ssh_port = ssh_port
        self.grace = grace
        self.restart = restart or RestartPolicy()
        self._stopping = asyncio.Event()
        self._started = asyncio.Event()
        self._providers: dict[str, Provider] = {}
        self._status: dict[str, ProviderStatus] = {}
        self.context: NodeContext | None = None

    def stop(self) -> None:
        """Ask the agent to stop: providers finish their work, then :meth:`run` returns."""
        self._stopping.set()

    async def started(self) -> None:
        """Wait until every provider has been started once."""
        await self._started.wait()

    def status(self) -> dict[str, ProviderStatus]:
        """Each provider's status, with its current health."""
        for name, provider in self._providers.items():
            self._status[name].health = provider.health()
        return dict(self._status)

    def provider(self, name: str) -> Provider:
        """The running instance of provider ``name``."""
        return self._providers[name]

    async def run(self) -> None:
        """Connect, start every provider, supervise them until :meth:`stop`, then clean up."""
        owns_transport = not isinstance(self._broker, Transport)
        transport = (
            await connect(self._broker, connection_name=f"jupiter-bus agent {self.node}")
            if isinstance(self._broker, str)
            else self._broker
        )
        snapshots: Subscription | None = None
        responder: asyncio.Task[None] | None = None
        try:
            context = self.context = NodeContext(
                node=self.node, transport=transport, host=self._host, ssh_port=self._ssh_port
            )
            for name, options in self._config.items():
                self._providers[name] = load_provider(name)(context, options)
                self._status[name] = ProviderStatus(name)
            # Bound before started() fires: a request sent after it is answered.
            snapshots = transport.subscribe([SNAPSHOT_REQUEST_KEY])
            await snapshots.start()
            responder = asyncio.create_task(
                self._answer_snapshots(transport, snapshots, context),
                name=f"agent {self.node} snapshots",
            )
            tasks = [
                asyncio.create_task(self._supervise(name, provider), name=f"provider {name}")
                for name, provider in self._providers.items()
            ]
            log.info("agent %s running providers: %s", self.node, ", ".join(self._providers))
            self._started.set()
            try:
                await self._stopping.wait()
            finally:
                self._stopping.set()
                await self._finish(tasks)
        finally:
            if responder is not None:
                responder.cancel()
                await asyncio.gather(responder, return_exceptions=True)
            if snapshots is not None:
                await snapshots.close()
            if owns_transport:
                await transport.close()
            log.info("agent %s stopped", self.node)

    async def _answer_snapshots(
        self, transport: Transport, feed: Subscription, context: NodeContext
    ) -> None:
        """Answer each ``snapshot.request``; dead-letter bad ones; never stop for one."""
        async for envelope in feed:
            try:
                try:
                    request = SnapshotRequest.from_envelope(envelope)
                except MessageError as exc:
                    await transport.dead_letter(envelope, str(exc))
                    continue
                await self._answer(transport, context, request)
            except Exception:
                log.exception("agent %s: snapshot request not answered", self.node)

    async def _answer(
        self, transport: Transport, context: NodeContext, request: SnapshotRequest
    ) -> None:
        bodies = context.snapshot_bodies(batch=request.batch)
        # Concurrent publishes: on AMQP their confirms are pipelined, not awaited in turn.
        outcomes = await asyncio.gather(
            *(
                transport.publish(
                    DEFAULT_EXCHANGE,
                    request.reply_to,
                    body,
                    correlation_id=request.correlation_id,
                    content_type=content_type,
                )
                for body, content_type in bodies
            ),
            return_exceptions=True,
        )
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            log.warning(
                "agent %s: snapshot %s: %d of %d answers not sent (%s)",
                self.node,
                request.id,
                len(failed),
                len(bodies),
                failed[0],
            )
        else:
            log.debug("agent %s: snapshot %s: sent %d events", self.node, request.id, len(bodies))

    async def _finish(self, tasks: list[asyncio.Task[None]]) -> None:
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.grace)
        for task in pending:
            log.warning(
                "agent %s: %s did not stop within %g s; cancelling",
                self.node,
                task.get_name(),
                self.grace,
            )
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _supervise(self, name: str, provider: Provider) -> None:
        status = self._status[name]
        failures = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            status.running = True
            try:
                await provider.run(self._stopping)
                if self._stopping.is_set():
                    return
                raise RuntimeError("returned before the agent asked it to stop")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                status.running = False
                status.restarts += 1
                status.last_error = f"{type(exc).__name__}: {exc}"
                if time.monotonic() - started > self.restart.healthy_after_seconds:
                    failures = 0
                failures += 1
                delay = self.restart.delay(failures)
                provider.set_health(
                    False, f"crashed ({status.last_error}); restarting in {delay:.1f} s"
                )
                log.error(
                    "agent %s: provider %s crashed (%s); restart %d in %.1f s",
                    self.node,
                    name,
                    status.last_error,
                    status.restarts,
                    delay,
                    exc_info=exc,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
            finally:
                status.running = False
