"""Our profiler at its default settings, replayed for a day on a virtual clock."""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from unittest import mock

from harness.errors import BenchError
from jupiter_providers import network as network_module
from jupiter_providers.network import WARM_UP_BYTES, NetworkProvider

from jupiter_bus.messages import TransferRequest, TransferResult, decode, encode
from jupiter_bus.plugins import NodeContext
from jupiter_bus.transport import Transport
from profiler_parts.settings import SIM_HOURS


class VirtualClock:
    """Stands in for the ``time`` module of the profiler: seconds since the replay began."""

    def __init__(self) -> None:
        self.now = 0.0
        self.epoch = time.time()

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.epoch + self.now


@dataclass(frozen=True, slots=True)
class Reply:
    body: bytes


def file_size(path: str) -> int:
    return os.stat(path).st_size


class InstantWorker:
    """Answers the profiler's probe requests at once, moving the virtual clock by their cost."""

    def __init__(self, clock: VirtualClock, cost_ms: Callable[[int], float]) -> None:
        self.clock = clock
        self.cost_ms = cost_ms
        # durations only place the samples' timestamps; a fit may dip below 0 under its range
        self.floor_ms = 1.0

    async def request(self, exchange: str, routing_key: str, body: bytes, **_: Any) -> Reply:
        request = decode(body, TransferRequest)
        size = file_size(request.source)
        seconds = max(self.cost_ms(size), self.floor_ms) / 1000
        self.clock.now += seconds
        result = TransferResult(
            request_id=request.id,
            node=routing_key,
            ok=True,
            bytes=size,
            seconds=seconds,
            attempts=1,
        )
        return Reply(encode(result))


@dataclass(frozen=True, slots=True)
class Schedule:
    """Probe bytes of our profiler at its default settings, hour by hour of a replay."""

    hours: list[int]
    """Probe bytes sent in each hour of the replay (warm-ups included)."""
    round_bytes: Counter[int]
    """How many probing rounds sent how many bytes."""
    last_hour_report: int
    """``budget_report()`` at the end: the provider's own count of the last hour."""


def profiler_for(state: Path, transport: object) -> NetworkProvider:
    """A NetworkProvider with its default options and one peer, not started."""
    context = NodeContext(node="sim-a", transport=cast(Transport, transport))
    peer = {"node": "sim-b", "host": "10.0.0.2", "user": "sim"}
    return NetworkProvider(context, {"state_dir": str(state), "peers": [peer]})


async def one_round(provider: NetworkProvider, monotonic: Callable[[], float]) -> None:
    """The round body of ``NetworkProvider.run``: plan, one warm-up per peer, the probes."""
    warmed: set[str] = set()
    for peer, size in provider.plan_round():
        if peer.node not in warmed:
            warmed.add(peer.node)
            await provider.probe(peer, WARM_UP_BYTES, record=False)
        if monotonic() >= peer.next_probe_at:
            await provider.probe(peer, size)


async def replay_defaults(state: Path, cost_ms: Callable[[int], float], seed: int) -> Schedule:
    """Run our planner at its default settings for :data:`SIM_HOURS` on a virtual clock."""
    clock = VirtualClock()
    rng = random.Random(seed)
    probes: list[tuple[float, int]] = []
    round_bytes: Counter[int] = Counter()
    # The profiler reads time.monotonic()/time.time() through its module's `time`:
    # swapping it makes an hour of its schedule pass in milliseconds.
    with mock.patch.object(network_module, "time", clock):
        provider = profiler_for(state, InstantWorker(clock, cost_ms))
        peer = next(iter(provider.peers.values()))
        clock.now = rng.uniform(0, provider.jitter * provider.interval)
        while clock.now < SIM_HOURS * 3600:
            start = clock.now
            await one_round(provider, clock.monotonic)
            new = [(t, size) for t, size in peer.probe_bytes if t >= start]
            if new:
                probes.extend(new)
                round_bytes[sum(size for _, size in new)] += 1
            jitter = provider.jitter
            clock.now += provider.interval * rng.uniform(1 - jitter, 1 + jitter)
        last_hour = provider.budget_report()[peer.node]
        if provider.probe_failures:
            raise BenchError(f"the replay of our schedule failed: {peer.last_error}")
    hours = [0] * SIM_HOURS
    for t, size in probes:
        if t < SIM_HOURS * 3600:
            hours[int(t // 3600)] += size
    return Schedule(hours, round_bytes, last_hour)
