"""The message contract of jupiter-bus: four message types and their one JSON codec.

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
========================  ==========================  ============================

Messages are frozen, slotted dataclasses that validate themselves on construction, so
an invalid message cannot be built, whether it comes from Python code or from the wire.
Every problem is reported as one :class:`~jupiter_bus.errors.MessageError` whose
``field`` names the offending field.

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

import math
import numbers
import operator
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import (
    Any,
    ClassVar,
    Final,
    Literal,
    NoReturn,
    TypeAlias,
    TypeVar,
    get_args,
    overload,
)

import orjson

from .errors import InvalidName, MessageError
from .topology import MAX_NODE_NAME_CHARS, NODE_NAME_RE, check_node

__all__ = [
    "COST_MODELS",
    "ERROR_KINDS",
    "MAX_INT",
    "MAX_NAME_LEN",
    "MAX_NODE_NAME_LEN",
    "MAX_PATH_LEN",
    "MAX_TEXT_LEN",
    "MESSAGE_TYPES",
    "SCHEMA_VERSION",
    "TRANSFER_ENGINES",
    "CostModel",
    "ErrorKind",
    "LinkCost",
    "Message",
    "ResourceSample",
    "TransferEngine",
    "TransferError",
    "TransferRequest",
    "TransferResult",
    "decode",
    "encode",
    "redact",
]

SCHEMA_VERSION: Final = 1
"""The ``v`` written on every body; a reader refuses a higher one."""

MAX_NODE_NAME_LEN: Final = MAX_NODE_NAME_CHARS
"""Longest node name: keeps ``network.<src>.<dst>`` within AMQP's 255-byte routing keys."""
MAX_NAME_LEN: Final = 255
"""Longest host, user name or idempotency key, in characters."""
MAX_PATH_LEN: Final = 4096
"""Longest path or password, in characters."""
MAX_TEXT_LEN: Final = 4096
"""Longest free text (``error.message``), in characters."""
MAX_INT: Final = 2**63 - 1
"""Largest integer accepted in any integer field (signed 64-bit)."""

ErrorKind: TypeAlias = Literal[
    "auth", "unreachable", "not_found", "permission", "timeout", "remote", "invalid"
]
"""Why a transfer failed; the ``error.kind`` of a :class:`TransferResult`."""
ERROR_KINDS: Final[frozenset[str]] = frozenset(get_args(ErrorKind))

CostModel: TypeAlias = Literal["quadratic", "linear", "constrained"]
"""Which fit produced a :class:`LinkCost` (``linear``/``constrained``: a guard fell back)."""
COST_MODELS: Final[frozenset[str]] = frozenset(get_args(CostModel))

TransferEngine: TypeAlias = Literal["sftp", "scp", "openssh-scp", "local"]
"""How a worker copies a file; absent means ``sftp``."""
TRANSFER_ENGINES: Final[frozenset[str]] = frozenset(get_args(TransferEngine))

_UUID_RE: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
# Hosts and user names may reach an argv (the openssh-scp engine): a leading '-' would be
# read as an option there, and blanks or control characters are never meant.
_ARGV_UNSAFE_RE: Final = re.compile(r"^-|[\s\x00-\x1f\x7f]")

_Check: TypeAlias = Callable[[Any, str], Any]


# -- field checks: each takes (value, field name) and returns the normalized value ------


def _describe(value: object) -> str:
    """Name a value's JSON kind for an error message, never echoing its content."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a floating-point number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return f"a {type(value).__name__}"


def _show(value: float) -> str:
    """Format a number for an error message (huge ints would exceed str()'s digit limit)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return "an integer beyond the 64-bit range"
    return repr(value)


def _as_int(value: Any, name: str) -> int:
    """Slow path of :func:`_int_in` for anything that is not exactly an ``int``."""
    if isinstance(value, bool):
        raise MessageError("must be an integer, not a boolean", field=name)
    if isinstance(value, float) and value.is_integer() and abs(value) > MAX_INT:
        # orjson reads integers beyond 64 bits as floats.
        raise MessageError("is too large: must fit in a signed 64-bit integer", field=name)
    if isinstance(value, str | float | list | dict) or value is None:
        raise MessageError(f"must be an integer, got {_describe(value)}", field=name)
    try:
        return operator.index(value)  # int subclasses, numpy integers
    except TypeError:
        raise MessageError(f"must be an integer, got {_describe(value)}", field=name) from None


def _int_in(lo: int, hi: int = MAX_INT) -> _Check:
    def check(value: Any, name: str) -> int:
        if type(value) is not int:
            value = _as_int(value, name)
        if lo <= value <= hi:
            return value  # type: ignore[no-any-return]
        if value > MAX_INT:
            raise MessageError("is too large: must fit in a signed 64-bit integer", field=name)
        if hi == MAX_INT:
            raise MessageError(f"must be at least {lo}, got {_show(value)}", field=name)
        raise MessageError(f"must be between {lo} and {hi}, got {_show(value)}", field=name)

    return check


def _as_float(value: Any, name: str) -> float:
    """Slow path of :func:`_float_in` for anything that is not exactly a ``float``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise MessageError(f"must be a number, got {_describe(value)}", field=name)
    try:
        return float(value)
    except (OverflowError, TypeError, ValueError):
        raise MessageError("must be a finite number within the float range", field=name) from None


def _float_in(lo: float = -math.inf, hi: float = math.inf) -> _Check:
    def check(value: Any, name: str) -> float:
        if type(value) is not float:
            value = _as_float(value, name)
        if lo <= value <= hi and math.isfinite(value):
            return value  # type: ignore[no-any-return]
        if not math.isfinite(value):
            raise MessageError(f"must be a finite number, got {value!r}", field=name)
        if hi == math.inf:
            raise MessageError(f"must be at least {lo}, got {value!r}", field=name)
        raise MessageError(f"must be between {lo} and {hi}, got {value!r}", field=name)

    return check


def _as_str(value: Any, name: str) -> str:
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)  # the plain text of a str subclass (e.g. StrEnum)
    raise MessageError(f"must be a string, got {_describe(value)}", field=name)


def _check_encodable(value: str, name: str) -> None:
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise MessageError("must be valid Unicode (no lone surrogates)", field=name) from None


def _text(max_len: int, *, empty: bool = False, nul: bool = False) -> _Check:
    """A string of at most ``max_len`` characters (never echoed: it may be a secret)."""

    def check(value: Any, name: str) -> str:
        value = _as_str(value, name)
        if not value and not empty:
            raise MessageError("must not be empty", field=name)
        if len(value) > max_len:
            raise MessageError(
                f"is too long ({len(value)} characters; at most {max_len})", field=name
            )
        if not nul and "\x00" in value:
            raise MessageError("must not contain NUL characters", field=name)
        _check_encodable(value, name)
        return value  # type: ignore[no-any-return]

    return check


_name_text: Final = _text(MAX_NAME_LEN)


def _argv_word(value: Any, name: str) -> str:
    """A host or user name: non-empty, no blanks/control characters, no leading '-'."""
    value = _name_text(value, name)
    if _ARGV_UNSAFE_RE.search(value) is not None:
        raise MessageError(
            "must not start with '-' or contain blanks or control characters", field=name
        )
    return value  # type: ignore[no-any-return]


# Node names repeat in every message (1,000 nodes: a million links), so the names seen
# valid are remembered; the set is bounded so that a flood of new names cannot grow it.
_valid_nodes: Final[set[str]] = set()
_VALID_NODES_MAX: Final = 1 << 16


def _node(value: Any, name: str) -> str:
    if type(value) is str:
        if value in _valid_nodes:
            return value
        if len(value) <= MAX_NODE_NAME_LEN and NODE_NAME_RE.fullmatch(value):
            if len(_valid_nodes) >= _VALID_NODES_MAX:
                _valid_nodes.clear()
            _valid_nodes.add(value)
            return value
    value = _as_str(value, name)
    if len(value) > MAX_NODE_NAME_LEN:
        raise MessageError(
            f"node name is too long ({len(value)} characters; at most {MAX_NODE_NAME_LEN})",
            field=name,
        )
    try:
        return check_node(value)
    except InvalidName as exc:
        raise MessageError(str(exc), field=name) from None


def _uuid(value: Any, name: str) -> str:
    if type(value) is str and _UUID_RE.fullmatch(value):
        return value
    value = _as_str(value, name)
    if _UUID_RE.fullmatch(value) is None:
        raise MessageError(
            "must be a UUID string such as 0f8a2d7c-1b2e-4c3d-8e9f-a0b1c2d3e4f5", field=name
        )
    return value  # type: ignore[no-any-return]


def _bool(value: Any, name: str) -> bool:
    if type(value) is bool:
        return value
    raise MessageError(f"must be true or false, got {_describe(value)}", field=name)


def _one_of(choices: frozenset[str]) -> _Check:
    listed = ", ".join(sorted(choices))

    def check(value: Any, name: str) -> str:
        if type(value) is str and value in choices:
            return value
        if isinstance(value, str) and str.__str__(value) in choices:
            return str.__str__(value)
        raise MessageError(f"must be one of {listed}", field=name)

    return check


def _optional(check: _Check) -> _Check:
    def optional(value: Any, name: str) -> Any:
        return None if value is None else check(value, name)

    return optional


_count: Final = _int_in(0)
_port: Final = _int_in(1, 65535)
_percent: Final = _float_in(0.0, 100.0)
_finite: Final = _float_in()
_epoch: Final = _float_in(0.0)
_path: Final = _text(MAX_PATH_LEN)


def _new_id() -> str:
    return str(uuid.uuid4())


# -- the messages --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Envelope:
    """Fields every message carries; validation of every message runs here."""

    MESSAGE_TYPE: ClassVar[str]
    _CHECKS: ClassVar[tuple[tuple[str, _Check], ...]]
    _ENVELOPE: ClassVar[tuple[tuple[str, _Check], ...]] = (("id", _uuid), ("ts", _epoch))

    id: str = field(default_factory=_new_id)
    """UUID string identifying this message (default: a new uuid4)."""
    ts: float = field(default_factory=time.time)
    """When the producer made the message: UTC epoch seconds, the producer's clock."""

    def __post_init__(self) -> None:
        for name, check in self._CHECKS:
            value = getattr(self, name)
            checked = check(value, name)
            if checked is not value:
                object.__setattr__(self, name, checked)
        self._check_together()

    def _check_together(self) -> None:
        """Checks spanning several fields; run after each field passed its own."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceSample(_Envelope):
    """CPU and memory of one node, published on ``resource.<node>``.

    Example::

        >>> s = ResourceSample(node="node1", cpu_percent=37.5, cpu_count=8,
        ...                    memory_percent=41.2, memory_total_bytes=16_777_216_000,
        ...                    memory_available_bytes=9_865_003_008, host="10.0.0.11")
        >>> s.cpu_percent, s.ssh_port is None
        (37.5, True)
    """

    MESSAGE_TYPE: ClassVar[str] = "resource"

    node: str
    """The node measured (``[A-Za-z0-9_-]+``)."""
    cpu_percent: float
    """Whole-machine CPU use, 0-100, averaged over the publication interval."""
    cpu_count: int
    """Logical CPUs, at least 1."""
    memory_percent: float
    """Memory in use, 0-100."""
    memory_total_bytes: int
    memory_available_bytes: int
    host: str | None = None
    """Address at which other nodes reach this node (optional)."""
    ssh_port: int | None = None
    """SSH port at ``host`` (optional, 1-65535)."""

    _CHECKS: ClassVar[tuple[tuple[str, _Check], ...]] = (
        *_Envelope._ENVELOPE,
        ("node", _node),
        ("cpu_percent", _percent),
        ("cpu_count", _int_in(1)),
        ("memory_percent", _percent),
        ("memory_total_bytes", _count),
        ("memory_available_bytes", _count),
        ("host", _optional(_argv_word)),
        ("ssh_port", _optional(_port)),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkCost(_Envelope):
    """Fitted cost of sending a file over the link ``src`` -> ``dst``.

    ``cost_ms = a * x**2 + b * x + c`` with ``x`` the file size in Kbit
    (``x = bytes * 8 / 1000``, Jupiter's convention), fitted over
    ``min_kbit <= x <= max_kbit`` from ``samples`` probes. Published on
    ``network.<src>.<dst>``.

    Example::

        >>> cost = LinkCost(src="node1", dst="node2", a=0.0, b=0.001, c=40.0,
        ...                 samples=10, r2=0.99, min_kbit=8, max_kbit=80000)
        >>> cost.cost_ms(1000.0)
        41.0
        >>> cost.max_kbit
        80000.0
    """

    MESSAGE_TYPE: ClassVar[str] = "network.cost"

    src: str
    dst: str
    a: float
    """Quadratic coefficient, ms per Kbit squared."""
    b: float
    """Linear coefficient, ms per Kbit."""
    c: float
    """Constant term, ms."""
    samples: int
    """Number of probes the fit used (failed probes are not samples)."""
    r2: float
    """Coefficient of determination of the fit (finite; at most 1 for a sane fit)."""
    min_kbit: float
    max_kbit: float
    model: CostModel | None = None
    """``quadratic``, or ``linear``/``constrained`` when a guard fell back; absent: unknown."""

    _CHECKS: ClassVar[tuple[tuple[str, _Check], ...]] = (
        *_Envelope._ENVELOPE,
        ("src", _node),
        ("dst", _node),
        ("a", _finite),
        ("b", _finite),
        ("c", _finite),
        ("samples", _count),
        ("r2", _finite),
        ("min_kbit", _float_in(0.0)),
        ("max_kbit", _float_in(0.0)),
        ("model", _optional(_one_of(COST_MODELS))),
    )

    def _check_together(self) -> None:
        if self.max_kbit < self.min_kbit:
            raise MessageError(
                f"must not be below min_kbit ({self.max_kbit!r} < {self.min_kbit!r})",
                field="max_kbit",
            )

    def cost_ms(self, size_kbit: float) -> float:
        """Predicted transfer time in ms of a file of ``size_kbit`` Kbit.

        Example::

            >>> LinkCost(src="n1", dst="n2", a=1.0, b=0.0, c=2.0, samples=3, r2=1.0,
            ...          min_kbit=0.0, max_kbit=10.0).cost_ms(3.0)
            11.0
        """
        return (self.a * size_kbit + self.b) * size_kbit + self.c


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferRequest(_Envelope):
    """Ask a node's worker to copy ``source`` to ``destination`` on ``user@host:port``.

    Published to exchange ``jupiter.transfers`` with the executing node as routing key.
    ``password`` is optional (absent: the worker's keys/agent) and never shown by
    ``repr()``/``str()``. ``idempotency_key`` defaults to ``id``: a redelivered request
    with the same key is not run twice.

    Example::

        >>> req = TransferRequest(host="10.0.0.12", user="jupiter", password="s3cret",
        ...                       source="/data/out/a.bin", destination="/data/in/a.bin")
        >>> req.port, req.idempotency_key == req.id, "s3cret" in repr(req)
        (22, True, False)
    """

    MESSAGE_TYPE: ClassVar[str] = "transfer.request"

    host: str
    """Host to copy to (name or address; no blanks, no leading ``-``)."""
    port: int = 22
    user: str
    password: str | None = field(default=None, repr=False)
    """Log in with this password only; absent: the worker's own keys. Never logged."""
    source: str
    """Path on the executing node (taken literally; no NUL)."""
    destination: str
    """Path on ``host`` (taken literally; no NUL)."""
    engine: TransferEngine | None = None
    """``sftp`` (when absent), ``scp``, ``openssh-scp`` or ``local``."""
    idempotency_key: str = ""
    """Deduplication key; empty (the default) means the request's ``id``."""
    deadline: float | None = None
    """UTC epoch seconds after which the job is answered ``timeout`` without running."""
    create_dirs: bool = False
    """Create missing destination folders (otherwise a missing folder is ``not_found``)."""

    _CHECKS: ClassVar[tuple[tuple[str, _Check], ...]] = (
        *_Envelope._ENVELOPE,
        ("host", _argv_word),
        ("port", _port),
        ("user", _argv_word),
        ("password", _optional(_text(MAX_PATH_LEN))),
        ("source", _path),
        ("destination", _path),
        ("engine", _optional(_one_of(TRANSFER_ENGINES))),
        ("idempotency_key", _text(MAX_NAME_LEN, empty=True)),
        ("deadline", _optional(_epoch)),
        ("create_dirs", _bool),
    )

    def _check_together(self) -> None:
        if not self.idempotency_key:
            object.__setattr__(self, "idempotency_key", self.id)


@dataclass(frozen=True, slots=True)
class TransferError:
    """Why a transfer failed: the ``error`` object of a failed :class:`TransferResult`.

    ``kind`` is one of :data:`ERROR_KINDS`; ``message`` is for people and never holds
    a secret.

    Example::

        >>> TransferError("auth", "authentication failed for jupiter@10.0.0.12:22").kind
        'auth'
    """

    kind: ErrorKind
    message: str = ""

    def __post_init__(self) -> None:
        kind = _one_of(ERROR_KINDS)(self.kind, "error.kind")
        if kind is not self.kind:
            object.__setattr__(self, "kind", kind)
        message = _error_message(self.message, "error.message")
        if message is not self.message:
            object.__setattr__(self, "message", message)


_error_message: Final = _text(MAX_TEXT_LEN, empty=True, nul=True)


def _error_object(value: Any, name: str) -> TransferError:
    """A :class:`TransferError`, or its wire form ``{"kind": ..., "message": ...}``."""
    if type(value) is TransferError:
        return value
    if type(value) is not dict:
        raise MessageError(
            f"must be an object {{kind, message}}, got {_describe(value)}", field=name
        )
    kind = value.get("kind")
    if kind is None:
        raise MessageError("is missing", field=f"{name}.kind")
    message = value.get("message")
    return TransferError(kind, "" if message is None else message)


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferResult(_Envelope):
    """Outcome of a :class:`TransferRequest`, published on ``transfer.done.<node>``.

    ``error`` is required when ``ok`` is false and must be absent when it is true.

    Example::

        >>> req_id = "9d2f4e61-7a3b-4c8d-9e0f-1a2b3c4d5e6f"
        >>> done = TransferResult(request_id=req_id, node="node1", ok=True,
        ...                       bytes=1_048_576, seconds=0.82, attempts=1)
        >>> failed = TransferResult(request_id=req_id, node="node1", ok=False, bytes=0,
        ...                         seconds=0.31, attempts=1,
        ...                         error=TransferError("auth", "authentication failed"))
        >>> failed.error.kind
        'auth'
    """

    MESSAGE_TYPE: ClassVar[str] = "transfer.result"

    request_id: str
    """``id`` of the request answered."""
    node: str
    """The node that executed (or refused) the transfer."""
    ok: bool
    bytes: int
    """Bytes copied."""
    seconds: float
    """Wall time spent, seconds."""
    attempts: int
    """Attempts made (0 when the job was refused without running)."""
    error: TransferError | None = None

    _CHECKS: ClassVar[tuple[tuple[str, _Check], ...]] = (
        *_Envelope._ENVELOPE,
        ("request_id", _uuid),
        ("node", _node),
        ("ok", _bool),
        ("bytes", _count),
        ("seconds", _float_in(0.0)),
        ("attempts", _count),
        ("error", _optional(_error_object)),
    )

    def _check_together(self) -> None:
        error = self.error
        if not self.ok and error is None:
            raise MessageError("is required when ok is false", field="error")
        if self.ok and error is not None:
            raise MessageError("must be absent when ok is true", field="error")


Message: TypeAlias = ResourceSample | LinkCost | TransferRequest | TransferResult
"""Any message of the contract."""
M = TypeVar("M", ResourceSample, LinkCost, TransferRequest, TransferResult)

MESSAGE_TYPES: Final[dict[str, type[Message]]] = {
    cls.MESSAGE_TYPE: cls for cls in (ResourceSample, LinkCost, TransferRequest, TransferResult)
}
"""The message classes by their wire ``type``."""


_WireField: TypeAlias = tuple[str, bool, Any, _Check]


def _wire_fields(cls: type[Message]) -> tuple[_WireField, ...]:
    """(name, required on the wire, default, check) of each field of ``cls``.

    ``id`` and ``ts`` have defaults in Python but are required on the wire.
    """
    checks = dict(cls._CHECKS)
    return tuple(
        (
            f.name,
            f.name in ("id", "ts") or (f.default is MISSING and f.default_factory is MISSING),
            None if f.default is MISSING else f.default,
            checks[f.name],
        )
        for f in fields(cls)
    )


# A private copy: decode must not follow later edits of the public dict.
_WIRE: Final[dict[str, tuple[type[Message], tuple[_WireField, ...]]]] = {
    name: (cls, _wire_fields(cls)) for name, cls in MESSAGE_TYPES.items()
}
_WIRE_BY_CLASS: Final = {cls: wire for cls, wire in _WIRE.values()}
_NAMES_BY_CLASS: Final = {cls: tuple(f[0] for f in wire) for cls, wire in _WIRE.values()}
# Flags that default to false are omitted while false, like absent optionals.
_FALSE_FLAGS: Final = {
    cls: frozenset(f.name for f in fields(cls) if f.default is False) for cls, _ in _WIRE.values()
}
_set: Final = object.__setattr__


# -- the codec -------------------------------------------------------------------------


def encode(msg: Message) -> bytes:
    """Serialize a message to its JSON body (UTF-8 bytes); absent optionals are omitted.

    Raises :class:`TypeError` for anything that is not a message of the contract.

    Example::

        >>> req = TransferRequest(id="9d2f4e61-7a3b-4c8d-9e0f-1a2b3c4d5e6f", ts=1.5,
        ...                       host="h", user="u", source="/a", destination="/b")
        >>> encode(req)[:60]
        b'{"v":1,"type":"transfer.request","id":"9d2f4e61-7a3b-4c8d-9e'
    """
    names = _NAMES_BY_CLASS.get(type(msg))
    if names is None:
        raise TypeError(f"cannot encode {type(msg).__name__}: not a jupiter-bus message")
    body: dict[str, Any] = {"v": SCHEMA_VERSION, "type": msg.MESSAGE_TYPE}
    false_flags = _FALSE_FLAGS[type(msg)]
    for name in names:
        value = getattr(msg, name)
        if value is not None and not (value is False and name in false_flags):
            body[name] = value
    error = body.get("error")
    if error is not None:
        body["error"] = {"kind": error.kind, "message": error.message}
    return orjson.dumps(body)


@overload
def decode(body: bytes | bytearray | memoryview | str, expected: None = None) -> Message: ...
@overload
def decode(body: bytes | bytearray | memoryview | str, expected: type[M]) -> M: ...
def decode(
    body: bytes | bytearray | memoryview | str, expected: type[Any] | None = None
) -> Message:
    """Parse and validate a JSON body; the only exception raised is :class:`MessageError`.

    Unknown fields are ignored and ``null`` reads as absent. With ``expected``, a body
    of another type is refused (``field="type"``).

    Example::

        >>> body = (b'{"v":1,"type":"transfer.result","id":"c3a1b2d4-5e6f-4a7b-8c9d-'
        ...         b'0e1f2a3b4c5d","ts":1795680100.9,"request_id":"9d2f4e61-7a3b-4c8d-'
        ...         b'9e0f-1a2b3c4d5e6f","node":"node1","ok":true,"bytes":1048576,'
        ...         b'"seconds":0.82,"attempts":1,"extra":"ignored"}')
        >>> decode(body, TransferResult).bytes
        1048576
        >>> decode(body, LinkCost)
        Traceback (most recent call last):
        ...
        jupiter_bus.errors.MessageError: type: expected a 'network.cost' message, got \
'transfer.result'
    """
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:  # also raised for non-bytes/str input
        raise MessageError(f"body is not valid JSON: {exc}") from None
    if type(obj) is not dict:
        raise MessageError(f"body must be a JSON object, got {_describe(obj)}")
    version = obj.get("v")
    if type(version) is not int or version != SCHEMA_VERSION:
        _refuse_version(version)
    type_name = obj.get("type")
    entry = _WIRE.get(type_name) if type(type_name) is str else None
    if entry is None:
        _refuse_type(type_name)
    cls, wire = entry
    if expected is not None and cls is not expected:
        _refuse_expected(expected, cls)
    if cls is LinkCost:
        cost = _link_cost_fast(obj)
        if cost is not None:
            return cost
    return _build(cls, wire, obj)


def _build(cls: type[Message], wire: tuple[_WireField, ...], obj: dict[str, Any]) -> Message:
    """Check each wire field of ``obj`` with the checks of ``__post_init__``, in one pass."""
    msg = object.__new__(cls)
    for name, required, default, check in wire:
        value = obj.get(name)
        if value is not None:
            _set(msg, name, check(value, name))
        elif required:
            raise MessageError("is missing", field=name)
        else:
            _set(msg, name, default)
    msg._check_together()
    return msg


_INF: Final = math.inf


def _link_cost_fast(obj: dict[str, Any]) -> LinkCost | None:
    """Build the common case of a link cost, all fields plainly valid, in one expression.

    Link costs are the bulk of the traffic (about a million links at 1,000 nodes). This
    accepts a subset of what :func:`_build` accepts, giving the same result; anything
    else (ints for floats, names not seen before, any error) returns ``None`` and takes
    the checked path, which also words the error.
    """
    get = obj.get
    id_, ts, src, dst = get("id"), get("ts"), get("src"), get("dst")
    a, b, c, r2 = get("a"), get("b"), get("c"), get("r2")
    samples, min_kbit, max_kbit, model = (
        get("samples"),
        get("min_kbit"),
        get("max_kbit"),
        get("model"),
    )
    if not (
        type(ts) is float
        and type(a) is float
        and type(b) is float
        and type(c) is float
        and type(r2) is float
        and type(min_kbit) is float
        and type(max_kbit) is float
        and type(samples) is int
        and 0.0 <= ts < _INF
        and -_INF < a < _INF
        and -_INF < b < _INF
        and -_INF < c < _INF
        and -_INF < r2 < _INF
        and 0.0 <= min_kbit <= max_kbit < _INF
        and 0 <= samples <= MAX_INT
        and (model is None or (type(model) is str and model in COST_MODELS))
        and type(src) is str
        and src in _valid_nodes
        and type(dst) is str
        and dst in _valid_nodes
        and type(id_) is str
        and _UUID_RE.fullmatch(id_) is not None
    ):
        return None
    cost = object.__new__(LinkCost)
    _set(cost, "id", id_)
    _set(cost, "ts", ts)
    _set(cost, "src", src)
    _set(cost, "dst", dst)
    _set(cost, "a", a)
    _set(cost, "b", b)
    _set(cost, "c", c)
    _set(cost, "samples", samples)
    _set(cost, "r2", r2)
    _set(cost, "min_kbit", min_kbit)
    _set(cost, "max_kbit", max_kbit)
    _set(cost, "model", model)
    return cost


def _refuse_version(version: object) -> NoReturn:
    if version is None:
        raise MessageError(f"is missing: every body carries v={SCHEMA_VERSION}", field="v")
    if type(version) is not int:
        raise MessageError(
            f"must be the integer {SCHEMA_VERSION}, got {_describe(version)}", field="v"
        )
    if version > SCHEMA_VERSION:
        raise MessageError(
            f"version {_show(version)} is newer than this reader understands "
            f"({SCHEMA_VERSION}); upgrade jupiter-bus",
            field="v",
        )
    raise MessageError(f"must be {SCHEMA_VERSION}, got {_show(version)}", field="v")


def _refuse_type(type_name: object) -> NoReturn:
    known = ", ".join(sorted(_WIRE))
    if type(type_name) is str:
        shown = repr(type_name[:64]) + ("..." if len(type_name) > 64 else "")
        raise MessageError(f"unknown message type {shown}; known: {known}", field="type")
    if type_name is None:
        raise MessageError(f"is missing; known types: {known}", field="type")
    raise MessageError(f"must be a string, got {_describe(type_name)}", field="type")


def _refuse_expected(expected: type[Any], cls: type[Message]) -> NoReturn:
    if expected not in _WIRE_BY_CLASS:
        raise TypeError(f"expected must be a message class, not {expected!r}")
    raise MessageError(
        f"expected a {expected.MESSAGE_TYPE!r} message, got {cls.MESSAGE_TYPE!r}", field="type"
    )


# -- dead letters ----------------------------------------------------------------------

_PASSWORD_KEY: Final = "password"
_MISSING: Final = object()
# For bodies that are not JSON: a "password": "..." pair, escaped quotes included.
_PASSWORD_PAIR_RE: Final = re.compile(rb'("password"\s*:\s*)"(?:[^"\\]|\\.)*"?', re.DOTALL)


def redact(body: bytes) -> bytes:
    """Return ``body`` without any ``password``, for a dead-lettered copy. Never raises.

    A JSON body that holds a ``"password"`` key (at any depth) loses it and is
    re-encoded; a body that is not JSON but shows a ``"password": "..."`` pair gets that
    value replaced by ``"<redacted>"``; any other body is returned unchanged. Should
    redaction itself fail, the result is empty rather than a possible leak.

    Example::

        >>> redact(b'{"v":1,"type":"transfer.request","password":"s3cret"}')
        b'{"v":1,"type":"transfer.request"}'
        >>> redact(b'{"password": "s3cret", truncated')
        b'{"password": "<redacted>", truncated'
        >>> redact(b"not json")
        b'not json'
    """
    try:
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            obj = _MISSING
        if obj is not _MISSING:
            if not _strip_passwords(obj):
                return body
            try:
                return orjson.dumps(obj)
            except orjson.JSONEncodeError:
                pass  # deeper than orjson writes: fall back to the textual scrub
        raw = bytes(body)
        if b"password" not in raw:
            return body
        return _PASSWORD_PAIR_RE.sub(rb'\1"<redacted>"', raw)
    except Exception:
        return b""


def _strip_passwords(obj: object) -> bool:
    """Remove ``password`` keys from ``obj`` in place; return whether any was found."""
    found = False
    if isinstance(obj, dict):
        if obj.pop(_PASSWORD_KEY, _MISSING) is not _MISSING:
            found = True
        for value in obj.values():
            found = _strip_passwords(value) or found
    elif isinstance(obj, list):
        for value in obj:
            found = _strip_passwords(value) or found
    return found
