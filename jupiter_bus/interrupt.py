"""Ctrl-C for command-line programs: the work is cancelled, cleaned up, and the exit
status is 130 (128 + SIGINT, the shell's convention), with no traceback.

``asyncio.run`` alone turns SIGINT into a cancellation of the main task, but if any
code on the way swallows that cancellation the program carries on (or ends with
status 0); here the signal itself is remembered, so the status is 130 whatever the
cancelled code does.

Example::

    def main() -> int:
        return run_interruptible(run(args))   # sys.exit(main())
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Coroutine
from typing import Any, Final

__all__ = [
    "EXIT_INTERRUPTED",
    "run_interruptible",
]

EXIT_INTERRUPTED: Final = 130
"""The exit status of a program stopped by SIGINT (Ctrl-C)."""


def run_interruptible(main: Coroutine[Any, Any, int], *, name: str | None = None) -> int:
    """Run ``main`` in a new event loop and return its status, or 130 after Ctrl-C.

    SIGINT cancels ``main`` (its ``finally`` blocks and context managers run) and a
    one-line ``<name>: interrupted`` goes to stderr. A second SIGINT while it cleans up
    is ignored.

    Example::

        sys.exit(run_interruptible(demo(url), name="jupiter-bus"))
    """
    interrupted = False

    async def guarded() -> int:
        nonlocal interrupted
        task, loop = asyncio.current_task(), asyncio.get_running_loop()
        assert task is not None

        def on_sigint() -> None:
            nonlocal interrupted
            if not interrupted:
                interrupted = True
                task.cancel()

        loop.add_signal_handler(signal.SIGINT, on_sigint)
        try:
            return await main
        except BaseException:
            if interrupted:  # whatever the cancelled code raised on its way out
                return EXIT_INTERRUPTED
            raise
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    try:
        status = asyncio.run(guarded())
    except KeyboardInterrupt:  # before the handler was installed, or after it was removed
        interrupted = True
    if interrupted:
        print(f"{name or sys.argv[0]}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return status
