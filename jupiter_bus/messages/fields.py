"""What a field of a message may hold: limits, vocabularies and the checks that enforce them.

A check is a function ``check(value, field_name) -> value`` that returns the value
normalized (e.g. a ``str`` subclass as plain ``str``, a numpy integer as ``int``) or
raises :class:`~jupiter_bus.errors.MessageError` naming the field. The message classes
run them on construction and the codec on decoding, so both refuse the same values with
the same words. An error never echoes a value that could be a secret.

The checks themselves (leading underscore) are private to :mod:`jupiter_bus.messages`,
shared by its modules and by :mod:`jupiter_bus.batch`; the public names here are the
limits and vocabularies of the contract, re-exported by :mod:`jupiter_bus.messages`.

Example::

    >>> from jupiter_bus.messages.fields import MAX_INT, TRANSFER_ENGINES
    >>> MAX_INT == 2**63 - 1, sorted(TRANSFER_ENGINES)
    (True, ['local', 'openssh-scp', 'scp', 'sftp'])
"""

from __future__ import annotations

import math
import numbers
import operator
import re
from collections.abc import Callable
from typing import Any, Final, Literal, NoReturn, TypeAlias, get_args

from ..errors import InvalidName, MessageError
from ..topology import MAX_NODE_NAME_CHARS, NODE_NAME_RE, check_node

__all__ = [
    "COST_MODELS",
    "ERROR_KINDS",
    "MAX_INT",
    "MAX_NAME_LEN",
    "MAX_NODE_NAME_LEN",
    "MAX_PATH_LEN",
    "MAX_TEXT_LEN",
    "TRANSFER_ENGINES",
    "CostModel",
    "ErrorKind",
    "TransferEngine",
]

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
_TOO_LARGE: Final = "is too large: must fit in a signed 64-bit integer"

_Check: TypeAlias = Callable[[Any, str], Any]


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


def _refuse_range(value: float, name: str, lo: float, hi: float, unbounded: bool) -> NoReturn:
    """Raise the error for a number outside ``lo..hi`` (``unbounded``: no upper limit)."""
    if unbounded:
        raise MessageError(f"must be at least {lo}, got {_show(value)}", field=name)
    raise MessageError(f"must be between {lo} and {hi}, got {_show(value)}", field=name)


def _as_int(value: Any, name: str) -> int:
    """Slow path of :func:`_int_in` for anything that is not exactly an ``int``."""
    if isinstance(value, bool):
        raise MessageError("must be an integer, not a boolean", field=name)
    if isinstance(value, float) and value.is_integer() and abs(value) > MAX_INT:
        # orjson reads integers beyond 64 bits as floats.
        raise MessageError(_TOO_LARGE, field=name)
    if isinstance(value, str | float | list | dict) or value is None:
        raise MessageError(f"must be an integer, got {_describe(value)}", field=name)
    try:
        return operator.index(value)  # int subclasses, numpy integers
    except TypeError:
        raise MessageError(f"must be an integer, got {_describe(value)}", field=name) from None


def _int_in(lo: int, hi: int = MAX_INT) -> _Check:
    """An integer in ``lo..hi``; never more than :data:`MAX_INT`."""

    def check(value: Any, name: str) -> int:
        if type(value) is not int:
            value = _as_int(value, name)
        if lo <= value <= hi:
            return value  # type: ignore[no-any-return]
        if value > MAX_INT:
            raise MessageError(_TOO_LARGE, field=name)
        _refuse_range(value, name, lo, hi, hi == MAX_INT)

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
    """A finite number in ``lo..hi``, as a ``float``."""

    def check(value: Any, name: str) -> float:
        if type(value) is not float:
            value = _as_float(value, name)
        if lo <= value <= hi and math.isfinite(value):
            return value  # type: ignore[no-any-return]
        if not math.isfinite(value):
            raise MessageError(f"must be a finite number, got {value!r}", field=name)
        _refuse_range(value, name, lo, hi, hi == math.inf)

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
# The codec's fast path and jupiter_bus.batch read it directly: a name in it is valid.
_valid_nodes: Final[set[str]] = set()
_VALID_NODES_MAX: Final = 1 << 16


def _node(value: Any, name: str) -> str:
    """A node name (``[A-Za-z0-9_-]+``, at most :data:`MAX_NODE_NAME_LEN` characters)."""
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
