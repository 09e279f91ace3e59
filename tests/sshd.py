"""A real OpenSSH server for integration tests, run as root with a throwaway user.

:func:`start_sshd` creates a system user with a random password, host and client keys,
and an ``sshd`` on a free port of 127.0.0.1 that only that user may log in to (by password
or by the authorized client key). Given a network namespace (see ``tests/netns.py``) and
an address in it, sshd runs in that namespace instead, on port 22 unless told otherwise.
Everything lives in a work directory, and the user, its processes and its home are
removed again when the context manager exits, also when the test failed. Tests that
cannot run it (not root, no OpenSSH) skip with :func:`sshd_unavailable_reason`.

Example::

    reason = sshd_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with start_sshd(workdir) as server:
        await asyncssh.connect(server.host, server.port, username=server.user,
                               password=server.password, known_hosts=str(server.known_hosts))

    with start_sshd(workdir, netns=net.peers["b"].name, host=net.links["b"].peer_addr) as b:
        ...  # reachable from the namespaces linked to that address, not from the root one
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .netns import connect_in

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")
HOST = "127.0.0.1"
NETNS_PORT = 22  # a fresh namespace has every port free
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
# A free port found by binding port 0 can be taken again before sshd binds it.
BIND_ATTEMPTS = 3
COMMAND_TIMEOUT_S = 30.0
USER_TOOLS = ("ssh-keygen", "useradd", "userdel", "chpasswd")


class SshdStartError(RuntimeError):
    """sshd (or the user and keys it needs) could not be set up; the message says why."""


@dataclass(frozen=True, slots=True)
class SshServer:
    """A running test ``sshd`` and the credentials of its one user.

    Example::

        async with asyncssh.connect(server.host, server.port, username=server.user,
                                    client_keys=[server.client_key],
                                    known_hosts=str(server.known_hosts)) as conn:
            ...
    """

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    client_key: Path
    """ed25519 private key without passphrase, authorized for :attr:`user`."""
    other_key: Path
    """ed25519 private key that is *not* authorized for anyone."""
    known_hosts: Path
    """A known_hosts file with exactly :attr:`host_key_line`."""
    host_key_line: str
    """``[127.0.0.1]:PORT ssh-ed25519 AAAA...``: the server's host key as known_hosts line
    (``HOST ssh-ed25519 AAAA...`` on port 22, as OpenSSH and asyncssh look it up)."""
    home: Path
    """The user's home directory, owned by and writable for the user."""
    sshd_log: Path
    """sshd's own log (``-e``, LogLevel VERBOSE), for failure messages."""
    netns: str | None = None
    """The network namespace sshd runs in (None: the root namespace)."""

    def known_hosts_via(self, port: int, path: Path) -> Path:
        """Write to ``path`` a known_hosts file naming this server's key at ``port`` (a
        proxy in front of it); return ``path``."""
        path.write_text(self.host_key_line.replace(f"]:{self.port} ", f"]:{port} ") + "\n")
        return path


def sshd_unavailable_reason() -> str | None:
    """Why a test sshd cannot run on this machine, or None if it can.

    Example::

        if (reason := sshd_unavailable_reason()) is not None:
            pytest.skip(reason)
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "the test sshd needs root (it creates a system user)"
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} is missing: apt-get install openssh-server"
    missing = [tool for tool in USER_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)}: apt-get install openssh-client passwd"
    return None


@contextlib.contextmanager
def start_sshd(
    workdir: Path, *, netns: str | None = None, host: str = HOST, port: int | None = None
) -> Iterator[SshServer]:
    """Run a real OpenSSH server with a throwaway user; remove both on exit.

    ``workdir`` must exist, and the new user must be able to traverse every directory
    above it (its home and authorized_keys live in it): ``tempfile.mkdtemp()`` chmod-ed
    to 0o711 works, pytest's ``tmp_path`` (under a 0o700 directory) does not. One
    ``workdir`` holds one server's files: give each server its own.

    sshd listens on ``host``:``port``; without ``port``, a free port of the root namespace,
    or :data:`NETNS_PORT` in namespace ``netns`` (which the caller made and owns; ``host``
    must be one of its addresses).

    Example::

        with start_sshd(Path(tempfile.mkdtemp())) as server:
            print(server.port, server.user)
    """
    if (reason := sshd_unavailable_reason()) is not None:
        raise SshdStartError(reason)
    workdir = workdir.resolve()
    _require_traversable(workdir)
    with contextlib.ExitStack() as cleanup:
        user = "jbtest" + secrets.token_hex(4)
        password = secrets.token_urlsafe(18)
        home = workdir / f"home-{user}"
        _create_user(user, home, password)
        cleanup.callback(_delete_user, user, home)
        keys = _make_keys(workdir, user)
        listen = _Listen(host, port if port is not None else NETNS_PORT if netns else None, netns)
        process, port = _launch_sshd(workdir, user, keys["host"], listen)
        cleanup.callback(_stop_sshd, process, user)
        host_key_line = f"{_known_hosts_name(host, port)} {_public_key(keys['host'])}"
        known_hosts = workdir / "known_hosts"
        known_hosts.write_text(host_key_line + "\n")
        yield SshServer(
            host=host,
            port=port,
            user=user,
            password=password,
            client_key=keys["client"],
            other_key=keys["other"],
            known_hosts=known_hosts,
            host_key_line=host_key_line,
            home=home,
            sshd_log=workdir / "sshd.log",
            netns=netns,
        )


@dataclass(frozen=True, slots=True)
class _Listen:
    """Where sshd listens: ``port`` None means a free port of the root namespace."""

    host: str
    port: int | None
    netns: str | None

    def command(self, *argv: str) -> list[str]:
        """``argv``, run in :attr:`netns` when there is one."""
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return [*prefix, *argv]


def _known_hosts_name(host: str, port: int) -> str:
    """How known_hosts names ``host:port``: OpenSSH (and asyncssh) omit port 22."""
    return host if port == 22 else f"[{host}]:{port}"


def _require_traversable(workdir: Path) -> None:
    """Fail early, with the fix, if a new user could not reach its home under ``workdir``."""
    for directory in (workdir, *workdir.parents):
        if not directory.stat().st_mode & stat.S_IXOTH:
            raise SshdStartError(
                f"{directory} is not traversable by other users, so the test user could not "
                f"reach its home under {workdir}; use a work directory whose parents are "
                "all o+x (for example tempfile.mkdtemp() with chmod 0o711)"
            )


def _run(*argv: str, stdin: str | None = None) -> None:
    """Run a setup command; on failure raise with its output (which never holds a secret)."""
    result = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise SshdStartError(f"{argv[0]} failed ({result.returncode}): {output}")


def _create_user(user: str, home: Path, password: str) -> None:
    """Add ``user`` with a fresh 0700 ``home`` and ``password`` (given on stdin, not argv)."""
    _run("useradd", "--home-dir", str(home), "--no-create-home", "--shell", "/bin/sh", user)
    home.mkdir(mode=0o700)
    account = pwd.getpwnam(user)
    os.chown(home, account.pw_uid, account.pw_gid)
    _run("chpasswd", stdin=f"{user}:{password}\n")


def _delete_user(user: str, home: Path) -> None:
    """Remove ``user`` and the home directory this module created for it."""
    # --force: a zombie still owned by the user (see _is_live) must not block the removal.
    _run("userdel", "--force", user)
    shutil.rmtree(home, ignore_errors=True)


def _make_keys(workdir: Path, user: str) -> dict[str, Path]:
    """Generate the host key and two client keys; authorize only the ``client`` key."""
    keys = {name: workdir / f"{name}_ed25519" for name in ("host", "client", "other")}
    for name, path in keys.items():
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{user}-{name}", "-f", str(path))
    authorized = workdir / "authorized_keys"
    authorized.write_text(_public_key(keys["client"]) + "\n")
    account = pwd.getpwnam(user)
    # sshd reads AuthorizedKeysFile with the user's uid, so the user must own it.
    os.chown(authorized, account.pw_uid, account.pw_gid)
    authorized.chmod(0o600)
    return keys


def _public_key(private_key: Path) -> str:
    """``type base64`` of the ``.pub`` file ssh-keygen wrote next to ``private_key``."""
    key_type, key_data, *_comment = Path(f"{private_key}.pub").read_text().split()
    return f"{key_type} {key_data}"


def _free_port(host: str) -> int:
    """A port on ``host`` (in the root namespace) that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _write_config(workdir: Path, user: str, host_key: Path, host: str, port: int) -> Path:
    """Write an sshd_config for ``user`` on ``host``:``port``; return its path."""
    config = workdir / "sshd_config"
    config.write_text(
        f"""\
ListenAddress {host}
Port {port}
HostKey {host_key}
PidFile {workdir / "sshd.pid"}
AuthorizedKeysFile {workdir / "authorized_keys"}
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
UsePAM no
StrictModes no
AllowUsers {user}
Subsystem sftp internal-sftp
MaxStartups 200:30:400
MaxSessions 200
MaxAuthTries 10
LogLevel VERBOSE
"""
    )
    return config


def _launch_sshd(
    workdir: Path, user: str, host_key: Path, listen: _Listen
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``sshd -D`` where ``listen`` says and wait for its banner; return it and the port."""
    # sshd's pre-auth children chroot here; only the packaged service creates it on start.
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    # only a port picked by _free_port can be taken again before sshd binds it
    attempts = BIND_ATTEMPTS if listen.port is None else 1
    for attempt in range(1, attempts + 1):
        port = listen.port if listen.port is not None else _free_port(listen.host)
        config = _write_config(workdir, user, host_key, listen.host, port)
        _run(*listen.command(str(SSHD), "-t", "-f", str(config)))
        log = workdir / "sshd.log"
        with log.open("wb") as log_file:  # per attempt: the retry reads only its errors
            # `ip netns exec` execs sshd in place: the process is sshd itself
            process = subprocess.Popen(
                listen.command(str(SSHD), "-D", "-e", "-f", str(config)),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )
        try:
            _wait_for_banner(process, listen, port, log)
        except SshdStartError:
            _stop_sshd(process, user)
            if attempt < attempts and "Address already in use" in _tail(log):
                continue
            raise
        return process, port
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _wait_for_banner(
    process: subprocess.Popen[bytes], listen: _Listen, port: int, log: Path
) -> None:
    """Return once ``port`` answers with an SSH banner; raise with the log tail otherwise."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if (code := process.poll()) is not None:
            raise SshdStartError(f"sshd exited with {code} on port {port}:\n{_tail(log)}")
        if _answers_banner(listen, port):
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.05)  # the pause between probes; ends early if sshd exits
    where = f"{listen.host}:{port}" + (f" in namespace {listen.netns}" if listen.netns else "")
    raise SshdStartError(
        f"sshd did not answer on {where} within {START_TIMEOUT_S} s:\n{_tail(log)}"
    )


def _answers_banner(listen: _Listen, port: int) -> bool:
    """Whether ``port`` accepts a connection and sends an ``SSH-`` identification line."""
    try:
        with _connect(listen, port) as sock:
            return sock.recv(256).startswith(b"SSH-")
    except OSError:
        return False


def _connect(listen: _Listen, port: int) -> socket.socket:
    """A connection to sshd, made from its own namespace: the root one may not reach it."""
    if listen.netns is None:
        return socket.create_connection((listen.host, port), timeout=0.5)
    return connect_in(listen.netns, listen.host, port, timeout=0.5)


def _tail(log: Path, lines: int = 20) -> str:
    """The last ``lines`` of sshd's log, for error messages."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def _stop_sshd(process: subprocess.Popen[bytes], user: str) -> None:
    """Stop sshd, its per-connection children and every process left running as ``user``."""
    victims: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        # Connection children call setsid(), so a process-group kill would miss them;
        # collect them while they are still children of the listener.
        victims = psutil.Process(process.pid).children(recursive=True)
    process.terminate()
    uid = pwd.getpwnam(user).pw_uid
    victims += [p for p in psutil.process_iter(["uids", "status"]) if _is_live(p, uid)]
    for victim in victims:
        with contextlib.suppress(psutil.Error):
            victim.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)
    for victim in _wait_dead(victims, STOP_TIMEOUT_S):
        with contextlib.suppress(psutil.Error):
            victim.kill()


def _wait_dead(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until each process has exited (or is a zombie); return those still running."""
    deadline = time.monotonic() + timeout_s
    alive = processes
    while (alive := [p for p in alive if _running(p)]) and time.monotonic() < deadline:
        psutil.wait_procs(alive, timeout=0.05)  # the pause between checks
    return alive


def _running(process: psutil.Process) -> bool:
    """Whether ``process`` still runs; a zombie has exited and only waits for its reaper."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _is_live(process: psutil.Process, uid: int) -> bool:
    """Whether ``process`` (from ``process_iter``) runs as ``uid`` and is not a zombie.

    A session's user child often outlives its monitor and is reaped by init, which may
    take seconds (or forever, in a container without an init): it is dead already.
    """
    uids, status = process.info["uids"], process.info["status"]
    return uids is not None and uids.real == uid and status != psutil.STATUS_ZOMBIE
