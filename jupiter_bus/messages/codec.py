"""The one JSON codec of the contract (orjson): :func:`encode`, :func:`decode`, :func:`redact`.

:func:`decode` checks every field of a body with the checks its class runs on
construction (``_CHECKS``), in one pass over a table built once per class, and takes a
shortcut for plainly valid link costs, the bulk of the traffic; whatever is wrong with a
body, it raises :class:`~jupiter_bus.errors.MessageError`. :func:`redact` removes
passwords from a body before it is dead-lettered.

Example::

    >>> from jupiter_bus.messages import LinkCost
    >>> cost = LinkCost(src="node1", dst="node2", a=1e-9, b=0.00125, c=42.0,
    ...                 samples=24, r2=0.997, min_kbit=8.0, max_kbit=80000.0)
    >>> decode(encode(cost)) == cost
    True
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, fields
from typing import Any, Final, NoReturn, TypeAlias, TypeVar, overload

import orjson

from ..errors import MessageError
from .classes import (
    MESSAGE_TYPES,
    LinkCost,
    Message,
    ProfileRequest,
    ProfileResult,
    ResourceSample,
    TransferProgress,
    TransferRequest,
    TransferResult,
)
from .fields import _UUID_RE, COST_MODELS, MAX_INT, _Check, _describe, _show, _valid_nodes

__all__ = ["SCHEMA_VERSION", "decode", "encode", "redact"]

SCHEMA_VERSION: Final = 1
"""The ``v`` written on every body; a reader refuses a higher one."""

_M = TypeVar(
    "_M",
    ResourceSample,
    LinkCost,
    TransferRequest,
    TransferResult,
    TransferProgress,
    ProfileRequest,
    ProfileResult,
)


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


def encode(msg: Message) -> bytes:
    """Serialize a message to its JSON body (UTF-8 bytes); absent optionals are omitted.

    Raises :class:`TypeError` for anything that is not a message of the contract.

    Example::

        >>> from jupiter_bus.messages import TransferRequest
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
def decode(body: bytes | bytearray | memoryview | str, expected: type[_M]) -> _M: ...
def decode(
    body: bytes | bytearray | memoryview | str, expected: type[Any] | None = None
) -> Message:
    """Parse and validate a JSON body; the only exception raised is :class:`MessageError`.

    Unknown fields are ignored and ``null`` reads as absent. With ``expected``, a body
    of another type is refused (``field="type"``).

    Example::

        >>> from jupiter_bus.messages import LinkCost, TransferResult
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
# Bound here: CPython 3.11 compiles a method call on an imported name (``_UUID_RE``) to a
# slower attribute load than on a name assigned in this module.
_match_uuid: Final = _UUID_RE.fullmatch


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
        and _match_uuid(id_) is not None
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
