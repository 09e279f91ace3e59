"""The ``jupiter-bus`` command as a user meets it first: ``--version``, ``--help`` with
examples on every command, ``python -m jupiter_bus``, and one-line errors with the
documented exit statuses (each run as a subprocess)."""

from __future__ import annotations

import argparse
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from jupiter_bus.cli import _parser, package_version
from jupiter_bus.cli.console import EXIT_UNREACHABLE, EXIT_USAGE
from jupiter_bus.sealing import load_key, seal, unseal


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jupiter_bus", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )


def command_names() -> list[str]:
    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(commands.choices)


def test_version_names_the_installed_package() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"jupiter-bus {package_version()}"
    assert package_version() != "unknown"


def test_python_dash_m_and_the_cli_module_are_the_same_command() -> None:
    top = run("--help")
    module = subprocess.run(
        [sys.executable, "-m", "jupiter_bus.cli", "--help"], capture_output=True, text=True
    )
    assert top.returncode == module.returncode == 0
    assert top.stdout == module.stdout
    assert "exit statuses" in top.stdout
    for name in command_names():
        assert name in top.stdout


@pytest.mark.parametrize("name", command_names())
def test_every_command_help_shows_an_example(name: str) -> None:
    result = run(name, "--help")
    assert result.returncode == 0, result.stderr
    assert "examples:" in result.stdout
    assert f"jupiter-bus {name}" in result.stdout.split("examples:", 1)[1]


def test_an_unknown_command_is_a_usage_error() -> None:
    result = run("frobnicate")
    assert result.returncode == EXIT_USAGE
    assert "invalid choice" in result.stderr


def test_a_config_error_is_one_line_and_status_2() -> None:
    result = run("agent", "--broker", "memory://x", "--broker-file", "/nonexistent")
    assert result.returncode == EXIT_USAGE
    assert result.stderr.strip().splitlines() == [
        "jupiter-bus: give --broker or --broker-file, not both"
    ]
    assert "Traceback" not in result.stderr


def test_no_broker_is_status_69_in_one_line() -> None:
    result = run("agent", "--node", "n1", "--broker", "amqp://127.0.0.1:1/", "--wait", "0")
    assert result.returncode == EXIT_UNREACHABLE, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("jupiter-bus:")]
    assert len(errors) == 1
    assert "Traceback" not in result.stderr


def test_seal_key_writes_a_private_key_the_workers_can_load(tmp_path: Path) -> None:
    key_file = tmp_path / "seal.key"
    result = run("seal-key", str(key_file))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = load_key(key_file)
    assert unseal(seal("s3cret", key), key) == "s3cret"


def test_seal_key_never_overwrites_without_force(tmp_path: Path) -> None:
    key_file = tmp_path / "seal.key"
    key_file.write_bytes(b"old")
    key_file.chmod(0o644)
    refused = run("seal-key", str(key_file))
    assert refused.returncode == EXIT_USAGE
    assert "--force" in refused.stderr
    assert key_file.read_bytes() == b"old"
    replaced = run("seal-key", "--force", str(key_file))
    assert replaced.returncode == 0, replaced.stderr
    assert key_file.read_bytes() != b"old"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    load_key(key_file)
