"""``jupiter-bus demo``: real nodes, real SSH links, live costs and HEFT, in one process.

:func:`demo` runs it (see :mod:`.run`); :mod:`.cluster` starts the nodes' agents and
:mod:`.sshd` their SSH servers with shaped links; :mod:`.view` draws the live board.
"""

from __future__ import annotations

from .run import RATE_TOLERANCE, Verdict, demo

__all__ = [
    "RATE_TOLERANCE",
    "Verdict",
    "demo",
]
