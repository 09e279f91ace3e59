"""The late-joiner snapshot protocol: asking, remembering and answering.

A scheduler that starts after the node agents would otherwise wait for their next
publication (resources every few seconds, link costs only when they change). Instead it
publishes a ``snapshot.request`` (:class:`SnapshotRequest`) on ``jupiter.events`` with its
own subscription queue as ``reply_to``, and every agent answers by sending the latest body
of each key it owns straight to that queue (default exchange), so the answers arrive in
the asker's event feed beside live events (DESIGN section 3; docs/messages.md).

Both sides live here, below the node agent and the facade, written on the public
transport API only:

- asker: :func:`ask` sends a request; :func:`superseded` says whether an answer is older
  than what the asker already holds (an answer must never undo a live update);
- answerer: :class:`LastValues` remembers a node's latest bodies and links and builds the
  answer; :class:`SnapshotResponder` serves requests from such a source.

Example::

    values = LastValues()
    values.remember("resource.node1", body)
    responder = SnapshotResponder(transport, values, name="agent node1")
    await responder.start()
    ...
    request_id = await ask(transport, feed.name, batch=True)   # in the scheduler
    await responder.close()
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, Self

import orjson

from .batch import BATCH_CONTENT_TYPE, LinkBatch
from .errors import MessageError
from .messages import LinkCost, decode, encode
from .topology import DEFAULT_EXCHANGE, EVENTS_EXCHANGE, network_key
from .transport import JSON_CONTENT_TYPE, Envelope, Subscription, Transport

__all__ = [
    "SNAPSHOT_REQUEST_KEY",
    "SNAPSHOT_REQUEST_TYPE",
    "LastValues",
    "SnapshotRequest",
    "SnapshotResponder",
    "SnapshotSource",
    "ask",
    "superseded",
]

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


# -- the asker's side -----------------------------------------------------------------------


async def ask(transport: Transport, reply_to: str, *, batch: bool = False) -> str:
    """Ask every node agent for its latest events, answered to ``reply_to``; return the id.

    The request id is also its correlation and message id. With ``batch``, agents send
    their links as one ``network.batch`` each.

    Example::

        async with bus.subscribe(["resource.*", "network-batch.*"]) as feed:
            request_id = await ask(bus, feed.name, batch=True)
    """
    request_id = str(uuid.uuid4())
    await transport.publish(
        EVENTS_EXCHANGE,
        SNAPSHOT_REQUEST_KEY,
        SnapshotRequest.body(request_id, batch=batch),
        reply_to=reply_to,
        correlation_id=request_id,
        message_id=request_id,
    )
    return request_id


def superseded(held_ts: float | None, answer_ts: float) -> bool:
    """Whether an answer stamped ``answer_ts`` is no newer than the value held (stamped
    ``held_ts``, ``None``: nothing held): such an answer is skipped, since a snapshot
    answer must not undo a live update. Both are producer's ``ts``.

    Example::

        >>> superseded(None, 10.0), superseded(12.0, 10.0), superseded(8.0, 10.0)
        (False, True, False)
    """
    return held_ts is not None and held_ts >= answer_ts


# -- the answerer's side --------------------------------------------------------------------


class SnapshotSource(Protocol):
    """What a :class:`SnapshotResponder` answers from (a :class:`LastValues`, a node's
    ``NodeContext``): ``(body, content_type)`` of every latest value."""

    def snapshot_bodies(self, *, batch: bool) -> list[tuple[bytes, str]]:
        """Everything an answer carries; with ``batch``, links as one ``network.batch``."""
        ...


class LastValues:
    """The latest body of each routing key a node published: what its snapshot answers.

    Link costs (``network.*`` keys) are also kept decoded, so an answer to a reader of
    batches carries all of them as one binary ``network.batch`` (built once, kept until a
    link changes); links remembered as a batch are encoded as JSON only when a per-link
    answer needs them.

    Example::

        values = LastValues()
        values.remember("resource.node1", encode(sample))
        batch_body = values.remember_links([cost_to_n2, cost_to_n3])
        values.snapshot_bodies(batch=True)   # [(batch_body, BATCH_CONTENT_TYPE), (b'{...', ...)]
    """

    __slots__ = ("_batch", "_last", "_links")

    def __init__(self) -> None:
        self._last: dict[str, bytes] = {}
        self._links: dict[str, LinkCost] = {}
        self._batch: bytes | None = None

    def remember(self, routing_key: str, body: bytes) -> None:
        """Keep ``body`` as ``routing_key``'s latest value."""
        self._last[routing_key] = body
        if routing_key.startswith("network."):
            # Kept decoded too, so a snapshot can answer with one batch of all links.
            self._batch = None
            try:
                self._links[routing_key] = decode(body, LinkCost)
            except MessageError:
                self._links.pop(routing_key, None)  # answered as the body it is

    def remember_links(self, costs: Sequence[LinkCost]) -> bytes:
        """Keep each of ``costs`` as its link's latest; return them as one binary batch."""
        keys = set()
        for cost in costs:
            key = network_key(cost.src, cost.dst)
            keys.add(key)
            self._links[key] = cost
            self._last.pop(key, None)  # encoded when a per-link answer needs it
        body = LinkBatch.from_costs(costs).to_binary()
        # When it holds every link the node has, it is also the next snapshot answer.
        self._batch = body if len(keys) == len(self._links) == len(costs) else None
        return body

    def forget(self, routing_key: str) -> bool:
        """Stop offering ``routing_key``; whether anything was held for it."""
        had_link = self._links.pop(routing_key, None) is not None
        if had_link:
            self._batch = None
        return (self._last.pop(routing_key, None) is not None) or had_link

    def get(self, routing_key: str) -> bytes | None:
        """The latest body of ``routing_key`` as remembered (``None``: none, or a link
        remembered from a batch only: see :meth:`links`)."""
        return self._last.get(routing_key)

    def links(self) -> dict[str, LinkCost]:
        """The latest cost of each link, by routing key (a copy; nothing encoded)."""
        return dict(self._links)

    def bodies(self) -> dict[str, bytes]:
        """The latest body of each key (a copy; links as JSON)."""
        for key, cost in self._links.items():
            if key not in self._last:
                self._last[key] = encode(cost)
        return dict(self._last)

    def snapshot_bodies(self, *, batch: bool) -> list[tuple[bytes, str]]:
        """``(body, content_type)`` of everything a snapshot answer carries.

        With ``batch``, the links travel as one binary ``network.batch`` (cached until a
        link changes) and every other key as its JSON body; without, one body per key.
        """
        if not batch or not self._links:
            return [(body, JSON_CONTENT_TYPE) for body in self.bodies().values()]
        if self._batch is None:
            self._batch = LinkBatch.from_costs(list(self._links.values())).to_binary()
        bodies = [(self._batch, BATCH_CONTENT_TYPE)]
        links = self._links
        bodies.extend(
            (body, JSON_CONTENT_TYPE) for key, body in self._last.items() if key not in links
        )
        return bodies


class SnapshotResponder:
    """Answers every ``snapshot.request`` on a transport from a :class:`SnapshotSource`.

    :meth:`start` binds the request subscription (a request published after it returns
    is answered) and starts the one task that serves it; :meth:`close` cancels and awaits
    that task and closes the subscription. A bad request is dead-lettered with its
    reason; a failed answer is logged; either way the responder keeps answering.
    ``name`` (e.g. ``"agent node1"``) starts its log lines.

    Example::

        responder = SnapshotResponder(transport, context, name=f"agent {node}")
        await responder.start()
        try:
            ...
        finally:
            await responder.close()
    """

    def __init__(self, transport: Transport, source: SnapshotSource, *, name: str) -> None:
        self._transport = transport
        self._source = source
        self._name = name
        self._feed: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe to the requests and start answering them."""
        feed = self._feed = self._transport.subscribe([SNAPSHOT_REQUEST_KEY])
        await feed.start()
        self._task = asyncio.create_task(self._serve(feed), name=f"{self._name} snapshots")

    async def close(self) -> None:
        """Stop answering: cancel and await the task, close the subscription. Idempotent."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._feed is not None:
            await self._feed.close()

    async def _serve(self, feed: Subscription) -> None:
        """Answer each request; dead-letter bad ones; never stop for one."""
        transport = self._transport
        async for envelope in feed:
            try:
                try:
                    request = SnapshotRequest.from_envelope(envelope)
                except MessageError as exc:
                    await transport.dead_letter(envelope, str(exc))
                    continue
                await self.answer(request)
            except Exception:
                log.exception("%s: snapshot request not answered", self._name)

    async def answer(self, request: SnapshotRequest) -> None:
        """Send the source's latest bodies to the request's ``reply_to``."""
        bodies = self._source.snapshot_bodies(batch=request.batch)
        # Concurrent publishes: on AMQP their confirms are pipelined, not awaited in turn.
        outcomes = await asyncio.gather(
            *(
                self._transport.publish(
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
                "%s: snapshot %s: %d of %d answers not sent (%s)",
                self._name,
                request.id,
                len(failed),
                len(bodies),
                failed[0],
            )
        else:
            log.debug("%s: snapshot %s: sent %d events", self._name, request.id, len(bodies))
