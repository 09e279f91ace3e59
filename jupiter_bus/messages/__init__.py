"""The message contract of jupiter-bus: its message types and their one JSON codec.

Every body on the bus is a UTF-8 JSON object with ``v`` (the schema version, 1),
``type``, ``id`` (a UUID string) and ``ts`` (the producer's clock, UTC epoch seconds),
plus the fields of its type (DESIGN section 3; ``docs/messages.md`` for other languages):

========================  ==========================  ============================
``type``                  class                       routing key on jupiter.events
========================  ==========================  ============================
``resource``              :class:`ResourceSample`     ``resource.<node>``
``network.cost``          :class:`LinkCost`           ``network.<src>.<dst>``
``transfer.request``      :class:`TransferRequest`    (``jupiter.transfers``, ``<node>``)
``transfer.result``       :class:`TransferResult`     ``transfer.done.<node>``
``transfer.progress``     :class:`TransferProgress`   ``transfer.progress.<node>``
``profile.request``       :class:`ProfileRequest`     ``profile.request.<src>`` (request)
``profile.result``        :class:`ProfileResult`      (the request's ``reply_to``)
========================  ==========================  ============================

Messages are frozen, slotted dataclasses that validate themselves on construction, so
an invalid message cannot be built, whether it comes from Python code or from the wire.
Every problem is reported as one :class:`~jupiter_bus.errors.MessageError` whose
``field`` names the offending field.

The package follows the seams of the contract: :mod:`.fields` (limits, vocabularies and
the checks of single values), :mod:`.classes` (the message dataclasses) and :mod:`.codec`
(JSON bodies, and :func:`redact` for dead letters). Import from here, where every public
name of the three is re-exported; names with a leading underscore are private to the
package.

Example::

    >>> cost = LinkCost(src="node1", dst="node2", a=1e-9, b=0.00125, c=42.0,
    ...                 samples=24, r2=0.997, min_kbit=8.0, max_kbit=80000.0)
    >>> decode(encode(cost)) == cost
    True
    >>> decode(b'{"v": 2, "type": "network.cost"}')
    Traceback (most recent call last):
    ...
    jupiter_bus.errors.MessageError: v: version 2 is newer than this reader understands (1); \
upgrade jupiter-bus
"""

from __future__ import annotations

from .classes import (
    MAX_PROFILE_KB,
    MAX_PROFILE_POINTS,
    MAX_PROFILE_REPEATS,
    MAX_PROFILE_SIZES,
    MESSAGE_TYPES,
    LinkCost,
    Message,
    ProfileRequest,
    ProfileResult,
    ResourceSample,
    TransferError,
    TransferProgress,
    TransferRequest,
    TransferResult,
)
from .codec import SCHEMA_VERSION, decode, encode, redact
from .fields import (
    COST_MODELS,
    ERROR_KINDS,
    MAX_INT,
    MAX_NAME_LEN,
    MAX_NODE_NAME_LEN,
    MAX_PATH_LEN,
    MAX_TEXT_LEN,
    TRANSFER_ENGINES,
    CostModel,
    ErrorKind,
    TransferEngine,
)

__all__ = [
    "COST_MODELS",
    "ERROR_KINDS",
    "MAX_INT",
    "MAX_NAME_LEN",
    "MAX_NODE_NAME_LEN",
    "MAX_PATH_LEN",
    "MAX_PROFILE_KB",
    "MAX_PROFILE_POINTS",
    "MAX_PROFILE_REPEATS",
    "MAX_PROFILE_SIZES",
    "MAX_TEXT_LEN",
    "MESSAGE_TYPES",
    "SCHEMA_VERSION",
    "TRANSFER_ENGINES",
    "CostModel",
    "ErrorKind",
    "LinkCost",
    "Message",
    "ProfileRequest",
    "ProfileResult",
    "ResourceSample",
    "TransferEngine",
    "TransferError",
    "TransferProgress",
    "TransferRequest",
    "TransferResult",
    "decode",
    "encode",
    "redact",
]
