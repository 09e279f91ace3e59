"""jupiter-bus: an event-driven integration layer for Jupiter's schedulers.

Resource and network-cost events and transfer jobs travel as messages on a bus
(RabbitMQ, or the in-process ``memory://`` bus).

Example::

    from jupiter_bus import JupiterInterface

    async with JupiterInterface("amqp://guest:guest@127.0.0.1/", node="node1") as jupiter:
        costs = await jupiter.get_network_data()
        result = await jupiter.data_transfer("10.0.0.12", "jupiter", None, "/out/a", "/in/a")
"""

from __future__ import annotations

from . import messages
from .errors import (
    AuthError,
    BrokerRefused,
    BrokerUnreachable,
    ConfigError,
    CopyFailure,
    InterfaceClosed,
    InvalidName,
    InvalidRequest,
    InvalidURL,
    JupiterBusError,
    MessageError,
    NoReply,
    NotFound,
    PermissionDenied,
    ProviderError,
    QueueMismatch,
    RemoteError,
    RequestTimeout,
    SealError,
    StaleState,
    StateError,
    StateUnavailable,
    TransferFailed,
    TransferTimeout,
    TransportError,
    UnknownLink,
    UnknownNode,
    Unreachable,
    Unroutable,
)
from .facade import JupiterInterface
from .messages import (
    LinkCost,
    ProfileRequest,
    ProfileResult,
    ResourceSample,
    TransferError,
    TransferProgress,
    TransferRequest,
    TransferResult,
)
from .state import NetworkData, ResourceData
from .transport import Transport, WorkQueueOptions, connect

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BrokerRefused",
    "BrokerUnreachable",
    "ConfigError",
    "CopyFailure",
    "InterfaceClosed",
    "InvalidName",
    "InvalidRequest",
    "InvalidURL",
    "JupiterBusError",
    "JupiterInterface",
    "LinkCost",
    "MessageError",
    "NetworkData",
    "NoReply",
    "NotFound",
    "PermissionDenied",
    "ProfileRequest",
    "ProfileResult",
    "ProviderError",
    "QueueMismatch",
    "RemoteError",
    "RequestTimeout",
    "ResourceData",
    "ResourceSample",
    "SealError",
    "StaleState",
    "StateError",
    "StateUnavailable",
    "TransferError",
    "TransferFailed",
    "TransferProgress",
    "TransferRequest",
    "TransferResult",
    "TransferTimeout",
    "Transport",
    "TransportError",
    "UnknownLink",
    "UnknownNode",
    "Unreachable",
    "Unroutable",
    "WorkQueueOptions",
    "__version__",
    "connect",
    "messages",
]
