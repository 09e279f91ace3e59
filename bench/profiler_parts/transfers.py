"""Phases 2-3: DRUPE's probes and the real transfers, through A's worker and by ``sshpass scp``."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from harness.children import run_program
from harness.errors import BenchError
from harness.jupiter_scp import password_env, sshpass_scp_argv
from jupiter_providers.network import WARM_UP_BYTES

from jupiter_bus.messages import TransferRequest, TransferResult, decode, encode
from jupiter_bus.topology import TRANSFERS_EXCHANGE
from jupiter_bus.transport import Transport
from profiler_parts.agent import AgentProcess, transfer_options
from profiler_parts.lab import Lab, WireWatch
from profiler_parts.settings import (
    BUSY,
    IDLE,
    IDLE_GAP_S,
    REPEATS,
    REQUEST_TIMEOUT_S,
    SCP_TIMEOUT_S,
    WARM_UP_TIMEOUT_S,
)

log = logging.getLogger("bench.profiler")


@dataclass(frozen=True, slots=True)
class WorkerRun:
    """DRUPE's probes replayed through A's worker, then the real transfers."""

    drupe_ms: list[float]
    drupe_wire: WireWatch
    measured_ms: dict[str, dict[int, list[float]]]
    """Per condition (:data:`IDLE`, :data:`BUSY`), the times of each size, in ms."""
    measure_wire: WireWatch
    warm_up_ms: float


def write_random(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


async def send(
    lab: Lab, observer: Transport, source: Path, name: str, *, idle_s: float = IDLE_GAP_S
) -> float:
    """After ``idle_s``, copy ``source`` to B through A's worker; the worker's time in ms."""
    await asyncio.sleep(idle_s)
    server = lab.server
    request = TransferRequest(
        host=server.host,
        port=server.port,
        user=server.user,
        source=str(source),
        # relative, one folder deep, like the profiler's probes: with create_dirs the
        # worker stats each folder of the path, one SFTP round trip apiece
        destination=f"jupiter-bench/{name}",
        engine="sftp",
        create_dirs=True,
    )
    reply = await observer.request(
        TRANSFERS_EXCHANGE, lab.node, encode(request), timeout=REQUEST_TIMEOUT_S
    )
    result = decode(reply.body, TransferResult)
    if not result.ok or result.attempts != 1:
        raise BenchError(f"transfer of {source.name} to B: {result.error} ({result.attempts})")
    return result.seconds * 1000


async def warm_up(lab: Lab, observer: Transport, source: Path) -> float:
    """One unrecorded copy that opens the worker's pooled connection (retried until up)."""
    async with asyncio.timeout(WARM_UP_TIMEOUT_S):
        while True:
            try:
                return await send(lab, observer, source, "warm-up.bin", idle_s=0.0)
            except Exception as exc:  # the worker may not consume yet
                log.info("warm-up not answered yet: %s", exc)
                await asyncio.sleep(0.5)


async def run_worker(
    lab: Lab,
    observer: Transport,
    drupe_files: list[Path],
    check_files: dict[int, Path],
) -> WorkerRun:
    state = lab.workdir / "state-worker"
    agent = AgentProcess(lab, "agent-worker", {"transfer": transfer_options(lab, state)})
    await agent.start()
    try:
        warm = await warm_up(lab, observer, write_random(lab.workdir / "warm.bin", WARM_UP_BYTES))
        async with WireWatch(lab) as drupe_wire:
            drupe_ms = [
                await send(lab, observer, path, f"drupe-{i}.bin")
                for i, path in enumerate(drupe_files)
            ]
        gaps = {IDLE: IDLE_GAP_S, BUSY: 0.0}
        measured = {c: {kb: list[float]() for kb in check_files} for c in gaps}
        async with WireWatch(lab) as measure_wire:
            for _ in range(REPEATS):  # sizes interleaved: slow drift hits every size alike
                for condition, gap in gaps.items():
                    for kb, path in check_files.items():
                        ms = await send(lab, observer, path, f"check-{kb}.bin", idle_s=gap)
                        measured[condition][kb].append(ms)
    except BenchError as exc:
        raise BenchError(f"{exc}; worker log:\n{agent.tail()}") from None
    finally:
        await agent.stop()
    return WorkerRun(drupe_ms, drupe_wire, measured, measure_wire, warm)


def scp_argv(lab: Lab, source: Path, name: str) -> list[str]:
    """Jupiter's ``sshpass scp`` (:mod:`harness.jupiter_scp`), run in namespace A."""
    server = lab.server
    target = f"{server.user}@{server.host}:{name}"
    return ["ip", "netns", "exec", lab.hub, *sshpass_scp_argv(server.port, source, target)]


async def scp_copy(lab: Lab, source: Path, name: str) -> float:
    """One ``sshpass scp`` from A (a new connection each), timed around the process as
    DRUPE did; milliseconds."""
    argv, env = scp_argv(lab, source, name), password_env(lab.server.password)
    started = time.perf_counter()
    await run_program(argv, timeout_s=SCP_TIMEOUT_S, env=env)
    return (time.perf_counter() - started) * 1000


@dataclass(frozen=True, slots=True)
class ScpRun:
    """DRUPE's probes as it ran them, then the real transfers the same way."""

    drupe_ms: list[float]
    drupe_wire: WireWatch
    measured_ms: dict[int, list[float]]


async def run_scp(lab: Lab, drupe_files: list[Path], check_files: dict[int, Path]) -> ScpRun:
    """DRUPE's way: one ``sshpass scp`` process (a new SSH connection) per file."""
    async with WireWatch(lab) as wire:
        drupe_ms = [
            await scp_copy(lab, path, f"drupe-scp-{i}.bin") for i, path in enumerate(drupe_files)
        ]
    measured: dict[int, list[float]] = {kb: [] for kb in check_files}
    for _ in range(REPEATS):
        for kb, path in check_files.items():
            measured[kb].append(await scp_copy(lab, path, f"check-scp-{kb}.bin"))
    return ScpRun(drupe_ms, wire, measured)
