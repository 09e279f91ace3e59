"""The ``local`` engine: a copy on the executing node itself (tests, demos, one host)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil

from jupiter_bus.errors import CopyFailure

from .copy_job import CopyJob, Engine, classify

__all__ = ["LocalEngine"]


class LocalEngine(Engine):
    """Copies on the executing node itself (``host`` is not contacted).

    Example::

        await LocalEngine().copy(job)  # job.destination is a path on this node
    """

    name = "local"

    async def copy(self, job: CopyJob) -> None:
        """Copy through a temporary file in the destination folder, then rename."""
        try:
            await asyncio.to_thread(self._copy, job)
        except Exception as exc:
            raise classify(exc, job) from None

    @staticmethod
    def _copy(job: CopyJob) -> None:
        folder = os.path.dirname(job.destination) or "."
        if job.create_dirs:
            os.makedirs(folder, exist_ok=True)
        elif not os.path.isdir(folder):
            raise CopyFailure("not_found", f"destination folder does not exist: {folder}")
        temp = job.temp_destination
        try:
            shutil.copyfile(job.source, temp)
            os.replace(temp, job.destination)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
