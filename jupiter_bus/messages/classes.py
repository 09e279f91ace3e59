"""The message types of the contract, as frozen dataclasses that check themselves.

A message is validated on construction, so an invalid one cannot be built, whether it
comes from Python code or (through :func:`~jupiter_bus.messages.decode`) from the wire.
Every problem is one :class:`~jupiter_bus.errors.MessageError` whose ``field`` names the
offending field. Each class lists its fields' checks (from :mod:`.fields`) in
``_CHECKS``, in field order; the codec reads the same table.

Example::

    >>> from jupiter_bus.messages.classes import MESSAGE_TYPES, LinkCost
    >>> MESSAGE_TYPES["network.cost"] is LinkCost
    True
    >>> LinkCost(src="node1", dst="node 2", a=0.0, b=0.001, c=40.0,
    ...          samples=10, r2=0.99, min_kbit=8, max_kbit=80000)
    Traceback (most recent call last):
    ...
    jupiter_bus.errors.MessageError: dst: node name 'node 2' is not valid: use letters, \
digits, '_' and '-' only
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, TypeAlias

from ..errors import MessageError
from .fields import (
    COST_MODELS,
    ERROR_KINDS,
    MAX_NAME_LEN,
    MAX_PATH_LEN,
    MAX_TEXT_LEN,
    TRANSFER_ENGINES,
    CostModel,
    ErrorKind,
    TransferEngine,
    _argv_word,
    _bool,
    _Check,
    _count,
    _describe,
    _epoch,
    _finite,
    _float_in,
    _int_in,
    _node,
    _one_of,
    _optional,
    _path,
    _percent,
    _port,
    _text,
    _uuid,
)

__all__ = [
    "MAX_PROFILE_KB",
    "MAX_PROFILE_POINTS",
    "MAX_PROFILE_REPEATS",
    "MAX_PROFILE_SIZES",
    "MESSAGE_TYPES",
    "LinkCost",
    "Message",
    "ProfileRequest",
    "ProfileResult",
    "ResourceSample",
    "TransferError",
    "TransferProgress",
    "TransferRequest",
    "TransferResult",
]

_Checks: TypeAlias = tuple[tuple[str, _Check], ...]


def _new_id() -> str:
    return str(uuid.uuid4())


def _apply_checks(obj: object, checks: _Checks) -> None:
    """Run each field's check on ``obj``, storing the value where the check normalized it."""
    for name, check in checks:
        value = getattr(obj, name)
        checked = check(value, name)
        if checked is not value:
            object.__setattr__(obj, name, checked)


def _nested(prefix: str, check: _Check) -> _Check:
    """``check``, naming the field ``prefix + name`` in errors (a field of a nested object)."""

    def nested(value: Any, name: str) -> Any:
        return check(value, prefix + name)

    return nested


@dataclass(frozen=True, slots=True, kw_only=True)
class _Envelope:
    """Fields every message carries; validation of every message runs here."""

    MESSAGE_TYPE: ClassVar[str]
    _CHECKS: ClassVar[_Checks]
    _ENVELOPE: ClassVar[_Checks] = (("id", _uuid), ("ts", _epoch))

    id: str = field(default_factory=_new_id)
    """UUID string identifying this message (default: a new uuid4)."""
    ts: float = field(default_factory=time.time)
    """When the producer made the message: UTC epoch seconds, the producer's clock."""

    def __post_init__(self) -> None:
        _apply_checks(self, self._CHECKS)
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

    _CHECKS: ClassVar[_Checks] = (
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

    _CHECKS: ClassVar[_Checks] = (
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

    def rate_mbit_per_s(self) -> float | None:
        """The link rate in Mbit/s the fit implies over its measured range, None if none.

        The slope of the curve between ``min_kbit`` and ``max_kbit`` (ms per Kbit, whose
        inverse is Mbit/s): ``1 / b`` alone would ignore ``a``, which a fit over sizes
        100 times apart trades against ``b``. Without a range, ``1 / b``.

        Example::

            >>> LinkCost(src="n1", dst="n2", a=0.0, b=0.05, c=3.0, samples=3, r2=1.0,
            ...          min_kbit=100.0, max_kbit=4000.0).rate_mbit_per_s()
            20.0
        """
        span = self.max_kbit - self.min_kbit
        if span > 0:
            rise = self.cost_ms(self.max_kbit) - self.cost_ms(self.min_kbit)
            return span / rise if rise > 0 else None
        return 1.0 / self.b if self.b > 0 else None


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

    _CHECKS: ClassVar[_Checks] = (
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

    _CHECKS: ClassVar[_Checks] = (
        ("kind", _nested("error.", _one_of(ERROR_KINDS))),
        ("message", _nested("error.", _text(MAX_TEXT_LEN, empty=True, nul=True))),
    )

    def __post_init__(self) -> None:
        _apply_checks(self, self._CHECKS)


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

    _CHECKS: ClassVar[_Checks] = (
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


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferProgress(_Envelope):
    """How far a running transfer got, published on ``transfer.progress.<node>``.

    An event, not a record: workers publish the first once a copy has run
    ``progress_interval`` seconds (a shorter copy has none), then at most one every
    ``progress_interval`` seconds while bytes flow, never after the job's
    :class:`TransferResult`. ``bytes_total`` is absent when the size is
    unknown; ``bytes_done`` may not exceed it.

    Example::

        >>> req_id = "9d2f4e61-7a3b-4c8d-9e0f-1a2b3c4d5e6f"
        >>> TransferProgress(request_id=req_id, node="node1", bytes_done=524_288,
        ...                  bytes_total=1_048_576).bytes_total
        1048576
        >>> TransferProgress(request_id=req_id, node="node1", bytes_done=2, bytes_total=1)
        Traceback (most recent call last):
        ...
        jupiter_bus.errors.MessageError: bytes_done: must not exceed bytes_total (2 > 1)
    """

    MESSAGE_TYPE: ClassVar[str] = "transfer.progress"

    request_id: str
    """``id`` of the request being carried out."""
    node: str
    """The node executing the transfer."""
    bytes_done: int
    """Bytes copied so far."""
    bytes_total: int | None = None
    """Bytes to copy in all (the source's size); absent: unknown."""

    _CHECKS: ClassVar[_Checks] = (
        *_Envelope._ENVELOPE,
        ("request_id", _uuid),
        ("node", _node),
        ("bytes_done", _count),
        ("bytes_total", _optional(_count)),
    )

    def _check_together(self) -> None:
        total = self.bytes_total
        if total is not None and self.bytes_done > total:
            raise MessageError(
                f"must not exceed bytes_total ({self.bytes_done!r} > {total!r})",
                field="bytes_done",
            )


MAX_PROFILE_SIZES: Final = 16
"""Most sizes one :class:`ProfileRequest` may ask for."""
MAX_PROFILE_REPEATS: Final = 10
"""Most repeats of each size one :class:`ProfileRequest` may ask for."""
MAX_PROFILE_KB: Final = 1_000_000
"""Largest probe one :class:`ProfileRequest` may ask for, KB (1 GB)."""
MAX_PROFILE_POINTS: Final = MAX_PROFILE_SIZES * MAX_PROFILE_REPEATS


def _sizes_kb(value: Any, name: str) -> tuple[int, ...]:
    """1 to :data:`MAX_PROFILE_SIZES` probe sizes in KB, each 1 to :data:`MAX_PROFILE_KB`."""
    if type(value) not in (list, tuple) or not 1 <= len(value) <= MAX_PROFILE_SIZES:
        raise MessageError(
            f"must be a list of 1 to {MAX_PROFILE_SIZES} sizes in KB, got {_describe(value)}",
            field=name,
        )
    check = _int_in(1, MAX_PROFILE_KB)
    return tuple(check(item, f"{name}[{i}]") for i, item in enumerate(value))


def _points(value: Any, name: str) -> tuple[tuple[float, float], ...]:
    """Measured ``[size_kbit, cost_ms]`` pairs, both finite and >= 0."""
    if type(value) not in (list, tuple) or len(value) > MAX_PROFILE_POINTS:
        raise MessageError(
            f"must be a list of at most {MAX_PROFILE_POINTS} [size_kbit, cost_ms] pairs, "
            f"got {_describe(value)}",
            field=name,
        )
    check = _float_in(0.0)
    points = []
    for i, pair in enumerate(value):
        if type(pair) not in (list, tuple) or len(pair) != 2:
            raise MessageError(
                f"must be a [size_kbit, cost_ms] pair, got {_describe(pair)}", field=f"{name}[{i}]"
            )
        points.append((check(pair[0], f"{name}[{i}][0]"), check(pair[1], f"{name}[{i}][1]")))
    return tuple(points)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileRequest(_Envelope):
    """Ask node ``src``'s network profiler to measure its link to ``dst`` now.

    A request (with ``reply_to``) on ``profile.request.<src>``; answered by a
    :class:`ProfileResult`. ``sizes_kb`` absent: the profiler's own probe sizes;
    each size is sent ``repeats`` times, one after the other, after one unrecorded
    warm-up. The probes also become samples of the link's running fit.

    Example::

        >>> ProfileRequest(src="node1", dst="node2", sizes_kb=[16, 256, 4096]).sizes_kb
        (16, 256, 4096)
    """

    MESSAGE_TYPE: ClassVar[str] = "profile.request"

    src: str
    """The measuring node (whose worker sends the probes)."""
    dst: str
    """The peer whose link from ``src`` is measured."""
    sizes_kb: tuple[int, ...] | None = None
    """Probe sizes, KB (1000 bytes); absent: the profiler's ``probe_sizes_kb``."""
    repeats: int = 1
    """How often each size is sent (1 to 10)."""

    _CHECKS: ClassVar[_Checks] = (
        *_Envelope._ENVELOPE,
        ("src", _node),
        ("dst", _node),
        ("sizes_kb", _optional(_sizes_kb)),
        ("repeats", _int_in(1, MAX_PROFILE_REPEATS)),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileResult(_Envelope):
    """What one :class:`ProfileRequest` measured: its points and their fit.

    ``points`` are ``(size_kbit, cost_ms)`` of each successful probe of the round;
    ``a``, ``b``, ``c``, ``r2`` and ``model`` are the fit of those points alone
    (present when they span at least three sizes). ``ok`` false: ``reason`` says why
    (unknown peer, every probe failed, ...).

    Example::

        >>> req_id = "9d2f4e61-7a3b-4c8d-9e0f-1a2b3c4d5e6f"
        >>> result = ProfileResult(request_id=req_id, src="node1", dst="node2", ok=True,
        ...                        points=[[128.0, 14.2], [1024.0, 31.0], [4096.0, 92.5]],
        ...                        a=0.0, b=0.0198, c=11.6, r2=0.999, model="linear")
        >>> result.points[0]
        (128.0, 14.2)
    """

    MESSAGE_TYPE: ClassVar[str] = "profile.result"

    request_id: str
    """``id`` of the request answered."""
    src: str
    dst: str
    ok: bool
    points: tuple[tuple[float, float], ...] = ()
    """``(size_kbit, cost_ms)`` of each successful probe, in the order sent."""
    a: float | None = None
    b: float | None = None
    c: float | None = None
    r2: float | None = None
    model: CostModel | None = None
    reason: str | None = None
    """Why the round failed, or which probes did (never a secret)."""

    _CHECKS: ClassVar[_Checks] = (
        *_Envelope._ENVELOPE,
        ("request_id", _uuid),
        ("src", _node),
        ("dst", _node),
        ("ok", _bool),
        ("points", _points),
        ("a", _optional(_finite)),
        ("b", _optional(_finite)),
        ("c", _optional(_finite)),
        ("r2", _optional(_finite)),
        ("model", _optional(_one_of(COST_MODELS))),
        ("reason", _optional(_text(MAX_TEXT_LEN, nul=True))),
    )

    def _check_together(self) -> None:
        if not self.ok and self.reason is None:
            raise MessageError("is required when ok is false", field="reason")
        if self.ok and not self.points:
            raise MessageError("must hold at least one point when ok is true", field="points")

    @property
    def fitted(self) -> bool:
        """Whether the result carries a whole fit (``a``, ``b``, ``c`` and ``r2``)."""
        return None not in (self.a, self.b, self.c, self.r2)


Message: TypeAlias = (
    ResourceSample
    | LinkCost
    | TransferRequest
    | TransferResult
    | TransferProgress
    | ProfileRequest
    | ProfileResult
)
"""Any message of the contract."""

MESSAGE_TYPES: Final[dict[str, type[Message]]] = {
    cls.MESSAGE_TYPE: cls
    for cls in (
        ResourceSample,
        LinkCost,
        TransferRequest,
        TransferResult,
        TransferProgress,
        ProfileRequest,
        ProfileResult,
    )
}
"""The message classes by their wire ``type``."""
