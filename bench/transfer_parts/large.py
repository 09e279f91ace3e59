"""Part 1: one big file through our engines, warm and cold, and OpenSSH ``scp``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Final

from jupiter_providers.copy_engines import CopyJob, Engine, OpenSshScpEngine, ScpEngine, SftpEngine
from jupiter_providers.ssh_pool import SshPool

from transfer_parts.cases import Case, Figure, best, figures, print_figures, run_rounds
from transfer_parts.settings import MB, Settings
from transfer_parts.sshd_site import Pools, Site, expect_files, run_openssh

GCM: Final = "aes128-gcm@openssh.com"


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

    size = sum(p.stat().st_size for p in sources)
    copies = [folder / p.name for p in sources]
    return Case(
        label,
        lambda: run_openssh(argv),
        len(sources),
        size,
        prepare=site.emptier(folder),
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
