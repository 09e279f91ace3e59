"""``jupiter-bus transfer`` as a user drives it: a subprocess against RabbitMQ, a real
agent whose SFTP worker copies to a real OpenSSH sshd, the password from the
environment (never argv), output and exit status checked; the bar in a pseudo-terminal."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from jupiter_bus.cli.console import EXIT_FAILED, EXIT_USAGE
from jupiter_bus.cli.transfer import ENV_PASSWORD, parse_target
from jupiter_bus.errors import ConfigError
from jupiter_bus.transport import connect

from .conftest import AMQP_URL
from .sshd import SshServer
from .test_cli import command

pytestmark = pytest.mark.amqp

CLI = (sys.executable, "-m", "jupiter_bus")


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "JUPITER_BUS_URL": AMQP_URL,
        "XDG_STATE_HOME": str(tmp_path / "xdg"),
        **extra,
    }


@pytest.fixture
async def node(ssh_server: SshServer, tmp_path: Path, unique: str) -> AsyncIterator[str]:
    """A running agent whose worker reaches the test sshd by password only (no usable key)."""
    name = f"tr-{unique}"
    config = tmp_path / "agent.toml"
    config.write_text(
        f'node = "{name}"\nhost = "127.0.0.1"\n'
        "[providers.transfer]\n"
        f'known_hosts = "{ssh_server.known_hosts}"\n'
        f'client_keys = ["{ssh_server.other_key}"]\n'
        f'allow_roots = ["{tmp_path}"]\n'
        "progress_interval = 0.05\nmax_attempts = 1\n",
        encoding="utf-8",
    )
    async with command(*CLI, "agent", "--config", str(config), env=env(tmp_path)) as agent:
        await agent.wait_for("running providers", timeout=60)
        try:
            yield name
        finally:
            agent.process.terminate()
            await agent.finish()
            bus = await connect(AMQP_URL)
            try:
                await bus.delete_queue(f"jupiter.transfer.{name}")
            finally:
                await bus.close()


def transfer(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "transfer", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env(tmp_path, **extra),
        stdin=subprocess.DEVNULL,
    )


async def test_a_transfer_with_the_password_from_the_environment(
    node: str, ssh_server: SshServer, tmp_path: Path
) -> None:
    source = tmp_path / "out.bin"
    source.write_bytes(os.urandom(3_000_000))
    target = f"cli-{node}/in/out.bin"
    done = await asyncio.to_thread(
        transfer, tmp_path,
        "--via", node, "--to", f"{ssh_server.user}@127.0.0.1:{ssh_server.port}",
        "--create-dirs", str(source), target,
        **{ENV_PASSWORD: ssh_server.password},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"ok: 3000000 bytes {node} -> {ssh_server.user}@127.0.0.1:")
    assert (ssh_server.home / target).read_bytes() == source.read_bytes()
    assert ssh_server.password not in done.stdout + done.stderr

    # the same, as JSON for scripts
    done = await asyncio.to_thread(
        transfer, tmp_path,
        "--via", node, "--to", f"{ssh_server.user}@127.0.0.1:{ssh_server.port}", "--json",
        str(source), f"cli-{node}/in/again.bin", "--create-dirs",
        **{ENV_PASSWORD: ssh_server.password},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = orjson.loads(done.stdout)
    assert result["type"] == "transfer.result"
    assert result["ok"] is True
    assert result["bytes"] == 3_000_000
    assert result["node"] == node


async def test_a_wrong_password_fails_with_its_kind_and_never_shows_it(
    node: str, ssh_server: SshServer, tmp_path: Path
) -> None:
    source = tmp_path / "small.bin"
    source.write_bytes(b"x" * 1000)
    wrong = "not-the-Password-42"
    done = await asyncio.to_thread(
        transfer, tmp_path,
        "--via", node, "--to", f"{ssh_server.user}@127.0.0.1:{ssh_server.port}",
        str(source), f"cli-{node}/never.bin",
        **{ENV_PASSWORD: wrong},
    )  # fmt: skip
    assert done.returncode == EXIT_FAILED, done.stdout + done.stderr
    assert done.stdout.startswith("failed: auth: ")
    assert wrong not in done.stdout + done.stderr
    assert not (ssh_server.home / f"cli-{node}" / "never.bin").exists()


def in_terminal(argv: list[str], environ: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as stdin, stdout and stderr; all it drew."""
    main, child = pty.openpty()
    process = subprocess.Popen(argv, stdin=child, stdout=child, stderr=child, env=environ)
    os.close(child)
    screen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                screen += chunk
            elif process.poll() is not None:
                break
        return process.wait(timeout=30), screen.decode(errors="replace")
    finally:
        process.kill()
        os.close(main)


async def test_the_progress_bar_in_a_terminal(
    node: str, ssh_server: SshServer, tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(96 * 1024 * 1024))
    target = f"{ssh_server.user}@127.0.0.1:{ssh_server.port}"
    argv = [*CLI, "transfer", "--via", node, "--to", target, str(source), f"cli-{node}-big.bin"]
    environ = env(tmp_path, **{ENV_PASSWORD: ssh_server.password, "COLUMNS": "120"})
    code, text = await asyncio.to_thread(in_terminal, argv, environ, 120)
    assert code == 0, text
    assert f"{node} -> {ssh_server.user}@127.0.0.1" in text  # the bar's label
    assert "MB" in text  # rich's DownloadColumn: "12.3/100.7 MB"
    assert "━" in text
    assert "ok: 100663296 bytes" in text


def test_ask_password_without_a_terminal_is_a_usage_error(tmp_path: Path) -> None:
    done = transfer(
        tmp_path, "--via", "n1", "--to", "u@127.0.0.1", "--ask-password", "a.bin", "b.bin"
    )
    assert done.returncode == EXIT_USAGE
    assert "needs a terminal" in done.stderr


def test_a_transfer_via_a_node_nobody_serves_fails_at_once(tmp_path: Path) -> None:
    started = time.monotonic()
    done = transfer(tmp_path, "--via", "nobody-at-all-xyz", "--to", "u@127.0.0.1", "a", "b")
    assert done.returncode == EXIT_FAILED
    assert "nobody-at-all-xyz" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 30


def test_the_target_is_parsed_or_refused_in_words() -> None:
    assert parse_target("jupiter@10.0.0.12") == ("jupiter", "10.0.0.12", 22)
    assert parse_target("a@b@host:2222") == ("a@b", "host", 2222)
    assert parse_target("pi@[fd00::7]:2200") == ("pi", "fd00::7", 2200)
    for bad in ("host", "@host", "u@", "u@host:0", "u@host:x", "u@[fd00::7", "u@:22"):
        with pytest.raises(ConfigError, match="--to"):
            parse_target(bad)
