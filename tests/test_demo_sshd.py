"""The demo's SSH servers: real asyncssh SFTP on loopback, shaped per link, keys only."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import asyncssh
import pytest

from jupiter_bus.demo.sshd import DemoKeys, LinkShape, RateLimiter, link_shapes, serve_nodes

SHAPES = {("n1", "n2"): LinkShape(8.0, 30.0), ("n2", "n1"): LinkShape(32.0, 5.0)}


async def _connect(
    keys: DemoKeys, port: int, user: str, key_of: str
) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1",
        port,
        username=user,
        client_keys=[str(keys.client_key(key_of))],
        known_hosts=str(keys.known_hosts),
    )


async def test_each_link_carries_its_shaped_rate(tmp_path: Path) -> None:
    keys = DemoKeys.create(tmp_path / "keys", ["n1", "n2"])
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(1_000_000))
    roots = {"n1": tmp_path / "n1", "n2": tmp_path / "n2"}
    async with serve_nodes(keys, roots, SHAPES) as servers:
        for (src, dst), shape in SHAPES.items():
            async with (
                await _connect(keys, servers[dst].port, src, src) as conn,
                conn.start_sftp_client() as sftp,
            ):
                started = time.monotonic()
                await sftp.put(str(source), "copy.bin")
                seconds = time.monotonic() - started
            mbit_per_s = 8.0 / seconds  # 1 MB = 8 Mbit
            assert 0.75 * shape.mbit_per_s <= mbit_per_s <= 1.1 * shape.mbit_per_s, (src, dst)
            assert (roots[dst] / "copy.bin").read_bytes() == source.read_bytes()


async def test_a_node_logs_in_only_as_itself_with_its_own_key(tmp_path: Path) -> None:
    keys = DemoKeys.create(tmp_path / "keys", ["n1", "n2"])
    roots = {"n1": tmp_path / "n1", "n2": tmp_path / "n2"}
    async with serve_nodes(keys, roots, SHAPES) as servers:
        port = servers["n2"].port
        with pytest.raises(asyncssh.PermissionDenied):
            await _connect(keys, port, "n1", "n2")  # n2's key for user n1
        with pytest.raises(asyncssh.PermissionDenied):
            await _connect(keys, port, "n2", "n2")  # no n2 -> n2 link
        with pytest.raises(asyncssh.PermissionDenied):
            await asyncssh.connect(
                "127.0.0.1",
                port,
                username="n1",
                password="x",
                client_keys=None,
                known_hosts=str(keys.known_hosts),
            )
        async with await _connect(keys, port, "n1", "n1"):
            pass


async def test_the_servers_host_keys_are_pinned_and_paths_stay_in_the_root(
    tmp_path: Path,
) -> None:
    keys = DemoKeys.create(tmp_path / "keys", ["n1", "n2"])
    roots = {"n1": tmp_path / "n1", "n2": tmp_path / "n2"}
    async with serve_nodes(keys, roots, SHAPES) as servers:
        other = DemoKeys.create(tmp_path / "other", ["n1", "n2"])
        other.known_hosts.write_text(
            keys.known_hosts.read_text().replace(
                keys.public_line(keys.host_key("n2")), other.public_line(other.host_key("n2"))
            )
        )
        with pytest.raises(asyncssh.HostKeyNotVerifiable):
            await asyncssh.connect(
                "127.0.0.1",
                servers["n2"].port,
                username="n1",
                client_keys=[str(keys.client_key("n1"))],
                known_hosts=str(other.known_hosts),
            )
        async with (
            await _connect(keys, servers["n2"].port, "n1", "n1") as conn,
            conn.start_sftp_client() as sftp,
            sftp.open("../../escape.txt", "w") as file,
        ):
            await file.write("x")
    assert (roots["n2"] / "escape.txt").read_text() == "x"
    assert not (tmp_path / "escape.txt").exists()


async def test_concurrent_writers_share_a_link_rate() -> None:
    limiter = RateLimiter(1_000_000, burst=1000)
    started = time.monotonic()
    await asyncio.gather(*(limiter.take(100_000) for _ in range(4)))
    assert time.monotonic() - started >= 0.35  # 400 kB at 1 MB/s, less the burst


def test_link_shapes_are_reproducible_and_cover_every_ordered_pair() -> None:
    nodes = ["a", "b", "c"]
    assert link_shapes(nodes, seed=3) == link_shapes(nodes, seed=3)
    assert set(link_shapes(nodes)) == {(s, d) for s in nodes for d in nodes if s != d}
    with pytest.raises(ValueError, match="positive rate"):
        RateLimiter(0)
