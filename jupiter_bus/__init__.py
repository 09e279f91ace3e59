"""jupiter-bus: an event-driven integration layer for Jupiter's schedulers.

Resource and network-cost events and transfer jobs travel as messages on a bus
(RabbitMQ, or the in-process ``memory://`` bus).

Example::

    from jupiter_bus import connect, messages

    bus = await connect("memory://demo")
"""

from __future__ import annotations

from . import messages
from .errors import (
    InvalidName,
    InvalidURL,
    JupiterBusError,
    MessageError,
    RequestTimeout,
    TransportError,
    Unroutable,
)
from .messages import LinkCost, ResourceSample, TransferError, TransferRequest, TransferResult
from .transport import Transport, WorkQueueOptions, connect

__version__ = "0.1.0"

__all__ = [
    "InvalidName",
    "InvalidURL",
    "JupiterBusError",
    "LinkCost",
    "MessageError",
    "RequestTimeout",
    "ResourceSample",
    "TransferError",
    "TransferRequest",
    "TransferResult",
    "Transport",
    "TransportError",
    "Unroutable",
    "WorkQueueOptions",
    "__version__",
    "connect",
    "messages",
]
