"""Phase 1: our profiler's time-compressed real run, until its fit holds enough samples."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import BenchError
from jupiter_providers.network import WARM_UP_BYTES, NetworkProvider

from jupiter_bus.messages import LinkCost, decode
from jupiter_bus.topology import network_key
from jupiter_bus.transport import Transport
from profiler_parts.agent import AgentProcess, compressed_profiler_options, transfer_options
from profiler_parts.lab import Lab, WireWatch
from profiler_parts.settings import FITS_TIMEOUT_PER_ROUND_S, Settings


@dataclass(frozen=True, slots=True)
class Ours:
    """What the time-compressed run of our profiler produced."""

    fits: list[LinkCost]
    rounds: list[list[int]]
    """Probe sizes of each round, warm-up first, from the provider's own accounting."""
    round_starts_s: list[float]
    report: dict[str, Any]
    wire: WireWatch
    seconds: float


def split_rounds(probes: Sequence[Sequence[float]]) -> tuple[list[list[int]], list[float]]:
    """Group (monotonic, size) probe entries into rounds: each round opens with a warm-up."""
    rounds: list[list[int]] = []
    starts: list[float] = []
    for t, size in sorted(probes, key=lambda entry: entry[0]):
        if size == WARM_UP_BYTES or not rounds:
            rounds.append([])
            starts.append(t)
        rounds[-1].append(int(size))
    t0 = starts[0] if starts else 0.0
    return rounds, [t - t0 for t in starts]


async def run_ours(
    lab: Lab, observer: Transport, defaults: NetworkProvider, settings: Settings
) -> Ours:
    state = lab.workdir / "state-ours"
    providers = {
        "transfer": transfer_options(lab, state / "transfer"),
        "network": compressed_profiler_options(lab, defaults, state / "network"),
    }
    agent = AgentProcess(lab, "agent-ours", providers)
    wanted = len(defaults.probe_sizes) * settings.rounds
    fits: list[LinkCost] = []
    started = time.monotonic()
    async with (
        observer.subscribe([network_key(lab.node, lab.peer)]) as feed,
        WireWatch(lab) as wire,
    ):
        await agent.start()
        try:
            async with asyncio.timeout(FITS_TIMEOUT_PER_ROUND_S * (settings.rounds + 1)):
                while not fits or fits[-1].samples < wanted:
                    fits.append(decode((await anext(feed)).body, LinkCost))
        except TimeoutError:
            await agent.stop()
            raise BenchError(
                f"ours: no fit with {wanted} samples in time; agent log:\n{agent.tail()}"
            ) from None
        finally:
            report = await agent.stop()
    seconds = time.monotonic() - started
    if not report:
        raise BenchError(f"ours: the agent wrote no report; agent log:\n{agent.tail()}")
    rounds, starts = split_rounds(report["probes"])
    return Ours(fits, rounds, starts, report, wire, seconds)
