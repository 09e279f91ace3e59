"""Network profiler: DRUPE's quadratic link costs, measured honestly and cheaply.

For each peer it keeps a bounded window of samples (:class:`jupiter_bus.costmodel.LinkModel`)
and publishes ``network.<node>.<peer>`` (a :class:`~jupiter_bus.messages.LinkCost`) when
the fit changes meaningfully or its refresh interval has passed.

Samples come from two places:

- **probes**: transfer requests this provider sends to its own node's transfer worker
  (so they go through the very engine and connection pool that real transfers use,
  and the model predicts what ``data_transfer`` will cost), with payloads of at least
  three sizes spread on a log scale; a failed probe is never a sample: it is logged and
  counted as a link error, and the peer is probed again only after a backoff;
- **passive samples**: every real transfer the worker of the same agent completes to a
  peer (beyond DRUPE): links that real traffic keeps fresh are not probed at all.

Rounds are jittered, capped (``max_probes_per_round``) and held to a byte budget per
link per hour, so N nodes never fire N^2 probes at once. The first waits until the
node's transfer worker consumes its work queue (health: waiting): the agent starts its
providers side by side, and a probe sent before would fail for no fault of the link.

Peers come from the configuration (``peers``) and, with ``default_user`` set, from
resource events of other nodes that carry ``host`` (and ``ssh_port``); a discovered peer
not heard from for ``peer_ttl_seconds`` stops being probed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias, get_args

from jupiter_bus.backoff import Backoff
from jupiter_bus.costmodel import Fit, LinkModel, fit, kbit
from jupiter_bus.errors import ConfigError, JupiterBusError, TransportError
from jupiter_bus.messages import (
    LinkCost,
    ProfileRequest,
    ProfileResult,
    ResourceSample,
    TransferEngine,
    TransferRequest,
    TransferResult,
    decode,
    encode,
)
from jupiter_bus.options import HOST, NODE_NAME, USER_NAME, Options, option
from jupiter_bus.plugins import NodeContext, Provider, TransferSample, wait_or_stop
from jupiter_bus.receive import decoded_events
from jupiter_bus.topology import TRANSFERS_EXCHANGE, network_key, profile_key, work_queue

from .transfer import default_state_dir

__all__ = [
    "PUBLISH_MODES",
    "WARM_UP_BYTES",
    "NetworkOptions",
    "NetworkProvider",
    "Peer",
    "PeerOptions",
    "PublishMode",
]

log = logging.getLogger(__name__)

WARM_UP_BYTES = 1000
"""Size of the unrecorded probe that opens a link's SSH connection before a round."""
WORKER_WAIT_SECONDS = 0.5
"""How often a profiler whose node's transfer worker is not consuming yet looks again
before its first round (the agent starts its providers side by side)."""


PublishMode: TypeAlias = Literal["links", "batch", "both"]
PUBLISH_MODES: Final = get_args(PublishMode)
"""``publish`` option: one ``network.cost`` per changed link (``links``, what plain
subscribers of ``network.*.*`` read), one ``network.batch`` per round on
``network-batch.<node>`` (``batch``, what the facade reads at scale), or both."""


@dataclass(slots=True)
class Peer:
    """A node this one measures its link to, and what is known of that link."""

    node: str
    host: str
    port: int
    user: str
    password: str | None = field(default=None, repr=False)
    configured: bool = False
    last_seen: float = field(default_factory=time.monotonic)
    model: LinkModel = field(default_factory=LinkModel)
    published: Fit | None = None
    published_at: float = 0.0
    probe_bytes: deque[tuple[float, int]] = field(default_factory=deque)
    failures: int = 0
    next_probe_at: float = 0.0
    last_error: str | None = None

    def bytes_last_hour(self, now: float) -> int:
        """Probe bytes sent on this link in the last hour."""
        while self.probe_bytes and now - self.probe_bytes[0][0] > 3600:
            self.probe_bytes.popleft()
        return sum(size for _, size in self.probe_bytes)


def _no_nul(text: str) -> bool:
    return "\x00" not in text


@dataclass(frozen=True, slots=True)
class PeerOptions(Options):
    """A peer the profiler measures its link to (an entry of ``peers``)."""

    node: str = option(doc="the peer's node name", **NODE_NAME)
    host: str = option(doc="where the peer's SSH server is reached", **HOST)
    port: int = option(22, doc="the peer's SSH port", ge=1, le=65535)
    user: str | None = option(None, doc="login on the peer (none: default_user)", **USER_NAME)
    password: str | None = option(
        None,
        doc="password of that login (none: this node's keys); prefer keys",
        secret=True,
        min_length=1,
        max_length=4096,
        check=_no_nul,
        expect="a string of 1 to 4096 characters, no NUL",
    )


@dataclass(frozen=True, slots=True)
class NetworkOptions(Options):
    """Options of the network profiler (``[providers.network]``)."""

    peers: tuple[PeerOptions, ...] = option((), doc="peers probed whether heard from or not")
    default_user: str | None = option(
        None,
        doc="login for peers learned from resource events (none: learn no peers)",
        **USER_NAME,
    )
    probe_sizes_kb: tuple[int, ...] = option(
        (16, 256, 4096),
        doc="probe payloads in KB (at least 3 distinct sizes)",
        gt=0,
        min_items=3,
    )
    probe_dir: str = option(
        "jupiter-probes",
        doc="folder on the peer that probes are written to (relative: in the peer user's home)",
        min_length=1,
    )
    interval: float = option(60.0, doc="seconds between probing rounds", unit="seconds", gt=0)
    jitter: float = option(
        0.2, doc="rounds are spread by up to this fraction of interval", ge=0, le=1
    )
    max_probes_per_round: int = option(6, doc="probes in one round, all links together", ge=1)
    budget_bytes_per_link_hour: int = option(
        100_000_000, doc="probe bytes one link may carry per hour", ge=1
    )
    fresh_seconds: float = option(
        600.0, doc="a probe size with a sample this recent is not probed again", ge=0
    )
    window: int = option(64, doc="samples kept per link for its fit", ge=3)
    max_sample_age_seconds: float = option(
        6 * 3600.0, doc="samples older than this leave the fit", gt=0
    )
    refresh_seconds: float = option(
        300.0, doc="an unchanged fit is published again after this long", ge=0
    )
    change_tolerance: float = option(
        0.05, doc="a fit that moved by more than this fraction is published at once", ge=0
    )
    peer_ttl_seconds: float = option(
        180.0, doc="a learned peer not heard from this long is no longer probed", gt=0
    )
    probe_timeout: float = option(
        60.0, doc="seconds one probe may take before it counts as failed", unit="seconds", gt=0
    )
    engine: TransferEngine | None = option(
        None, doc="engine of the probes (none: the worker's default engine)"
    )
    state_dir: Path | None = option(
        None, doc="folder of the probe files (none: $XDG_STATE_HOME/jupiter-bus/<node>)"
    )
    publish: PublishMode = option(
        "links", doc="links: one network.cost per link; batch: one network.batch per round; both"
    )

    def check_together(self) -> None:
        """At least 3 distinct probe sizes; a login for every configured peer."""
        if len(set(self.probe_sizes_kb)) < 3:
            raise ConfigError(
                "probe_sizes_kb: expected at least 3 distinct sizes, got "
                f"{sorted(set(self.probe_sizes_kb))}"
            )
        if self.default_user is None:
            for i, peer in enumerate(self.peers):
                if peer.user is None:
                    raise ConfigError(
                        f"peers[{i}].user: expected a user name (or set default_user), got none"
                    )


class NetworkProvider(Provider):
    """Measures and publishes the cost of the links from this node (provider ``network``).

    Example (agent configuration)::

        [providers.network]
        probe_sizes_kb = [16, 256, 4096]
        interval = 60
        peers = [{node = "node2", host = "10.0.0.12", user = "jupiter"}]
    """

    name = "network"
    Options = NetworkOptions
    settings: NetworkOptions

    def __init__(
        self, context: NodeContext, options: Mapping[str, Any] | NetworkOptions | None = None
    ) -> None:
        super().__init__(context, options)
        o = self.settings
        self.probe_sizes = [kb * 1000 for kb in sorted(set(o.probe_sizes_kb))]
        self.probe_dir = o.probe_dir
        self.interval = o.interval
        self.jitter = o.jitter
        self.max_probes_per_round = o.max_probes_per_round
        self.budget = o.budget_bytes_per_link_hour
        self.fresh_seconds = o.fresh_seconds
        self.window = o.window
        self.max_sample_age = o.max_sample_age_seconds
        self.refresh_seconds = o.refresh_seconds
        self.change_tolerance = o.change_tolerance
        self.peer_ttl = o.peer_ttl_seconds
        self.probe_timeout = o.probe_timeout
        self.engine: str | None = o.engine
        self.publish_mode: str = o.publish
        self.default_user: str | None = o.default_user
        self.local_dir = (o.state_dir or default_state_dir(context.node)) / "probes"
        # A failed link waits 2, 4, ... 64 rounds (at most an hour) before its next probe.
        self.failure_backoff = Backoff(
            initial_seconds=2 * self.interval,
            max_seconds=min(64 * self.interval, 3600.0),
            jitter=0.0,
        )
        self.peers: dict[str, Peer] = {}
        for entry in o.peers:
            peer = self._peer(entry)
            peer.configured = True
            self.peers[peer.node] = peer
        self._probe_ids: set[str] = set()
        self._probing = asyncio.Lock()
        self._worker_seen = False
        self.probes_sent = 0
        self.probe_failures = 0
        self.probes_ok = 0  # every probe answered ok, warm-ups too (for metrics)
        self.probe_bytes_sent = 0  # every probe's payload, warm-ups too (for metrics)
        self.probes_deferred = 0

    def _peer(self, entry: PeerOptions) -> Peer:
        return Peer(
            node=entry.node,
            host=entry.host,
            port=entry.port,
            user=entry.user or self.default_user or "",
            password=entry.password,
            model=LinkModel(window=self.window, max_age_seconds=self.max_sample_age),
        )

    # -- samples ------------------------------------------------------------------

    def _on_transfer(self, sample: TransferSample) -> None:
        """A real transfer completed by this node's worker: a passive sample."""
        if sample.job_id in self._probe_ids:
            return  # our own probe: recorded from its reply
        for peer in self.peers.values():
            if peer.host == sample.dst_host and peer.port == sample.dst_port:
                peer.model.add(
                    kbit(sample.size_bytes), sample.seconds * 1000, ts=sample.ts, passive=True
                )

    async def _watch_resources(self) -> None:
        """Learn peers from resource events (host, ssh_port) of other nodes."""
        transport = self.context.transport
        refused: set[str] = set()
        async with transport.subscribe(["resource.*"]) as feed:
            async for _, message in decoded_events(transport, feed, ResourceSample):
                assert isinstance(message, ResourceSample)
                if message.node == self.context.node or message.host is None:
                    continue
                peer = self.peers.get(message.node)
                if peer is not None:
                    peer.last_seen = time.monotonic()
                elif self.default_user:
                    try:
                        entry = PeerOptions(
                            node=message.node,
                            host=message.host,
                            port=message.ssh_port or 22,
                            user=self.default_user,
                        )
                    except ConfigError as exc:
                        if message.node not in refused:  # said once, not every event
                            refused.add(message.node)
                            log.warning(
                                "node %s: not probing %s: %s", self.context.node, message.node, exc
                            )
                        continue
                    self.peers[message.node] = self._peer(entry)
                    log.info(
                        "node %s: probing new peer %s at %s",
                        self.context.node,
                        message.node,
                        message.host,
                    )

    # -- probing ------------------------------------------------------------------

    def _probe_file(self, size: int) -> Path:
        path = self.local_dir / f"probe-{size}.bin"
        if not path.exists() or path.stat().st_size != size:
            self.local_dir.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(size))
        return path

    def _sizes_needed(self, peer: Peer, now_wall: float) -> list[int]:
        """Probe sizes without a recent sample of about that size on this link."""
        recent = peer.model.sizes_seen_since(now_wall - self.fresh_seconds)
        needed = []
        for size in self.probe_sizes:
            target = kbit(size)
            if not any(target / 2 <= seen <= target * 2 for seen in recent):
                needed.append(size)
        # passive traffic alone is enough when it spans the range on its own
        if needed and len(recent) >= 3 and max(recent) >= 100 * max(min(recent), 1e-9):
            return []
        return needed

    def plan_round(self) -> list[tuple[Peer, int]]:
        """The probes of the next round: stalest links first, capped and within budget."""
        now, wall = time.monotonic(), time.time()
        plan: list[tuple[Peer, int]] = []
        live = [
            p
            for p in self.peers.values()
            if (p.configured or now - p.last_seen <= self.peer_ttl) and now >= p.next_probe_at
        ]
        live.sort(key=lambda p: p.model.newest_ts() or 0.0)
        for peer in live:
            spent = peer.bytes_last_hour(now)
            for size in self._sizes_needed(peer, wall):
                if len(plan) >= self.max_probes_per_round:
                    return plan
                if spent + size > self.budget:
                    break
                spent += size
                plan.append((peer, size))
        return plan

    async def probe(self, peer: Peer, size: int, *, record: bool = True) -> float | None:
        """Send one probe through this node's transfer worker; record it if it succeeded.

        Returns the probe's time in ms when it succeeded in one attempt (a clean
        sample), else None. ``record=False`` sends a warm-up: it opens the worker's
        pooled SSH connection, whose setup (about 100 ms) would otherwise be counted
        in the first probe.
        """
        job = str(uuid.uuid4())
        self._probe_ids.add(job)
        request = TransferRequest(
            id=job,
            host=peer.host,
            port=peer.port,
            user=peer.user,
            password=peer.password,
            source=str(self._probe_file(size)),
            destination=f"{self.probe_dir}/probe-{self.context.node}-{size}.bin",
            engine=self.engine,  # type: ignore[arg-type]
            idempotency_key=job,
            create_dirs=True,
            deadline=time.time() + self.probe_timeout,
        )
        peer.probe_bytes.append((time.monotonic(), size))
        self.probe_bytes_sent += size
        self.probes_sent += record
        try:
            # The worker may always send this node's own probe files, whatever its
            # allow_roots, and only for this job.
            with self.context.granting(job, request.source):
                reply = await self.context.transport.request(
                    TRANSFERS_EXCHANGE,
                    self.context.node,
                    encode(request),
                    timeout=self.probe_timeout,
                )
            result = decode(reply.body, TransferResult)
        except JupiterBusError as exc:
            self._failed(peer, f"probe not answered: {exc}")
            return None
        finally:
            self._probe_ids.discard(job)
        if not result.ok or result.error is not None:
            error = result.error
            self._failed(peer, f"{error.kind}: {error.message}" if error else "failed")
            return None
        peer.failures = 0
        self.probes_ok += 1
        peer.last_error = None
        if result.attempts != 1:
            return None  # a retried copy's time is not the link's
        # the worker's time for a single-attempt probe is the copy itself
        ms = result.seconds * 1000
        if record:
            peer.model.add(kbit(result.bytes), ms, ts=time.time())
        return ms

    def _link_busy(self, peer: Peer) -> bool:
        """Whether this node's worker is sending real traffic to ``peer`` right now.

        A probe then would share the link with it and measure the contention; the
        real transfer gives a passive sample instead, and the probe waits a round.
        """
        if self.context.samples.busy(peer.host, peer.port, ignore=self._probe_ids):
            self.probes_deferred += 1
            log.debug("node %s: link to %s busy; probe deferred", self.context.node, peer.node)
            return True
        return False

    def _failed(self, peer: Peer, reason: str) -> None:
        peer.failures += 1
        peer.last_error = reason
        self.probe_failures += 1
        backoff = self.failure_backoff.delay(peer.failures)
        peer.next_probe_at = time.monotonic() + backoff
        log.warning(
            "node %s: link to %s: probe failed (%s); not probing it for %.0f s",
            self.context.node,
            peer.node,
            reason,
            backoff,
        )

    # -- publishing ---------------------------------------------------------------

    async def publish_changes(self) -> int:
        """Publish each link whose fit changed meaningfully or is due a refresh.

        Through the node's last-value record (:meth:`NodeContext.publish_event`, or
        :meth:`NodeContext.publish_links` for one ``network.batch`` of the round's
        changes when ``publish`` is ``batch``/``both``): the agent hands the latest cost
        of every link to schedulers that start between two publications.
        """
        now, wall = time.monotonic(), time.time()
        changed: list[LinkCost] = []
        for peer in list(self.peers.values()):
            peer.model.expire(wall)
            fitted = peer.model.fit()
            if fitted is None:
                continue
            due = now - peer.published_at >= self.refresh_seconds
            if not (due or fitted.differs_from(peer.published, tolerance=self.change_tolerance)):
                continue
            message = LinkCost(
                src=self.context.node,
                dst=peer.node,
                a=fitted.a,
                b=fitted.b,
                c=fitted.c,
                samples=fitted.samples,
                r2=min(1.0, max(-1e6, fitted.r2)),
                min_kbit=fitted.min_kbit,
                max_kbit=fitted.max_kbit,
                model=fitted.model,
            )
            if self.publish_mode != "batch":
                await self.context.publish_event(
                    network_key(self.context.node, peer.node), encode(message)
                )
            changed.append(message)
            peer.published, peer.published_at = fitted, now
        if changed and self.publish_mode != "links":
            await self.context.publish_links(changed)
        return len(changed)

    def _log_round(self, sent: Mapping[str, int]) -> None:
        """One INFO line per link probed this round: its fit (or why none) and its bytes."""
        for node, size in sent.items():
            peer = self.peers.get(node)
            if peer is None:
                continue
            fit = peer.published
            if peer.last_error:
                result = f"failed ({peer.last_error})"
            elif fit is None:
                result = "no fit yet"
            else:
                result = (
                    f"cost_ms = {fit.a:.3g} x^2 + {fit.b:.3g} x + {fit.c:.3g} "
                    f"(r2 {fit.r2:.3f}, {fit.samples} samples, "
                    f"{fit.min_kbit:g}-{fit.max_kbit:g} Kbit)"
                )
            log.info(
                "node %s: link to %s: %s; %d probe bytes this round, %d in the last hour",
                self.context.node,
                node,
                result,
                size,
                peer.bytes_last_hour(time.monotonic()),
            )

    def budget_report(self) -> dict[str, int]:
        """Probe bytes per link in the last hour."""
        now = time.monotonic()
        return {peer.node: peer.bytes_last_hour(now) for peer in self.peers.values()}

    async def run(self, stopping: asyncio.Event) -> None:
        """Probe, fit and publish in jittered rounds until ``stopping``."""
        unlisten = self.context.samples.listen(self._on_transfer)
        watcher = asyncio.create_task(self._watch_resources()) if self.default_user else None
        profiles = asyncio.create_task(self._serve_profiles(), name="profile requests")
        try:
            wait = random.uniform(0, self.jitter * self.interval)  # spread the first round
            while not await wait_or_stop(stopping, wait):
                if not await self._worker_ready():
                    wait = min(self.interval, WORKER_WAIT_SECONDS)
                    continue
                sent: dict[str, int] = {}
                async with self._probing:  # one round or on-demand profile at a time
                    await self._round(stopping, sent)
                await self.publish_changes()
                self._log_round(sent)
                errors = {p.node: p.last_error for p in self.peers.values() if p.last_error}
                self.set_health(
                    not errors,
                    f"{len(self.peers)} peers, {self.probes_sent} probes, "
                    f"errors: {errors or 'none'}",
                )
                wait = self.interval * random.uniform(1 - self.jitter, 1 + self.jitter)
        finally:
            unlisten()
            for task in (watcher, profiles):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)

    async def _worker_ready(self) -> bool:
        """Whether this node's transfer worker has been seen consuming its work queue.

        Probes go through it: sent before it consumes (the agent starts its providers
        side by side), they would be unroutable and count as link failures. Checked
        until it is first seen; a worker gone later makes probes fail as they should.
        """
        if self._worker_seen:
            return True
        queue = work_queue(self.context.node)
        try:
            self._worker_seen = (await self.context.transport.queue_stats(queue)).consumers > 0
        except TransportError:  # not declared yet
            self._worker_seen = False
        if not self._worker_seen:
            self.set_health(False, f"waiting for this node's transfer worker on {queue}")
        return self._worker_seen

    async def _round(self, stopping: asyncio.Event, sent: dict[str, int]) -> None:
        """The probes of one round (``sent``: probe bytes per peer, filled in)."""
        busy: set[str] = set()
        for peer, size in self.plan_round():
            if stopping.is_set():
                break
            if peer.node in busy or self._link_busy(peer):
                busy.add(peer.node)  # real traffic on it: measured passively
                continue
            if peer.node not in sent:
                sent[peer.node] = WARM_UP_BYTES
                await self.probe(peer, WARM_UP_BYTES, record=False)
            if time.monotonic() >= peer.next_probe_at:  # not failed this round
                sent[peer.node] += size
                await self.probe(peer, size)

    # -- on-demand profiling ------------------------------------------------------

    async def _serve_profiles(self) -> None:
        """Answer ``profile.request.<node>`` requests (bad ones are dead-lettered)."""
        transport = self.context.transport
        async with transport.subscribe([profile_key(self.context.node)]) as feed:
            async for envelope, message in decoded_events(transport, feed, ProfileRequest):
                assert isinstance(message, ProfileRequest)
                result = await self.profile(message)
                try:
                    await transport.reply(envelope, encode(result))
                except JupiterBusError as exc:
                    log.warning("node %s: profile answer lost: %s", self.context.node, exc)

    async def profile(self, request: ProfileRequest) -> ProfileResult:
        """Measure the link to ``request.dst`` now: a warm-up, then each size ``repeats`` times.

        The probes also feed the link's running fit (published as usual). Never raises.

        Example::

            result = await profiler.profile(ProfileRequest(src="node1", dst="node2"))
            result.points   # ((128.0, 14.1), (2048.0, 55.0), (32768.0, 668.0))
        """

        def refused(reason: str) -> ProfileResult:
            return ProfileResult(
                request_id=request.id,
                src=request.src,
                dst=request.dst,
                ok=False,
                reason=reason,
            )

        peer = self.peers.get(request.dst)
        if request.src != self.context.node:
            return refused(f"this is {self.context.node}'s profiler, not {request.src}'s")
        if peer is None:
            known = ", ".join(sorted(self.peers)) or "none yet"
            return refused(
                f"{self.context.node}'s profiler has no peer {request.dst} (known: {known})"
            )
        sizes = [kb * 1000 for kb in request.sizes_kb] if request.sizes_kb else self.probe_sizes
        points: list[tuple[float, float]] = []
        failed = 0
        async with self._probing:
            await self.probe(peer, WARM_UP_BYTES, record=False)
            for _ in range(request.repeats):
                for size in sizes:
                    ms = await self.probe(peer, size)
                    if ms is None:
                        failed += 1
                    else:
                        points.append((kbit(size), ms))
        await self.publish_changes()
        log.info(
            "node %s: profiled link to %s on request: %d points, %d failed",
            self.context.node,
            peer.node,
            len(points),
            failed,
        )
        reason = None
        if failed:
            reason = f"{failed} of {failed + len(points)} probes failed: {peer.last_error}"
        if not points:
            return refused(reason or "no probe succeeded")
        fitted = fit([x for x, _ in points], [y for _, y in points])
        return ProfileResult(
            request_id=request.id,
            src=request.src,
            dst=request.dst,
            ok=True,
            points=tuple(points),
            a=None if fitted is None else fitted.a,
            b=None if fitted is None else fitted.b,
            c=None if fitted is None else fitted.c,
            r2=None if fitted is None else min(1.0, max(-1e6, fitted.r2)),
            model=None if fitted is None else fitted.model,
            reason=reason,
        )
