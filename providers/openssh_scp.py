"""The ``openssh-scp`` engine: the OpenSSH ``scp`` and ``sftp`` programs as subprocesses.

The legacy way, kept for hosts where only OpenSSH's own client is wanted: ``scp`` copies
to the job's temporary name, then an ``sftp -b -`` batch renames it (and creates
folders), so the rename is no remote shell command. A password goes to ``sshpass -e``
through the environment, never the command line; host keys are checked
(``StrictHostKeyChecking=yes``) unless the worker opts out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

from jupiter_bus.errors import CopyFailure

from .copy_job import CopyJob, Engine, Leftovers, refuse_line_breaks

__all__ = ["OpenSshOptions", "OpenSshScpEngine"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OpenSshOptions:
    """How the OpenSSH programs are run.

    Example::

        OpenSshOptions(known_hosts="/etc/jupiter/known_hosts", identity_files=("/etc/jupiter/id",))
    """

    known_hosts: str | None = None
    verify_host_keys: bool = True
    identity_files: Sequence[str] = ()
    connect_timeout: float = 10.0
    ciphers: str | None = None


class OpenSshScpEngine(Engine):
    """The OpenSSH ``scp`` program (legacy engine); a password goes through ``sshpass -e``.

    It reports no progress: ``scp`` shows its progress meter only on a terminal, so the
    job's :attr:`~jupiter_providers.copy_job.CopyJob.progress` is never called (the
    worker's progress events of such a job are its start alone).

    Example::

        engine = OpenSshScpEngine(OpenSshOptions(known_hosts="/etc/jupiter/known_hosts"))
        await engine.copy(job)
    """

    name = "openssh-scp"

    def __init__(self, options: OpenSshOptions) -> None:
        self.options = options
        self.leftovers = Leftovers()
        """Temporary files stopped copies left on their servers, removed by the next copy
        to the same endpoint (in its rename batch)."""

    def _ssh_options(self, job: CopyJob) -> list[str]:
        opts = self.options
        args = [
            "-o",
            f"ConnectTimeout={max(1, round(opts.connect_timeout))}",
            "-o",
            "LogLevel=ERROR",
        ]
        if opts.verify_host_keys:
            args += ["-o", "StrictHostKeyChecking=yes"]
            if opts.known_hosts:
                args += ["-o", f"UserKnownHostsFile={opts.known_hosts}"]
        else:
            # The explicit per-worker opt-out reproducing Jupiter's original behaviour.
            args += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        if job.password is not None:
            # sshpass tells a wrong password by a second prompt (exit 5), so the prompts
            # keep their default count; BatchMode=no comes before sftp's "-b", which
            # would otherwise turn password prompts off.
            for option in (
                "PreferredAuthentications=password,keyboard-interactive",
                "PubkeyAuthentication=no",
                "IdentitiesOnly=yes",
                "BatchMode=no",
            ):
                args += ["-o", option]
        else:
            args += ["-o", "BatchMode=yes"]
            for identity in opts.identity_files:
                args += ["-i", identity]
        if opts.ciphers:
            args += ["-c", opts.ciphers]
        return args

    @staticmethod
    def _remote(job: CopyJob, path: str) -> str:
        host = f"[{job.host}]" if ":" in job.host else job.host
        return f"{job.user}@{host}:{path}"

    async def _run(self, job: CopyJob, argv: list[str], stdin: bytes | None = None) -> None:
        env = dict(os.environ)
        if job.password is not None:
            env["SSHPASS"] = job.password
            argv = ["sshpass", "-e", *argv]
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except FileNotFoundError:
            raise CopyFailure("invalid", f"{argv[0]} is not installed on this worker") from None
        try:
            _, stderr = await process.communicate(stdin)
        except asyncio.CancelledError:
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
        if process.returncode != 0:
            raise _openssh_failure(
                job, argv[0], process.returncode or 0, stderr.decode(errors="replace")
            )

    async def copy(self, job: CopyJob) -> None:
        """``scp`` to the temporary name, then ``sftp`` renames it (no remote shell)."""
        refuse_line_breaks(job, self.name)
        ssh_options = self._ssh_options(job)
        temp = job.temp_destination
        batch: list[str] = []
        if job.create_dirs:
            folder = posixpath.dirname(job.destination)
            parts = [p for p in folder.split("/") if p]
            prefix = "/" if folder.startswith("/") else ""
            for i in range(1, len(parts) + 1):
                batch.append("-mkdir " + _sftp_quote(prefix + "/".join(parts[:i])))
        port = ["-P", str(job.port)]
        sftp_argv = ["sftp", "-q", *port, *ssh_options, "-b", "-", self._remote(job, "")[:-1]]
        if batch:
            await self._run(job, sftp_argv, ("\n".join(batch) + "\n").encode())
        # no "-q" for scp: it would also silence ssh's reason for failing
        scp_argv = ["scp", *port, *ssh_options, "--", job.source, self._remote(job, temp)]
        await self.leftovers.claim(job, temp)
        try:
            await self._run(job, scp_argv)
        except CopyFailure as failure:
            # scp got in and failed writing (a full disk): the part it wrote stays
            # behind. Failures to log in or connect wrote nothing, and trying again
            # to remove nothing would be one more login attempt.
            if failure.kind == "remote":
                await asyncio.shield(self._remove_temp(job, sftp_argv, temp))
            raise
        except BaseException:
            # stopped (its deadline): the server may not answer a removal now; the
            # next copy to it removes what is left
            self.leftovers.add(job, temp)
            raise
        # the rename, then (errors ignored: "-") what stopped copies left on this server
        stale = self.leftovers.take(job)
        batch_text = f"rename {_sftp_quote(temp)} {_sftp_quote(job.destination)}\n" + "".join(
            f"-rm {_sftp_quote(path)}\n" for path in stale
        )
        try:
            await self._run(job, sftp_argv, batch_text.encode())
        except BaseException:
            self.leftovers.settle(job, stale, kept=stale)
            await asyncio.shield(self._remove_temp(job, sftp_argv, temp))
            raise
        self.leftovers.settle(job, stale, kept=())
        if stale:
            log.info(
                "removed %d temporary files left on %s by stopped copies", len(stale), job.where
            )

    async def _remove_temp(self, job: CopyJob, sftp_argv: list[str], temp: str) -> None:
        with contextlib.suppress(CopyFailure):
            await self._run(job, sftp_argv, f"-rm {_sftp_quote(temp)}\n".encode())


def _sftp_quote(path: str) -> str:
    """Quote a path for an ``sftp -b`` batch line: taken literally, spaces and quotes kept."""
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _openssh_failure(job: CopyJob, program: str, code: int, stderr: str) -> CopyFailure:
    text = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {code}"
    lowered = stderr.lower()
    if (program == "sshpass" and code == 5) or "permission denied (" in lowered:
        return CopyFailure("auth", f"authentication failed for {job.where}")
    if (program == "sshpass" and code == 6) or "host key verification failed" in lowered:
        return CopyFailure("auth", f"host key of {job.host}:{job.port} is not in known_hosts")
    if (
        "connection refused" in lowered
        or "no route to host" in lowered
        or "could not resolve" in lowered
        # ConnectTimeout: a peer that does not answer is unreachable (docs/messages.md)
        or "connection timed out" in lowered
        or "timed out during banner exchange" in lowered
    ):
        return CopyFailure(
            "unreachable", f"cannot reach {job.host}:{job.port}: {text}", transient=True
        )
    if "timed out" in lowered:
        return CopyFailure("timeout", f"timed out talking to {job.where}", transient=True)
    if (
        "connection reset" in lowered
        or "connection closed" in lowered
        or "lost connection" in lowered
    ):
        return CopyFailure("unreachable", f"connection to {job.where} lost: {text}", transient=True)
    if "no such file" in lowered:
        return CopyFailure("not_found", f"no such file or folder: {text}")
    if "permission denied" in lowered:
        return CopyFailure("permission", f"permission denied: {text}")
    return CopyFailure("remote", f"{program} failed: {text}")
