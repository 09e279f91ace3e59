"""Child processes of a benchmark: programs run to their end, agents stopped in time."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Mapping, Sequence

from harness.errors import BenchError


class ChildFailed(BenchError):
    """A program a bench ran failed or took too long; the message says which and how."""


async def run_program(
    argv: Sequence[str],
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    keep_stdout: bool = False,
) -> bytes:
    """Run ``argv`` to its end without input; its stdout if ``keep_stdout``, else ``b""``.

    Raises :class:`ChildFailed` with the end of its stderr if it exits non-zero, or when
    it takes over ``timeout_s`` (it is killed then).

    Example::

        out = await run_program(["tc", "-s", "qdisc", "show"], timeout_s=10, keep_stdout=True)
    """
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if keep_stdout else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else None,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise ChildFailed(f"{' '.join(argv[:3])} ... took over {timeout_s:g} s") from None
    if process.returncode != 0:
        text = err.decode(errors="replace").strip()[-400:]
        raise ChildFailed(f"{' '.join(argv[:3])} ... failed ({process.returncode}): {text}")
    return out or b""


async def stop_process(process: asyncio.subprocess.Process, timeout_s: float) -> None:
    """SIGTERM ``process`` if it still runs and wait for it; kill it after ``timeout_s``.

    Example::

        await stop_process(agent, timeout_s=20)
    """
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
