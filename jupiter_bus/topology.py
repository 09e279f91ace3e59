"""Names on the wire: exchanges, queues and routing keys of the message contract.

These names are fixed by the contract (DESIGN section 3); other processes and
languages rely on them.

Example::

    >>> resource_key("node1")
    'resource.node1'
    >>> work_queue("node1")
    'jupiter.transfer.node1'
"""

from __future__ import annotations

import re

from .errors import InvalidName

__all__ = [
    "DEAD_EXCHANGE",
    "DEAD_QUEUE",
    "DEFAULT_EXCHANGE",
    "ERROR_HEADER",
    "EVENTS_EXCHANGE",
    "MAX_NODE_NAME_CHARS",
    "NODE_NAME_RE",
    "ORIGINAL_EXCHANGE_HEADER",
    "ORIGINAL_ROUTING_KEY_HEADER",
    "TRANSFERS_EXCHANGE",
    "check_node",
    "network_batch_key",
    "network_key",
    "profile_key",
    "resource_key",
    "transfer_done_key",
    "transfer_progress_key",
    "work_queue",
]

EVENTS_EXCHANGE = "jupiter.events"
"""Topic exchange carrying resource, network-cost, transfer-done and transfer-progress events."""
TRANSFERS_EXCHANGE = "jupiter.transfers"
"""Direct exchange routing transfer requests to a node's work queue."""
DEAD_EXCHANGE = "jupiter.dead"
"""Fanout exchange receiving dead letters."""
DEAD_QUEUE = "jupiter.dead"
"""Durable queue bound to :data:`DEAD_EXCHANGE`."""
DEFAULT_EXCHANGE = ""
"""The AMQP default exchange: routes to the queue named by the routing key."""

ERROR_HEADER = "x-jupiter-error"
"""Header naming why a message was dead-lettered."""
ORIGINAL_EXCHANGE_HEADER = "x-jupiter-original-exchange"
ORIGINAL_ROUTING_KEY_HEADER = "x-jupiter-original-routing-key"

NODE_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
MAX_NODE_NAME_CHARS = 100
"""Longest node name: ``network.<src>.<dst>`` must fit AMQP's 255-byte routing keys."""


def check_node(name: str, *, what: str = "node name") -> str:
    """Return ``name`` if it is a valid node name, else raise :class:`InvalidName`.

    Node names are single routing-key words: ``[A-Za-z0-9_-]+``.
    """
    if not isinstance(name, str) or NODE_NAME_RE.fullmatch(name) is None:
        raise InvalidName(f"{what} {name!r} is not valid: use letters, digits, '_' and '-' only")
    return name


def resource_key(node: str) -> str:
    """Routing key of a node's resource events."""
    return f"resource.{check_node(node)}"


def network_key(src: str, dst: str) -> str:
    """Routing key of a link's cost events."""
    return (
        f"network.{check_node(src, what='source node')}.{check_node(dst, what='destination node')}"
    )


def network_batch_key(node: str) -> str:
    """Routing key of the ``network.batch`` events a node publishes (its own links)."""
    return f"network-batch.{check_node(node)}"


def profile_key(node: str) -> str:
    """Routing key of the on-demand profiling requests to ``node``'s network profiler.

    Example::

        >>> profile_key("node1")
        'profile.request.node1'
    """
    return f"profile.request.{check_node(node)}"


def transfer_done_key(node: str) -> str:
    """Routing key of the results of transfers executed by ``node``."""
    return f"transfer.done.{check_node(node)}"


def transfer_progress_key(node: str) -> str:
    """Routing key of the progress events of transfers executed by ``node``.

    Example::

        >>> transfer_progress_key("node1")
        'transfer.progress.node1'
    """
    return f"transfer.progress.{check_node(node)}"


def work_queue(node: str) -> str:
    """Name of the durable work queue of transfer requests for ``node``."""
    return f"jupiter.transfer.{check_node(node)}"
