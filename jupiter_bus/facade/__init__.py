"""The async facade: :class:`JupiterInterface`, what a scheduler embeds.

One object, used as an async context manager, that

- follows ``resource.*``, ``network.*.*`` and ``transfer.done.*`` on ``jupiter.events``
  into live state (:mod:`jupiter_bus.state`), so reads come from memory (and
  ``transfer.progress.*`` into the progress feeds);
- on entering, asks every node agent for its latest events (``snapshot.request``), so a
  scheduler that starts after the agents has the whole picture at once instead of
  waiting for their next publication;
- answers ``await get_network_data()`` / ``await get_resource_data()`` with a
  consistent snapshot, waiting (with a timeout) for the first state or for the nodes
  and links asked for;
- runs transfers on a node's worker: ``await data_transfer(...)`` waits for the result,
  ``submit_transfer(...)`` / ``wait_transfer(job_id)`` split the two through a durable
  completion queue that another process can also collect from;
- offers live feeds (``watch_network``, ``watch_resources``, ``watch_transfers``,
  ``watch_progress``).

It starts no thread. It owns two tasks at most (the event pump and the completion-queue
collector), both cancelled and awaited on exit; every other wait happens in the caller's
task, has a timeout, and leaves nothing behind when cancelled.

The pieces, each in its own module: :mod:`~jupiter_bus.facade.interface` (the class
itself, composing the others), :mod:`~jupiter_bus.facade.pump` (events into state, watches
and waiters), :mod:`~jupiter_bus.facade.reads` (reads that wait for coverage),
:mod:`~jupiter_bus.facade.transfers` (the transfer client and completion collector) and
:mod:`~jupiter_bus.facade.watch` (live feeds). The late-joiner protocol it asks with is
:mod:`jupiter_bus.snapshot`.

Example::

    async with JupiterInterface("amqp://guest:guest@127.0.0.1/", node="node1") as bus:
        network = await bus.get_network_data(nodes=["node1", "node2"], timeout=30)
        print(network.cost_ms("node1", "node2", 8000.0))
        result = await bus.data_transfer("10.0.0.12", "jupiter", None,
                                         "/data/out/a.bin", "/data/in/a.bin")
"""

from __future__ import annotations

from ..errors import (
    AuthError,
    InterfaceClosed,
    InvalidRequest,
    NoReply,
    NotFound,
    PermissionDenied,
    RemoteError,
    TransferFailed,
    TransferTimeout,
    Unreachable,
)
from .interface import JupiterInterface
from .watch import Watch

__all__ = [
    "AuthError",
    "InterfaceClosed",
    "InvalidRequest",
    "JupiterInterface",
    "NoReply",
    "NotFound",
    "PermissionDenied",
    "RemoteError",
    "TransferFailed",
    "TransferTimeout",
    "Unreachable",
    "Watch",
]
