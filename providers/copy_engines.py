"""Copy engines: how a transfer worker moves one file to ``user@host:destination``.

Every engine writes to a temporary name in the destination folder and renames it
when the copy is complete, so a partial file never appears under the final name.
The temporary name is derived from the job's idempotency key: a job that is run
again after a crash overwrites what the crashed run left, and a failed copy removes
its temporary file (one it cannot remove, its server having stopped answering, is
noted in the engine's :class:`Leftovers` and removed by its next copy to that server).

Engines (selected by the request's ``engine`` field), one module per protocol:

- ``sftp`` (default): SFTP over a pooled connection, pipelined requests; a file of
  one write goes through a lean SFTP channel of its own (:class:`SmallFileChannel`,
  in :mod:`~jupiter_providers.sftp_small`); :mod:`~jupiter_providers.asyncssh_engines`;
- ``scp``: asyncssh's SCP over a pooled connection (rename through SFTP); the same module;
- ``openssh-scp``: the OpenSSH ``scp`` program (legacy); a password goes to
  ``sshpass -e`` through the environment, never the command line;
  :mod:`~jupiter_providers.openssh_scp`;
- ``local``: a local copy on the executing node (tests, demos, single-host setups);
  :mod:`~jupiter_providers.local_copy`.

What they share (:class:`CopyJob`, the :class:`Engine` interface, :func:`classify`)
is in :mod:`~jupiter_providers.copy_job`. This module gathers them under one name.
"""

from __future__ import annotations

from jupiter_bus.errors import CopyFailure

from .asyncssh_engines import SMALL_FILE_BYTES, ScpEngine, SftpEngine
from .copy_job import TEMP_MARK, CopyJob, Engine, Leftovers, classify, local_file_size
from .local_copy import LocalEngine
from .openssh_scp import OpenSshOptions, OpenSshScpEngine
from .sftp_small import SmallFileChannel
from .sftp_small import _has_posix_rename as _has_posix_rename  # the tests reach it here

__all__ = [
    "SMALL_FILE_BYTES",
    "TEMP_MARK",
    "CopyFailure",
    "CopyJob",
    "Engine",
    "Leftovers",
    "LocalEngine",
    "OpenSshOptions",
    "OpenSshScpEngine",
    "ScpEngine",
    "SftpEngine",
    "SmallFileChannel",
    "classify",
    "local_file_size",
]
