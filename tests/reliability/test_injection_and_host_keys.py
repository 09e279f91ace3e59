"""Issue 12 item 6: hostile paths are taken literally or refused, and host keys are checked.

Every name carries a command that would create a marker file if any shell (remote login
shell, local shell, an ``sftp -b`` batch's ``!command``) interpreted it; the marker must
never appear, and the file must arrive under its literal name or be refused ``invalid``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ..sshd import SshServer
from ..test_transfer_worker import request_body
from .conftest import ENGINES, MakeWorker, temp_names


def hostile_names(marker: str) -> list[str]:
    return [
        f"semi; touch {marker}; x",
        f"$(touch {marker})",
        f"`touch {marker}`",
        f'it\'s "quoted" && touch {marker}',
        "spaces  and\ttab",
        f"new\nline\n!touch {marker}",  # a newline starts a new sftp batch command
        f"new\n!touch {marker};#",  # ... and "!" runs it in a local shell of the worker
        f"-leading-dash; touch {marker}",
    ]


def markers_in(marker: str, *folders: Path) -> list[Path]:
    return [folder / marker for folder in folders if (folder / marker).exists()]


@pytest.mark.parametrize("engine", [*ENGINES, "local"])
async def test_hostile_destination_and_source_names_are_literal_or_invalid(
    make_worker: MakeWorker,
    ssh_server: SshServer,
    tmp_path: Path,
    remote_dir: Path,
    unique: str,
    engine: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker = f"pwned-{unique}"
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # a local shell would run here; relative sources start here
    worker = await make_worker()
    outcomes: dict[str, str] = {}
    for i, name in enumerate(hostile_names(marker)):
        source = workdir / name
        source.write_bytes(os.urandom(1000 + i))
        # the leading-dash source goes as a relative path, where "-" starts the argument
        source_arg = Path(name) if name.startswith("-") else source
        destination = remote_dir / name
        body = request_body(
            ssh_server, source_arg, str(destination), engine=engine,
            password=ssh_server.password if engine != "local" else None,
        )  # fmt: skip
        result = await worker.run(body)
        if result.ok:
            assert destination.read_bytes() == source.read_bytes(), repr(name)
            outcomes[name] = "literal"
        else:
            assert result.error is not None
            assert result.error.kind == "invalid", (name, result.error)
            assert not destination.exists()
            outcomes[name] = "invalid"
    # $(touch /tmp/pwned-...) with its slash: folders are created literally
    nested = f"$(touch /tmp/{marker})"
    result = await worker.run(
        request_body(
            ssh_server, workdir / hostile_names(marker)[0], str(remote_dir / nested),
            engine=engine, create_dirs=True,
            password=ssh_server.password if engine != "local" else None,
        )
    )  # fmt: skip
    assert result.ok, result.error
    assert (remote_dir / nested).is_file()
    print(f"{engine}: {outcomes}")
    found = markers_in(marker, Path("/tmp"), workdir, remote_dir, ssh_server.home, Path("/"))
    assert found == [], f"a name was executed: {found}"
    assert temp_names(remote_dir) == []


def known_hosts_with(server: SshServer, path: Path, key_file: Path | None) -> Path:
    """A known_hosts naming the server's host:port with ``key_file``'s key (None: empty)."""
    name = server.host_key_line.split(" ", 1)[0]
    if key_file is None:
        path.write_text("")
    else:
        key_type, key_data, *_ = Path(f"{key_file}.pub").read_text().split()
        path.write_text(f"{name} {key_type} {key_data}\n")
    return path


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("auth", ["password", "key"])
async def test_unknown_or_changed_host_key_is_refused_unless_opted_out(
    make_worker: MakeWorker,
    ssh_server: SshServer,
    source_file: Path,
    remote_dir: Path,
    tmp_path: Path,
    engine: str,
    auth: str,
) -> None:
    password = ssh_server.password if auth == "password" else None
    unknown = known_hosts_with(ssh_server, tmp_path / "empty_known_hosts", None)
    changed = known_hosts_with(ssh_server, tmp_path / "changed_known_hosts", ssh_server.other_key)
    for case, known_hosts in (("unknown", unknown), ("changed", changed)):
        worker = await make_worker(known_hosts=str(known_hosts))
        destination = remote_dir / f"{case}.bin"
        body = request_body(
            ssh_server, source_file, str(destination), engine=engine, password=password
        )
        result = await worker.run(body)
        print(f"{case} host key / {engine} / {auth}: {result.error}")
        assert result.error is not None, f"{case} host key accepted"
        assert result.error.kind == "auth", (case, result.error)
        assert result.attempts == 1
        assert not destination.exists()
        # the explicit opt-out (Jupiter's StrictHostKeyChecking=no) lets the same copy through
        trusting = await make_worker(known_hosts=str(known_hosts), verify_host_keys=False)
        result = await trusting.run(body)
        assert result.ok, (case, result.error)
        assert destination.read_bytes() == source_file.read_bytes()
