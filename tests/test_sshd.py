"""The test sshd is a real OpenSSH server: it checks passwords, keys and host keys."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.sshd import SshServer

SCP_TIMEOUT_S = 10.0


def client_options(server: SshServer, **overrides: Any) -> dict[str, Any]:
    """asyncssh.connect arguments that use nothing from root's ~/.ssh or an agent."""
    options: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "username": server.user,
        "known_hosts": str(server.known_hosts),
        "config": [],
        "agent_path": None,
        "client_keys": None,
        "connect_timeout": 5,
    }
    return options | overrides


async def test_password_login_puts_and_gets_a_file_by_sftp(
    ssh_server: SshServer, tmp_path: Path
) -> None:
    local = tmp_path / "payload.bin"
    local.write_bytes(os.urandom(4096))
    remote = ssh_server.home / "payload.bin"
    options = client_options(ssh_server, password=ssh_server.password)
    async with asyncssh.connect(**options) as conn, conn.start_sftp_client() as sftp:
        await sftp.put(str(local), str(remote))
        await sftp.get(str(remote), str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == local.read_bytes()
    # Written by the test user's session, not by root: the login really switched users.
    assert remote.stat().st_uid == pwd.getpwnam(ssh_server.user).pw_uid


async def test_authorized_key_logs_in_as_the_user(ssh_server: SshServer) -> None:
    options = client_options(ssh_server, client_keys=[ssh_server.client_key])
    async with asyncssh.connect(**options) as conn:
        result = await conn.run("id -un; pwd", check=True, timeout=5)
    assert str(result.stdout).split() == [ssh_server.user, str(ssh_server.home)]


async def test_wrong_password_is_denied(ssh_server: SshServer) -> None:
    options = client_options(ssh_server, password=ssh_server.password + "x")
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(**options)


async def test_unauthorized_key_is_denied(ssh_server: SshServer) -> None:
    options = client_options(ssh_server, client_keys=[ssh_server.other_key])
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(**options)


@pytest.fixture(params=["empty", "wrong-key"])
def untrusting_known_hosts(
    request: pytest.FixtureRequest, ssh_server: SshServer, tmp_path: Path
) -> Path:
    """A known_hosts file without the server's key: empty, or with another key for it."""
    known_hosts = tmp_path / "untrusting_known_hosts"
    line = ""
    if request.param == "wrong-key":
        other_public = Path(f"{ssh_server.other_key}.pub").read_text()
        line = f"[{ssh_server.host}]:{ssh_server.port} {other_public}"
    known_hosts.write_text(line)
    return known_hosts


async def test_unknown_host_key_is_not_verifiable(
    ssh_server: SshServer, untrusting_known_hosts: Path
) -> None:
    options = client_options(
        ssh_server, password=ssh_server.password, known_hosts=str(untrusting_known_hosts)
    )
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await asyncssh.connect(**options)


async def test_asyncssh_scp_copies_a_file(ssh_server: SshServer, tmp_path: Path) -> None:
    local = tmp_path / "scp.bin"
    local.write_bytes(os.urandom(4096))
    remote = ssh_server.home / "asyncssh-scp.bin"
    options = client_options(ssh_server, client_keys=[ssh_server.client_key])
    async with asyncssh.connect(**options) as conn:
        await asyncssh.scp(str(local), (conn, str(remote)))
    assert remote.read_bytes() == local.read_bytes()


async def openssh_scp(
    server: SshServer, known_hosts: Path, flags: list[str], source: str, target: str
) -> tuple[int, str]:
    """Run OpenSSH ``scp`` with the password from ``$SSHPASS``; return its code and output."""
    process = await asyncio.create_subprocess_exec(
        "sshpass", "-e", "scp", *flags, "-F", "/dev/null", "-P", str(server.port),
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "PreferredAuthentications=password",
        "-o", "PubkeyAuthentication=no",
        source, target,
        env={**os.environ, "SSHPASS": server.password},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        output, _ = await asyncio.wait_for(process.communicate(), SCP_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


@pytest.fixture
def openssh_scp_available() -> None:
    """Skip unless OpenSSH ``scp`` and ``sshpass`` are installed."""
    if shutil.which("sshpass") is None or shutil.which("scp") is None:
        pytest.skip("sshpass or scp missing: apt-get install sshpass openssh-client")


@pytest.mark.usefixtures("openssh_scp_available")
@pytest.mark.parametrize("protocol_flags", [[], ["-O"]], ids=["sftp-protocol", "legacy-scp"])
async def test_openssh_scp_with_sshpass_copies_a_file(
    ssh_server: SshServer, tmp_path: Path, protocol_flags: list[str]
) -> None:
    local = tmp_path / "openssh.bin"
    local.write_bytes(os.urandom(4096))
    remote = ssh_server.home / f"openssh{'-'.join(protocol_flags)}.bin"
    target = f"{ssh_server.user}@{ssh_server.host}:{remote}"
    code, output = await openssh_scp(
        ssh_server, ssh_server.known_hosts, protocol_flags, str(local), target
    )
    assert code == 0, output
    assert remote.read_bytes() == local.read_bytes()


@pytest.mark.usefixtures("openssh_scp_available")
async def test_openssh_scp_refuses_an_unverified_host_key(
    ssh_server: SshServer, tmp_path: Path, untrusting_known_hosts: Path
) -> None:
    local = tmp_path / "refused.bin"
    local.write_bytes(b"never sent")
    target = f"{ssh_server.user}@{ssh_server.host}:{ssh_server.home / 'refused.bin'}"
    code, output = await openssh_scp(ssh_server, untrusting_known_hosts, [], str(local), target)
    assert code != 0
    assert "Host key verification failed" in output
    assert not (ssh_server.home / "refused.bin").exists()
