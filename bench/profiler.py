"""Network profiler: probe bytes and prediction error, ours against a DRUPE-style schedule.

Run it as root from the repository root, with RabbitMQ on 127.0.0.1::

    python bench/profiler.py             # default run: about 3 minutes
    python bench/profiler.py --quick     # under 90 s: DRUPE's replay capped at 1000 KB
    python bench/profiler.py --seed 7 --no-scp

Two network namespaces, A and B (``tests.netns``), are joined by a veth link shaped to
8 Mbit/s with ``tc tbf`` on both ends; B runs an ``sshd`` with a throwaway user
(``tests.sshd``). A runs a real agent process (this script with a hidden
``--agent-child``: the ``jupiter-bus agent`` of ``tests/test_shaped_links.py``, which
also reports the profiler's own byte accounting when it stops); it reaches the broker
through a TCP proxy on the root end of A's uplink (``tests.proxy``).

1. Ours: ``NetworkProvider`` with its default options, time-compressed 60x (interval,
   fresh_seconds, refresh_seconds and max_sample_age_seconds divided by 60), beside
   the transfer worker that carries its probes, until enough rounds of probes (2 with
   ``--quick``, 4 by default) are in a published fit. The provider's own accounting
   (``Peer.probe_bytes``, warm-ups included) gives the bytes of each round. Bytes per
   link per hour *at the default settings* (interval 60 s jittered, fresh_seconds 600,
   the default budget) come from replaying the provider's planner on a virtual clock
   for 24 hours (``plan_round`` and ``probe``, driven as ``run`` drives them, the
   worker answered at once with the measured fit's cost), next to the arithmetic.
2. DRUPE-style: a seeded sequence of 10 probes with sizes drawn from {1, 10, 100, 1000,
   10000} KB (KB = 1024 bytes, as DRUPE made its files), replayed through the same
   worker in A with a 0.5 s pause instead of DRUPE's minute (each probe still starts on
   an idle link, as DRUPE's did), and with one ``sshpass -e scp`` per probe as DRUPE ran
   it (a new connection each; unless ``--no-scp``); each set is fitted exactly as DRUPE
   did, ``np.polyfit(x_kbit, y_ms, 2)`` with x = KB * 8. Its bytes per link per hour are
   those of one probe a minute: 60 x the mean size of the set (always the full set).
3. Prediction error: the median of 3 real transfers of each of several sizes through
   A's worker (only the worker runs: nothing else shares the link), after idle (0.5 s
   pause: TCP restarts its window, tbf's burst is full) and back to back (sizes
   interleaved), against each model; the scp-timed DRUPE fit against ``sshpass scp``
   transfers timed the same way. Destinations are relative and one folder deep, like
   the probes' (the worker stats each folder of a path it creates).

Temporary files, namespaces, ``sshd``, its user and the worker's queue are removed at
the end, also on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import random
import signal
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from harness import broker
from harness.environment import load_average
from harness.errors import BenchError
from harness.options import bench_parser
from profiler_parts.agent import agent_child
from profiler_parts.lab import Lab, open_lab
from profiler_parts.models import drupe_model, ours_model
from profiler_parts.ours import run_ours
from profiler_parts.replay import profiler_for, replay_defaults
from profiler_parts.report import (
    ms_list,
    print_bytes,
    print_error_summary,
    print_errors,
    print_models,
    print_ours,
    print_summary,
)
from profiler_parts.settings import (
    BUSY,
    COMPRESSION,
    DRUPE_KB,
    DRUPE_POINTS,
    IDLE,
    IDLE_GAP_S,
    MB,
    OUR_KB,
    REPEATS,
    SHAPED,
    Settings,
    settings_for,
)
from profiler_parts.transfers import ScpRun, run_scp, run_worker, write_random

from jupiter_bus.topology import work_queue
from jupiter_bus.transport import Transport, connect
from tests.netns import netns_unavailable_reason
from tests.sshd import sshd_unavailable_reason


def print_environment(settings: Settings) -> None:
    mode = "--quick" if settings.quick else "default"
    print(
        f"profiler bench ({mode}): Python {platform.python_version()}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs, load average {load_average()}; seed {settings.seed}; link A->B "
        f"tc tbf rate {SHAPED.rate} burst {SHAPED.burst} latency {SHAPED.latency} (both ends); "
        f"broker {broker.address(settings.url)}"
    )


def drupe_sequence(settings: Settings) -> list[int]:
    rng = random.Random(settings.seed)
    return [rng.choice(settings.drupe_sizes_kb) for _ in range(DRUPE_POINTS)]


def make_sources(
    folder: Path, sequence: Sequence[int], settings: Settings
) -> tuple[list[Path], dict[int, Path]]:
    """DRUPE's probe files (one per size, KB = 1024 B) and the files of the real transfers."""
    folder.mkdir()
    by_size = {kb: write_random(folder / f"drupe-{kb}K.bin", kb * DRUPE_KB) for kb in sequence}
    checks = {
        kb: write_random(folder / f"check-{kb}.bin", kb * OUR_KB) for kb in settings.check_sizes_kb
    }
    return [by_size[kb] for kb in sequence], checks


async def measure_all(lab: Lab, observer: Transport, settings: Settings) -> None:
    sequence = drupe_sequence(settings)
    drupe_files, checks = make_sources(lab.workdir / "sources", sequence, settings)
    defaults = profiler_for(lab.workdir / "defaults", object())

    print(
        f"\n[1] ours: NetworkProvider, default options time-compressed {COMPRESSION:g}x "
        f"(interval {defaults.interval / COMPRESSION:g} s, fresh_seconds "
        f"{defaults.fresh_seconds / COMPRESSION:g} s, refresh_seconds "
        f"{defaults.refresh_seconds / COMPRESSION:g} s), until a fit holds {settings.rounds} "
        "samples of each size ..."
    )
    ours = await run_ours(lab, observer, defaults, settings)
    print_ours(ours)
    last = ours_model("ours, last fit", ours.fits[-1])
    schedule = await replay_defaults(
        lab.workdir / "replay", lambda b: last.cost_ms(b), settings.seed
    )

    capped = " (capped at 1000 KB: --quick)" if settings.quick else ""
    print(
        f"\n[2] DRUPE-style: seed {settings.seed}, {DRUPE_POINTS} probes{capped}, KB "
        f"(x{DRUPE_KB} B): {sequence}; {sum(sequence) * DRUPE_KB:,} B in all (10 minutes of "
        f"DRUPE: {sum(sequence) * DRUPE_KB * 6 / MB:.1f} MB/h for this draw; the bytes table "
        "uses the expectation)"
    )
    print(
        f"[3] real transfers: {REPEATS} x {list(settings.check_sizes_kb)} KB (x{OUR_KB} B), "
        f"{IDLE} ({IDLE_GAP_S:g} s pause before each) and {BUSY}; DRUPE's probes first, "
        f"each {IDLE} ..."
    )
    worker = await run_worker(lab, observer, drupe_files, checks)
    print(
        f"  warm-up {worker.warm_up_ms:.1f} ms (opens the worker's pooled connection; not counted)"
    )
    print(f"  DRUPE via the worker: {ms_list(worker.drupe_ms)} ms; {worker.drupe_wire}")
    print(f"  real transfers: {worker.measure_wire}")
    models = [last, ours_model("ours, first fit", ours.fits[0])]
    models.append(drupe_model("DRUPE, worker", sequence, worker.drupe_ms))
    scp: ScpRun | None = None
    if settings.scp:
        print(f"[4] DRUPE as it ran: sshpass scp per probe, then {REPEATS} x each size ...")
        scp = await run_scp(lab, drupe_files, checks)
        print(f"  DRUPE via sshpass scp: {ms_list(scp.drupe_ms)} ms; {scp.drupe_wire}")

    ours_hour, drupe_hour = print_bytes(defaults, ours, schedule, settings)
    errors: dict[tuple[str, str], list[float]] = {}
    for condition, measured in worker.measured_ms.items():
        table = print_errors(
            f"Prediction against the median of {REPEATS} transfers through A's worker, {condition}",
            models,
            measured,
        )
        errors |= {(label, f"worker, {condition}"): e for label, e in table.items()}
    if scp is not None:
        models.append(drupe_model("DRUPE, sshpass scp", sequence, scp.drupe_ms))
        table = print_errors(
            f"DRUPE as it ran: its scp-timed fit against the median of {REPEATS} "
            "sshpass scp transfers",
            models[-1:],
            scp.measured_ms,
        )
        errors |= {(label, "sshpass scp"): e for label, e in table.items()}
    print_models(models)
    print_error_summary(errors)
    print(
        "  ours, last fit: what the agent published after the last round; first fit: after "
        "its first probing round. DRUPE, worker: its probes timed by the same worker as ours "
        "(after a warm-up); DRUPE, sshpass scp: timed around each scp process, as DRUPE "
        "did (a new SSH connection each), held against scp transfers timed the same way."
    )
    ours_errors = {c: errors[(last.label, f"worker, {c}")] for c in worker.measured_ms}
    print_summary(ours_errors, ours_hour, drupe_hour)


async def run(settings: Settings) -> None:
    for reason in (netns_unavailable_reason(), sshd_unavailable_reason()):
        if reason is not None:
            raise SystemExit(f"profiler bench cannot run: {reason}")
    started = time.monotonic()
    run_id = uuid.uuid4().hex[:8]
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM cancels like Ctrl-C does: namespaces, sshd, its user and agents go away
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    observer = await connect(settings.url, connection_name="profiler bench observer")
    try:
        async with open_lab(settings.url, run_id) as lab:
            try:
                await measure_all(lab, observer, settings)
            finally:
                with contextlib.suppress(Exception):
                    await observer.delete_queue(work_queue(lab.node))
    finally:
        await observer.close()
    print(f"  (measured in {time.monotonic() - started:.0f} s)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench_parser(__doc__, "under 90 s; DRUPE capped at 1000 KB")
    parser.add_argument("--seed", type=int, default=0, help="seed of DRUPE's size sequence")
    parser.add_argument("--no-scp", action="store_true", help="skip the sshpass scp replay")
    parser.add_argument("--agent-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.agent_child is not None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        asyncio.run(agent_child(args.agent_child, args.out))
        return
    settings = settings_for(args.url, args.quick, args.seed, not args.no_scp)
    print_environment(settings)
    try:
        asyncio.run(run(settings))
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise SystemExit(
            "profiler bench interrupted (namespaces, sshd and agents removed)"
        ) from None
    except BenchError as exc:
        raise SystemExit(f"profiler bench failed: {exc}") from None


if __name__ == "__main__":
    main()
