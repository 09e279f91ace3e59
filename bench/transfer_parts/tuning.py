"""Part 1b: ``SftpEngine`` block sizes, request windows and cipher orders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from harness.tables import Indented, print_table, ratio_text
from jupiter_providers.copy_engines import SftpEngine
from jupiter_providers.ssh_pool import FAST_CIPHERS, SshPool

from transfer_parts.cases import Figure, fmt, run_rounds
from transfer_parts.large import engine_case
from transfer_parts.settings import MB, Settings
from transfer_parts.sshd_site import Pools, Site

ASYNCSSH_MAX_READ: Final = 4 * 1024 * 1024
"""asyncssh's largest local read, which caps its default SFTP block size."""
OPENSSH_MAX_WRITE: Final = 261_120
"""OpenSSH sftp-server's largest write (its limits@openssh.com answer: 256 KiB - 1 KiB)."""
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
