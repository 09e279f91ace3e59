"""Transfers: our copy engines and worker against OpenSSH ``scp``, side by side, in one run.

Run it as root from the repository root (it starts a throwaway ``sshd`` and user with
``tests.sshd``) with RabbitMQ on 127.0.0.1 for part 3::

    python bench/transfer.py              # default run: a few minutes
    python bench/transfer.py --quick      # under a minute: fewer rounds and samples
    python bench/transfer.py --uvloop     # the same on uvloop's event loop
    python bench/transfer.py --url amqp://guest:guest@127.0.0.1:5672/ --rounds 7

Everything runs on loopback against one fresh ``sshd`` (OpenSSH, ``internal-sftp``), so
client and server share the machine's CPUs; every contender logs in with the same
ed25519 key (the legacy way with the password) and verifies the host key.

1. One 100 MB file of random data: our ``SftpEngine`` and ``ScpEngine`` over a shared
   ``SshPool`` that is warm (connection open) and cold (a new pool per copy, connect
   and close included); OpenSSH ``scp`` with the key, default cipher and
   ``-c aes128-gcm@openssh.com``, each with its default SFTP protocol and with ``-O``
   (the old SCP protocol); ``OpenSshScpEngine`` (``scp`` plus the ``sftp`` rename).
   The baseline is the fastest OpenSSH ``scp`` variant of the run. Then a tuning
   table: ``SftpEngine`` block sizes and request windows, and ``SshOptions.ciphers``
   orders, each on its own warm pool.
2. 1000 files of 4 KB: ``SftpEngine`` copying N at once over one pooled connection
   (files that small go through its ``SmallFileChannel``; a reference row sends them
   through asyncssh's SFTP client, ``small_file_channel=False``, as before),
   the transfer worker (an ``Agent`` running ``TransferProvider``) with concurrency N
   fed N requests at a time through the in-memory bus, one OpenSSH ``scp`` process
   copying the whole batch (``scp f1 ... fN dir/``, both protocols; the faster is the
   baseline) and the legacy Jupiter way, one ``sshpass -e scp`` per file with the
   password, timed on 50 files (10 with ``--quick``) and reported per file.
3. Latency of one 4 KB ``data_transfer`` request through RabbitMQ to a worker on a warm
   pool, sequential requests, p50 / p99; with the floors under it: the engine alone,
   the same worker on the in-memory bus, and a RabbitMQ request/reply to a no-op
   responder.

Rounds: parts 1 and 2 run every contender once per round, in an order rotated each
round, and the tables give the median over the rounds (with the range of the rate).
"client CPU s" is the CPU time of the copying side: this process for our engines, the
``scp``/``ssh``/``sshpass`` child processes for OpenSSH; the server's CPU is not counted.
MB are 10**6 bytes. A summary checks DESIGN.md section 5. Temporary files, the user,
``sshd`` and the benchmark's queues are removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import platform
import subprocess
import time
from collections.abc import Sequence

from harness import broker
from harness.environment import load_average
from harness.loop import use_uvloop
from harness.options import bench_parser
from harness.tables import ratio_text, verdict
from transfer_parts.cases import Figure
from transfer_parts.large import part_large
from transfer_parts.latency import Latency, part_latency
from transfer_parts.settings import Settings, settings_for
from transfer_parts.small import part_small
from transfer_parts.sshd_site import Pools, open_site
from transfer_parts.tuning import part_tuning


def print_summary(
    large: tuple[Figure, Figure], small: tuple[Figure, ...], latency: Latency
) -> None:
    ours, scp = large
    batch, scp_batch, legacy, worker = small
    checks = [
        ("one big file, SftpEngine warm / best OpenSSH scp", ours.mb_s / scp.mb_s, 1.0, True),
        ("small files, SftpEngine / best scp batch", batch.files_s / scp_batch.files_s, 1.5, True),
        ("small files, SftpEngine / legacy sshpass scp", batch.files_s / legacy.files_s, 100, True),
        ("RabbitMQ data_transfer p50 (ms)", latency.p50, 10.0, False),
    ]
    print("\nsummary (DESIGN.md section 5):")
    for name, value, aim, higher in checks:
        met = value >= aim if higher else value < aim
        sign = ">=" if higher else "<"
        unit = "x" if higher else " ms"
        print(f"  {name}: {value:.2f}{unit} (aim {sign} {aim:g}{unit}): {verdict(met)}")
    ratio = worker.files_s / scp_batch.files_s
    print(f"  (no aim) small files, worker on the memory bus / best scp batch: {ratio_text(ratio)}")


def print_environment(settings: Settings, loop_name: str) -> None:
    """Say what ran where: a busy or small machine moves every figure."""
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
    print(
        f"transfer bench: Python {platform.python_version()}, {loop_name}, asyncssh "
        f"{importlib.metadata.version('asyncssh')}, {ssh.stderr.strip()}\n"
        f"{os.cpu_count()} CPUs (client and sshd share them), load average {load_average()}; "
        f"{settings.rounds} rounds, broker {broker.address(settings.url)}"
    )


async def run(settings: Settings) -> None:
    # sshd starts and the sources are written before anything else runs on the loop
    with open_site(settings) as site:
        pools = Pools(site)
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(pools.close)
            started = time.monotonic()
            large = await part_large(site, pools, settings)
            await part_tuning(site, pools, settings, large[1])
            small = await part_small(site, pools, settings)
            latency = await part_latency(site, pools, settings)
        print_summary(large, small, latency)
        print(f"  (measured in {time.monotonic() - started:.0f} s)")


def main(argv: Sequence[str] | None = None) -> None:
    rounds = "rounds for parts 1-2 (default 5; 2 quick)"
    parser = bench_parser(__doc__, "fewer rounds: under a minute", rounds_help=rounds, uvloop=True)
    args = parser.parse_args(argv)
    loop_name = use_uvloop() if args.uvloop else "asyncio default loop"
    settings = settings_for(args.url, args.quick, args.rounds)
    print_environment(settings, loop_name)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
