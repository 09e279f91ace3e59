"""The ``local`` engine: a copy on the executing node itself (tests, demos, one host)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
from collections.abc import Callable
from io import BufferedReader, BufferedWriter
from typing import Final, TypeAlias

from jupiter_bus.errors import CopyFailure

from .copy_job import CopyJob, Engine, classify

__all__ = ["CHUNK_BYTES", "LocalEngine"]

CHUNK_BYTES: Final = 1024 * 1024
"""Bytes copied between two progress reports (a job without a progress callback is
copied in one ``shutil.copyfile``)."""

# sendfile() refuses these file pairs (or this platform): copy through a buffer instead.
_NO_SENDFILE: Final = frozenset(
    {errno.EINVAL, errno.ENOSYS, errno.ENOTSOCK, errno.EOPNOTSUPP, errno.EXDEV}
)

_Report: TypeAlias = Callable[[int], None]


class LocalEngine(Engine):
    """Copies on the executing node itself (``host`` is not contacted).

    The copy runs in a thread; with a progress callback it goes chunk by chunk
    (:data:`CHUNK_BYTES`, in the kernel where ``sendfile`` allows) and reports after
    each chunk, handing the count to the event loop.

    Example::

        await LocalEngine().copy(job)  # job.destination is a path on this node
    """

    name = "local"

    async def copy(self, job: CopyJob) -> None:
        """Copy through a temporary file in the destination folder, then rename."""
        report = _on_loop(job.progress, asyncio.get_running_loop()) if job.progress else None
        try:
            await asyncio.to_thread(self._copy, job, report)
        except Exception as exc:
            raise classify(exc, job) from None

    @staticmethod
    def _copy(job: CopyJob, report: _Report | None) -> None:
        folder = os.path.dirname(job.destination) or "."
        if job.create_dirs:
            os.makedirs(folder, exist_ok=True)
        elif not os.path.isdir(folder):
            raise CopyFailure("not_found", f"destination folder does not exist: {folder}")
        temp = job.temp_destination
        try:
            if report is None:
                shutil.copyfile(job.source, temp)
            else:
                _copy_reporting(job.source, temp, report)
            os.replace(temp, job.destination)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise


def _on_loop(progress: _Report, loop: asyncio.AbstractEventLoop) -> _Report:
    """``progress``, called on ``loop`` from the copying thread (dropped once it closed)."""

    def report(bytes_done: int) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens
            loop.call_soon_threadsafe(progress, bytes_done)

    return report


def _copy_reporting(source: str, target: str, report: _Report) -> None:
    """Copy ``source`` to ``target`` chunk by chunk, reporting the bytes done after each."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        if _sendfile_chunks(src, dst, report) is None:
            _buffered_chunks(src, dst, report)


def _sendfile_chunks(src: BufferedReader, dst: BufferedWriter, report: _Report) -> int | None:
    """Copy in the kernel; ``None`` when ``sendfile`` cannot take these files (nothing copied)."""
    done = 0
    while True:
        try:
            sent = os.sendfile(dst.fileno(), src.fileno(), done, CHUNK_BYTES)
        except OSError as exc:
            if done == 0 and exc.errno in _NO_SENDFILE:
                return None
            raise
        if sent == 0:
            return done
        done += sent
        report(done)


def _buffered_chunks(src: BufferedReader, dst: BufferedWriter, report: _Report) -> None:
    buffer = memoryview(bytearray(CHUNK_BYTES))
    done = 0
    while read := src.readinto(buffer):
        dst.write(buffer[:read])
        done += read
        report(done)
