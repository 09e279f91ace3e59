"""The repository the benches run from: its root on ``sys.path`` for the test fixtures they reuse.

``tests.sshd``, ``tests.netns`` and ``tests.proxy`` start real peers for the tests; the
transfer and profiler benches start theirs with the same code, which is not installed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]


def put_root_on_path() -> None:
    """Make ``tests.*`` importable from a bench run as ``python bench/<name>.py``.

    Example::

        put_root_on_path()
        from tests.sshd import start_sshd
    """
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
