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
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests.sshd is not installed; it lives in the repository
    sys.path.insert(0, str(ROOT))

import asyncssh  # noqa: E402
from harness import broker  # noqa: E402
from harness.children import ChildFailed, run_program  # noqa: E402
from harness.environment import load_average  # noqa: E402
from harness.errors import BenchError  # noqa: E402
from harness.jupiter_scp import password_env, sshpass_scp_argv  # noqa: E402
from harness.loop import use_uvloop  # noqa: E402
from harness.options import bench_parser  # noqa: E402
from harness.rounds import rotated  # noqa: E402
from harness.stats import Percentiles  # noqa: E402
from harness.tables import Indented, print_table, ratio_text, verdict  # noqa: E402
from harness.window import Timed, in_window  # noqa: E402
from jupiter_providers.copy_engines import (  # noqa: E402
    CopyFailure,
    CopyJob,
    Engine,
    OpenSshOptions,
    OpenSshScpEngine,
    ScpEngine,
    SftpEngine,
)
from jupiter_providers.ssh_pool import FAST_CIPHERS, SshOptions, SshPool  # noqa: E402

from jupiter_bus.agent import Agent  # noqa: E402
from jupiter_bus.messages import TransferRequest, TransferResult, decode, encode  # noqa: E402
from jupiter_bus.topology import TRANSFERS_EXCHANGE, work_queue  # noqa: E402
from jupiter_bus.transport import Transport, connect  # noqa: E402
from jupiter_bus.transport.memory import drop_memory_broker  # noqa: E402
from tests.sshd import SshServer, sshd_unavailable_reason, start_sshd  # noqa: E402

MB: Final = 1_000_000
PROGRAM_TIMEOUT_S: Final = 300.0
REQUEST_TIMEOUT_S: Final = 30.0
START_TIMEOUT_S: Final = 30.0
LATENCY_WARMUP: Final = 10
ASYNCSSH_MAX_READ: Final = 4 * 1024 * 1024
"""asyncssh's largest local read, which caps its default SFTP block size."""
OPENSSH_MAX_WRITE: Final = 261_120
"""OpenSSH sftp-server's largest write (its limits@openssh.com answer: 256 KiB - 1 KiB)."""
GCM: Final = "aes128-gcm@openssh.com"
TUNING_GRID: Final = (
    (-1, -1),
    *(
        (block, window)
        for block in (65_536, 131_072, OPENSSH_MAX_WRITE)
        for window in (16, 64, 128)
    ),
    (262_144, 64),
)
"""(block_size, max_requests) of SftpEngine; -1 is asyncssh's default (server limits)."""
CIPHER_ORDERS: Final = (
    FAST_CIPHERS,
    ("chacha20-poly1305@openssh.com", *FAST_CIPHERS),
    ("aes128-ctr", *FAST_CIPHERS),
    ("aes256-gcm@openssh.com", *FAST_CIPHERS),
)


@dataclass(frozen=True, slots=True)
class Settings:
    """How much work each part does; the same for every contender of a part."""

    url: str
    rounds: int
    tune_rounds: int
    big_bytes: int = 100 * MB
    small_count: int = 1000
    small_bytes: int = 4096
    legacy_count: int = 50
    latency_count: int = 200
    windows: tuple[int, ...] = (32, 64)


def settings_for(url: str, quick: bool, rounds: int | None) -> Settings:
    if quick:
        return Settings(url, rounds or 2, 1, legacy_count=10, latency_count=100)
    return Settings(url, rounds or 5, 3)


# ---------------------------------------------------------------------------- measuring


@dataclass(frozen=True, slots=True)
class Case:
    """A contender: ``run`` is timed; ``prepare`` and ``check`` around it are not."""

    label: str
    run: Callable[[], Awaitable[None]]
    files: int
    size_bytes: int
    prepare: Callable[[], Awaitable[None]] | None = None
    check: Callable[[], None] | None = None


def _cpu_now() -> float:
    """CPU seconds of this process plus its waited-for children (the OpenSSH programs)."""
    times = os.times()
    return time.process_time() + times.children_user + times.children_system


async def measure(case: Case) -> Timed:
    """One timed run of ``case``: wall time and the copying side's CPU time."""
    if case.prepare is not None:
        await case.prepare()
    cpu, wall = _cpu_now(), time.perf_counter()
    try:
        await case.run()
    except (CopyFailure, asyncssh.Error, OSError, ChildFailed) as exc:
        raise BenchError(f"{case.label}: {exc}") from exc
    sample = Timed(time.perf_counter() - wall, _cpu_now() - cpu)
    if case.check is not None:
        case.check()
    return sample


async def run_rounds(
    cases: Sequence[Case], rounds: int, failures: dict[str, str] | None = None
) -> dict[str, list[Timed]]:
    """Every case once per round, the order rotated each round so drift hits all alike.

    With ``failures``, a case that fails is recorded there and left out of later rounds
    (tuning probes settings that may not work); without it, a failure ends the run.
    """
    samples: dict[str, list[Timed]] = {case.label: [] for case in cases}
    for r in range(rounds):
        for case in rotated(cases, r):
            if failures is not None and case.label in failures:
                continue
            try:
                samples[case.label].append(await measure(case))
            except BenchError as exc:
                if failures is None:
                    raise
                failures[case.label] = str(exc.__cause__ or exc)
    return samples


@dataclass(frozen=True, slots=True)
class Figure:
    """A contender's medians over its samples."""

    label: str
    wall_s: float
    cpu_s: float
    mb_s: float
    files_s: float
    mb_s_range: tuple[float, float]

    @classmethod
    def of(cls, case: Case, samples: Sequence[Timed]) -> Figure:
        rates = [case.size_bytes / MB / s.wall_s for s in samples]
        wall = statistics.median(s.wall_s for s in samples)
        return cls(
            case.label,
            wall,
            statistics.median(s.cpu_s for s in samples),
            case.size_bytes / MB / wall,
            case.files / wall,
            (min(rates), max(rates)),
        )


def figures(cases: Sequence[Case], samples: Mapping[str, Sequence[Timed]]) -> list[Figure]:
    return [Figure.of(case, samples[case.label]) for case in cases]


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def print_figures(title: str, rows: Sequence[Figure], base: Figure) -> None:
    header = ["contender", "s/sample", "ms/file", "MB/s", "MB/s range", "files/s"]
    header += ["client CPU s", f"x {base.label}"]
    lines = []
    for f in rows:
        lines.append(
            [
                f.label,
                f"{f.wall_s:.3f}",
                fmt(1000 / f.files_s),
                fmt(f.mb_s),
                f"{fmt(f.mb_s_range[0])}-{fmt(f.mb_s_range[1])}",
                fmt(f.files_s),
                f"{f.cpu_s:.3f}",
                ratio_text(f.files_s / base.files_s),
            ]
        )
    print_table(header, lines, Indented(), title=title)


# ------------------------------------------------------------------------------- the site


@dataclass(frozen=True, slots=True)
class Site:
    """The sshd, its user, the local source files and helpers to reach them."""

    server: SshServer
    local: Path
    big: Path
    small: tuple[Path, ...]
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def remote_dir(self, name: str) -> Path:
        """An empty folder ``name`` in the user's home, owned by the user."""
        folder = self.server.home / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        owner = self.server.home.stat()
        os.chown(folder, owner.st_uid, owner.st_gid)
        return folder

    def job(self, source: Path, destination: Path, key: str | None = None) -> CopyJob:
        return CopyJob(
            host=self.server.host,
            port=self.server.port,
            user=self.server.user,
            source=str(source),
            destination=str(destination),
            idempotency_key=key or uuid.uuid4().hex,
        )

    def ssh_options(self, ciphers: Sequence[str] = FAST_CIPHERS) -> SshOptions:
        return SshOptions(
            known_hosts=str(self.server.known_hosts),
            client_keys=[str(self.server.client_key)],
            ciphers=tuple(ciphers),
        )

    def openssh_options(self) -> OpenSshOptions:
        return OpenSshOptions(
            known_hosts=str(self.server.known_hosts),
            identity_files=(str(self.server.client_key),),
        )

    def target(self, path: Path) -> str:
        return f"{self.server.user}@{self.server.host}:{path}"

    def scp_argv(self, sources: Sequence[Path], target: str, *extra: str) -> list[str]:
        """OpenSSH ``scp`` with the key, strict host key checking, no prompts."""
        s = self.server
        return [
            "scp",
            "-q",
            "-P",
            str(s.port),
            "-i",
            str(s.client_key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={s.known_hosts}",
            *extra,
            "--",
            *map(str, sources),
            target,
        ]


def _write_random(path: Path, size: int) -> None:
    chunk = 4 * 1024 * 1024
    with path.open("wb") as out:
        for start in range(0, size, chunk):
            out.write(os.urandom(min(chunk, size - start)))


def make_sources(local: Path, settings: Settings) -> tuple[Path, tuple[Path, ...]]:
    big = local / "big.bin"
    _write_random(big, settings.big_bytes)
    folder = local / "small"
    folder.mkdir()
    small = []
    for i in range(settings.small_count):
        path = folder / f"f{i:04d}.bin"
        path.write_bytes(os.urandom(settings.small_bytes))
        small.append(path)
    return big, tuple(small)


@contextlib.contextmanager
def open_site(settings: Settings) -> Iterator[Site]:
    """A fresh sshd and user and the source files; all removed on exit."""
    if (reason := sshd_unavailable_reason()) is not None:
        raise SystemExit(f"cannot run: {reason}")
    # Not under a 0700 folder: the sshd's user must reach its home in here.
    workdir = Path(tempfile.mkdtemp(prefix="jupiter-bench-transfer-"))
    try:
        workdir.chmod(0o711)
        local = workdir / "local"
        local.mkdir()
        big, small = make_sources(local, settings)
        with start_sshd(workdir) as server:
            yield Site(server, local, big, small)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def run_openssh(argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
    """Run an OpenSSH program to its end; :class:`ChildFailed` with its stderr if it fails."""
    await run_program(argv, timeout_s=PROGRAM_TIMEOUT_S, env=env)


def expect_files(paths: Sequence[Path], size: int) -> Callable[[], None]:
    """A check that every path exists with ``size`` bytes (a fast failure is no result)."""

    def check() -> None:
        wrong = [p for p in paths if not p.is_file() or p.stat().st_size != size]
        if wrong:
            raise BenchError(f"{len(wrong)} copies missing or wrong, e.g. {wrong[0]}")

    return check


class Pools:
    """Every SshPool the benchmark opens, closed at the end."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self._pools: list[SshPool] = []

    def new(self, ciphers: Sequence[str] = FAST_CIPHERS) -> SshPool:
        pool = SshPool(self.site.ssh_options(ciphers))
        self._pools.append(pool)
        return pool

    async def close(self) -> None:
        for pool in self._pools:
            await pool.close()


# ------------------------------------------------------------------- part 1: one big file


def engine_case(label: str, engine: Engine, job: CopyJob, size: int) -> Case:
    return Case(
        label,
        lambda: engine.copy(job),
        1,
        size,
        check=expect_files([Path(job.destination)], size),
    )


def cold_case(
    label: str, site: Site, make: Callable[[SshPool], Engine], job: CopyJob, size: int
) -> Case:
    """A new pool per copy: connect, authenticate, copy, close: all timed."""

    async def run() -> None:
        pool = SshPool(site.ssh_options())
        try:
            await make(pool).copy(job)
        finally:
            await pool.close()

    return Case(label, run, 1, size, check=expect_files([Path(job.destination)], size))


def scp_case(label: str, site: Site, sources: Sequence[Path], folder: Path, *extra: str) -> Case:
    destination = f"{folder}/" if len(sources) > 1 else f"{folder}/{sources[0].name}"
    argv = site.scp_argv(sources, site.target(Path(destination)), *extra)

    async def prepare() -> None:
        await asyncio.to_thread(site.remote_dir, folder.name)

    size = sum(p.stat().st_size for p in sources)
    copies = [folder / p.name for p in sources]
    return Case(
        label,
        lambda: run_openssh(argv),
        len(sources),
        size,
        prepare=prepare,
        check=expect_files(copies, sources[0].stat().st_size),
    )


OPENSSH_VARIANTS: Final = (
    ("default cipher", ()),
    ("aes128-gcm", ("-c", GCM)),
    ("default cipher, -O", ("-O",)),
    ("aes128-gcm, -O", ("-O", "-c", GCM)),
)
"""OpenSSH 9 ``scp`` speaks SFTP unless ``-O`` asks for the old SCP protocol."""


async def large_cases(site: Site, pools: Pools, size: int) -> list[Case]:
    warm = pools.new()
    sftp, scp = SftpEngine(warm), ScpEngine(warm)
    out = site.remote_dir("big")
    cases = [
        engine_case("ours: SftpEngine, warm pool", sftp, site.job(site.big, out / "sftp"), size),
        cold_case("ours: SftpEngine, cold", site, SftpEngine, site.job(site.big, out / "sc"), size),
        engine_case("ours: ScpEngine, warm pool", scp, site.job(site.big, out / "scp"), size),
        cold_case("ours: ScpEngine, cold", site, ScpEngine, site.job(site.big, out / "pc"), size),
    ]
    for i, (name, extra) in enumerate(OPENSSH_VARIANTS):
        folder = site.remote_dir(f"big-openssh-{i}")
        cases.append(scp_case(f"OpenSSH scp, {name}", site, [site.big], folder, *extra))
    legacy_engine = OpenSshScpEngine(site.openssh_options())
    job = site.job(site.big, out / "engine-openssh")
    cases.append(engine_case("ours: OpenSshScpEngine", legacy_engine, job, size))
    # open the warm pool's connection and SFTP session with a small copy, untimed
    await sftp.copy(site.job(site.small[0], out / "warm"))
    return cases


def best(rows: Sequence[Figure], prefix: str) -> Figure:
    return max((f for f in rows if f.label.startswith(prefix)), key=lambda f: f.files_s)


async def part_large(site: Site, pools: Pools, settings: Settings) -> tuple[Figure, Figure]:
    print(f"\n[1] one {settings.big_bytes / MB:.0f} MB file, {settings.rounds} rounds ...")
    cases = await large_cases(site, pools, settings.big_bytes)
    rows = figures(cases, await run_rounds(cases, settings.rounds))
    base = replace(best(rows, "OpenSSH scp"), label="best OpenSSH scp")
    print_figures(
        f"one {settings.big_bytes / MB:.0f} MB file (baseline: the fastest OpenSSH scp "
        f"variant, {best(rows, 'OpenSSH scp').label})",
        rows,
        base,
    )
    return next(f for f in rows if f.label == "ours: SftpEngine, warm pool"), base


# --------------------------------------------------------------------------- part 1b: tuning


@dataclass(frozen=True, slots=True)
class Tuning:
    label: str
    engine: SftpEngine
    pool: SshPool
    negotiated: str
    write_limit: int


async def open_tuning(site: Site, label: str, engine: SftpEngine) -> Tuning:
    """Warm the engine's pool with one small untimed copy; note what the connection uses."""
    job = site.job(site.small[0], site.server.home / "tune" / "warm")
    await engine.copy(job)
    async with engine.pool.lease(job.host, job.port, job.user, None) as conn:
        cipher, mac = (conn.connection.get_extra_info(k) for k in ("send_cipher", "send_mac"))
        limit = (await conn.sftp()).limits.max_write_len
    mac_note = "" if mac == cipher else f" + {mac}"
    default_note = ""
    if engine.block_size < 0 and engine.max_requests < 0:
        # asyncssh's rule for -1/-1 (sftp.py, _begin_copy): the server's limit, 16-128 requests
        requests = max(16, min(ASYNCSSH_MAX_READ // limit, 128))
        default_note = f"; default = {_size(limit)} x {requests}"
    note = f"{cipher}{mac_note}{default_note}"
    return Tuning(label, engine, engine.pool, note, limit)


def _size(value: int) -> str:
    return "default" if value < 0 else f"{value // 1024}k" if value % 1024 == 0 else str(value)


async def tuning_configs(site: Site, pools: Pools) -> list[Tuning]:
    site.remote_dir("tune")
    configs = []
    for block, window in TUNING_GRID:
        engine = SftpEngine(pools.new(), block_size=block, max_requests=window)
        label = f"block {_size(block)}, requests {window if window > 0 else 'default'}"
        configs.append(await open_tuning(site, label, engine))
    for order in CIPHER_ORDERS[1:]:
        label = f"default block/requests, ciphers {order[0].split('@')[0]} first"
        configs.append(await open_tuning(site, label, SftpEngine(pools.new(order))))
    return configs


async def part_tuning(site: Site, pools: Pools, settings: Settings, base: Figure) -> None:
    print(f"\n[1b] SftpEngine tuning, {settings.tune_rounds} round(s) ...")
    configs = await tuning_configs(site, pools)
    size = settings.big_bytes
    cases = [
        engine_case(c.label, c.engine, site.job(site.big, site.server.home / "tune" / str(i)), size)
        for i, c in enumerate(configs)
    ]
    failures: dict[str, str] = {}
    samples = await run_rounds(cases, settings.tune_rounds, failures)
    lines = []
    for case, c in zip(cases, configs, strict=True):
        if case.label in failures:
            lines.append([c.label, "failed", "", "", failures[case.label].split(": ")[-1]])
            continue
        f = Figure.of(case, samples[case.label])
        ratio = ratio_text(f.mb_s / base.mb_s)
        lines.append([c.label, fmt(f.mb_s), fmt(f.mb_s_range[1]), ratio, c.negotiated])
    print_table(
        ["setting", "MB/s median", "MB/s best", f"x {base.label} median", "negotiated"],
        lines,
        Indented(),
        title=f"SftpEngine on its own warm pool, one {size / MB:.0f} MB file, "
        f"{settings.tune_rounds} round(s); the server's write limit: "
        f"{configs[0].write_limit} B; cipher order "
        f"{', '.join(c.split('@')[0] for c in FAST_CIPHERS)}",
    )


# ---------------------------------------------------------------- part 2: many small files


def sftp_batch_case(site: Site, engine: SftpEngine, window: int, label: str = "") -> Case:
    """``window`` copies at once over the engine's (warm, pooled) connection."""
    label = label or f"ours: SftpEngine, {window} at once"
    folder = site.server.home / f"small-sftp-{window}{'' if engine.small_file_channel else '-ref'}"
    copies = [folder / p.name for p in site.small]

    async def run() -> None:
        jobs = iter(zip(site.small, copies, strict=True))

        async def one() -> None:
            source, destination = next(jobs)
            await engine.copy(site.job(source, destination))

        await in_window(len(copies), window, one)

    async def prepare() -> None:
        await asyncio.to_thread(site.remote_dir, folder.name)

    size = site.small[0].stat().st_size
    return Case(
        label,
        run,
        len(copies),
        size * len(copies),
        prepare=prepare,
        check=expect_files(copies, size),
    )


def request_body(site: Site, source: Path, destination: Path) -> bytes:
    s = site.server
    request = TransferRequest(
        host=s.host, port=s.port, user=s.user, source=str(source), destination=str(destination)
    )
    return encode(request)


async def send(transport: Transport, node: str, body: bytes) -> None:
    reply = await transport.request(TRANSFERS_EXCHANGE, node, body, timeout=REQUEST_TIMEOUT_S)
    result = decode(reply.body, TransferResult)
    if not result.ok:
        raise BenchError(f"worker {node} failed a job: {result.error}")


def worker_batch_case(site: Site, transport: Transport, node: str, window: int) -> Case:
    folder = site.server.home / f"small-worker-{window}"
    copies = [folder / p.name for p in site.small]

    async def run() -> None:
        bodies = iter([request_body(site, s, d) for s, d in zip(site.small, copies, strict=True)])

        async def one() -> None:
            await send(transport, node, next(bodies))

        await in_window(len(copies), window, one)

    async def prepare() -> None:
        await asyncio.to_thread(site.remote_dir, folder.name)

    size = site.small[0].stat().st_size
    return Case(
        f"ours: worker, memory bus, concurrency {window}",
        run,
        len(copies),
        size * len(copies),
        prepare=prepare,
        check=expect_files(copies, size),
    )


def worker_options(site: Site, state: Path, concurrency: int) -> dict[str, Any]:
    return {
        "concurrency": concurrency,
        "known_hosts": str(site.server.known_hosts),
        "client_keys": [str(site.server.client_key)],
        "allow_roots": [str(site.local)],
        "state_dir": str(state),
    }


@contextlib.asynccontextmanager
async def running_worker(
    transport: Transport, node: str, options: Mapping[str, Any]
) -> AsyncIterator[Agent]:
    """An agent running only the transfer provider; stopped and its queue deleted on exit."""
    agent = Agent(node, transport, {"transfer": options}, grace=10)
    task = asyncio.create_task(agent.run(), name=f"bench agent {node}")
    try:
        await asyncio.wait_for(agent.started(), START_TIMEOUT_S)
        provider = agent.provider("transfer")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not provider.health().detail.startswith("consuming"):
            if time.monotonic() > deadline or task.done():
                raise BenchError(f"worker {node} did not start: {provider.health().detail}")
            await asyncio.sleep(0.01)
        yield agent
    finally:
        agent.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, START_TIMEOUT_S)
        await transport.delete_queue(work_queue(node))


def legacy_case(site: Site, count: int) -> Case:
    folder = site.server.home / "small-legacy"
    sources = site.small[:count]
    env = password_env(site.server.password)

    async def run() -> None:
        for source in sources:
            target = site.target(folder / source.name)
            await run_openssh(sshpass_scp_argv(site.server.port, source, target), env)

    async def prepare() -> None:
        await asyncio.to_thread(site.remote_dir, folder.name)

    size = sources[0].stat().st_size
    copies = [folder / p.name for p in sources]
    label = f"legacy: sshpass scp per file ({count} files)"
    return Case(label, run, count, size * count, prepare, expect_files(copies, size))


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


# ------------------------------------------------------------------ part 3: bus latency


@dataclass(frozen=True, slots=True)
class Latency:
    """One path's sequential request times, in ms, and their percentiles."""

    label: str
    ms: tuple[float, ...]
    spread: Percentiles

    @classmethod
    def of(cls, label: str, ms: Sequence[float]) -> Latency:
        return cls(label, tuple(ms), Percentiles.of(ms))

    @property
    def p50(self) -> float:
        return self.spread.p50


async def time_sequential(label: str, count: int, one: Callable[[int], Awaitable[None]]) -> Latency:
    for i in range(LATENCY_WARMUP):
        await one(-1 - i)
    ms = []
    for i in range(count):
        start = time.perf_counter()
        await one(i)
        ms.append((time.perf_counter() - start) * 1000)
    return Latency.of(label, ms)


@contextlib.asynccontextmanager
async def echo_responder(transport: Transport, node: str) -> AsyncIterator[None]:
    """Answers every request on ``node``'s work queue at once: the bus's own round trip."""
    queue = await transport.declare_work_queue(node)

    async def serve() -> None:
        async with transport.consume(queue, prefetch=16) as deliveries:
            async for delivery in deliveries:
                envelope = delivery.envelope
                await transport.reply(envelope, b"{}", correlation_id=envelope.correlation_id)
                await delivery.ack()

    task = asyncio.create_task(serve(), name=f"bench echo {node}")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await transport.delete_queue(queue)


def latency_sender(
    site: Site, transport: Transport, node: str, folder: Path
) -> Callable[[int], Awaitable[None]]:
    source = site.small[0]

    async def one(i: int) -> None:
        await send(transport, node, request_body(site, source, folder / f"lat{i}.bin"))

    return one


async def worker_latency(
    site: Site, settings: Settings, url: str, label: str, node: str
) -> Latency:
    """Sequential requests from one transport to a worker on another, both on ``url``."""
    folder = site.remote_dir(f"latency-{node}")
    requester = await connect(url, connection_name="bench requester")
    worker_side = await connect(url, connection_name="bench worker")
    try:
        options = worker_options(site, site.local / f"state-{node}", 4)
        async with running_worker(worker_side, node, options):
            one = latency_sender(site, requester, node, folder)
            return await time_sequential(label, settings.latency_count, one)
    finally:
        await requester.close()
        await worker_side.close()


async def echo_latency(settings: Settings, node: str) -> Latency:
    requester = await connect(settings.url, connection_name="bench requester")
    responder = await connect(settings.url, connection_name="bench echo")
    try:
        async with echo_responder(responder, node):

            async def one(_: int) -> None:
                await requester.request(TRANSFERS_EXCHANGE, node, b"{}", timeout=REQUEST_TIMEOUT_S)

            label = "RabbitMQ request/reply, no-op responder"
            return await time_sequential(label, settings.latency_count, one)
    finally:
        await requester.close()
        await responder.close()


async def engine_latency(site: Site, pools: Pools, settings: Settings) -> Latency:
    engine = SftpEngine(pools.new())
    folder = site.remote_dir("latency-engine")

    async def one(i: int) -> None:
        await engine.copy(site.job(site.small[0], folder / f"lat{i}.bin"))

    return await time_sequential("SftpEngine.copy alone, warm pool", settings.latency_count, one)


async def part_latency(site: Site, pools: Pools, settings: Settings) -> Latency:
    n = settings.latency_count
    print(f"\n[3] one {settings.small_bytes // 1024} KB data_transfer, {n} sequential ...")
    memory_url = f"memory://bench-latency-{site.run_id}"
    rows = [await engine_latency(site, pools, settings)]
    try:
        node = f"bench-{site.run_id}-latmem"
        rows.append(await worker_latency(site, settings, memory_url, "worker, memory bus", node))
    finally:
        drop_memory_broker(memory_url)
    rows.append(await echo_latency(settings, f"bench-{site.run_id}-echo"))
    node = f"bench-{site.run_id}-lat"
    aim = "worker via RabbitMQ (the aim)"
    rows.append(await worker_latency(site, settings, settings.url, aim, node))
    lines = [
        [
            r.label,
            f"{r.p50:.2f}",
            f"{r.spread.p99:.2f}",
            f"{statistics.fmean(r.ms):.2f}",
            fmt(1000 / r.p50),
        ]
        for r in rows
    ]
    print_table(
        ["path", "p50 ms", "p99 ms", "mean ms", "req/s at p50"],
        lines,
        Indented(),
        title=f"request latency, {n} sequential after {LATENCY_WARMUP} warm-up (ms)",
    )
    return rows[-1]


# ---------------------------------------------------------------------------- the summary


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
