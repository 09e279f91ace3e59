"""Part 2: 1000 small files through our engine and worker, one ``scp`` batch, the legacy way."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

from harness.jupiter_scp import password_env, sshpass_scp_argv
from harness.window import in_window
from jupiter_providers.copy_engines import SftpEngine

from jupiter_bus.transport import Transport, connect
from jupiter_bus.transport.memory import drop_memory_broker
from transfer_parts.cases import Case, Figure, best, figures, measure, print_figures, run_rounds
from transfer_parts.large import OPENSSH_VARIANTS, scp_case
from transfer_parts.settings import Settings
from transfer_parts.sshd_site import Pools, Site, expect_files, run_openssh
from transfer_parts.worker import request_body, running_worker, send, worker_options


def batch_case(
    site: Site, label: str, folder: Path, copy_all: Callable[[list[Path]], Awaitable[None]]
) -> Case:
    """A case that copies every small file into ``folder`` (emptied before each run) with
    ``copy_all(destinations)``."""
    copies = [folder / p.name for p in site.small]
    size = site.small[0].stat().st_size
    return Case(
        label,
        partial(copy_all, copies),
        len(copies),
        size * len(copies),
        prepare=site.emptier(folder),
        check=expect_files(copies, size),
    )


def sftp_batch_case(site: Site, engine: SftpEngine, window: int, label: str = "") -> Case:
    """``window`` copies at once over the engine's (warm, pooled) connection."""
    label = label or f"ours: SftpEngine, {window} at once"
    folder = site.server.home / f"small-sftp-{window}{'' if engine.small_file_channel else '-ref'}"

    async def copy_all(copies: list[Path]) -> None:
        jobs = iter(zip(site.small, copies, strict=True))

        async def one() -> None:
            source, destination = next(jobs)
            await engine.copy(site.job(source, destination))

        await in_window(len(copies), window, one)

    return batch_case(site, label, folder, copy_all)


def worker_batch_case(site: Site, transport: Transport, node: str, window: int) -> Case:
    """``window`` requests at once to the worker on ``node``, each one small file."""

    async def copy_all(copies: list[Path]) -> None:
        bodies = iter([request_body(site, s, d) for s, d in zip(site.small, copies, strict=True)])

        async def one() -> None:
            await send(transport, node, next(bodies))

        await in_window(len(copies), window, one)

    label = f"ours: worker, memory bus, concurrency {window}"
    return batch_case(site, label, site.server.home / f"small-worker-{window}", copy_all)


def legacy_case(site: Site, count: int) -> Case:
    folder = site.server.home / "small-legacy"
    sources = site.small[:count]
    env = password_env(site.server.password)

    async def run() -> None:
        for source in sources:
            target = site.target(folder / source.name)
            await run_openssh(sshpass_scp_argv(site.server.port, source, target), env)

    size = sources[0].stat().st_size
    copies = [folder / p.name for p in sources]
    label = f"legacy: sshpass scp per file ({count} files)"
    return Case(label, run, count, size * count, site.emptier(folder), expect_files(copies, size))


async def part_small(site: Site, pools: Pools, settings: Settings) -> tuple[Figure, ...]:
    n, kb = settings.small_count, settings.small_bytes / 1024
    print(f"\n[2] {n} files of {kb:.0f} KB, {settings.rounds} rounds ...")
    async with contextlib.AsyncExitStack() as stack:
        rows = await small_figures(site, pools, settings, stack)
    base = replace(best(rows, "OpenSSH scp"), label="best scp batch")
    print_figures(
        f"{n} files of {kb:.0f} KB (baseline: the faster scp batch, "
        f"{best(rows, 'OpenSSH scp').label}); the legacy row is per file",
        rows,
        base,
    )
    return best(rows, "ours: SftpEngine"), base, rows[-1], best(rows, "ours: worker")


async def small_figures(
    site: Site, pools: Pools, settings: Settings, stack: contextlib.AsyncExitStack
) -> list[Figure]:
    """Part 2's contenders; the workers and memory bus they start end with ``stack``."""
    engine = SftpEngine(pools.new())
    cases = [sftp_batch_case(site, engine, w) for w in settings.windows]
    await measure(cases[0])  # warm the pool: one untimed batch
    window = max(settings.windows)
    label = f"reference: SftpEngine on asyncssh's SFTP client, {window} at once"
    reference = SftpEngine(pools.new(), small_file_channel=False)
    cases.append(sftp_batch_case(site, reference, window, label))
    await measure(cases[-1])
    url = f"memory://bench-transfer-{site.run_id}"
    stack.callback(drop_memory_broker, url)
    requester = await connect(url, connection_name="bench requester")
    stack.push_async_callback(requester.close)
    worker_side = await connect(url, connection_name="bench worker")
    stack.push_async_callback(worker_side.close)
    for w in settings.windows:
        node = f"bench-{site.run_id}-mem{w}"
        state = site.local / f"state-{node}"
        await stack.enter_async_context(
            running_worker(worker_side, node, worker_options(site, state, w))
        )
        await send(requester, node, request_body(site, site.small[0], site.server.home / "w"))
        cases.append(worker_batch_case(site, requester, node, w))
    for i, (name, extra) in enumerate(OPENSSH_VARIANTS[::2]):
        folder = site.server.home / f"small-openssh-{i}"
        label = f"OpenSSH scp, one process, {name.replace('default cipher', 'batch')}"
        cases.append(scp_case(label, site, site.small, folder, *extra))
    samples = await run_rounds(cases, settings.rounds)
    legacy = legacy_case(site, settings.legacy_count)
    samples[legacy.label] = [await measure(legacy)]
    return figures([*cases, legacy], samples)
