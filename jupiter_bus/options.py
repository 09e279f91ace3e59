"""Typed options: frozen dataclasses converted from TOML/CLI mappings, checked on the way in.

An options class is a frozen, slotted dataclass deriving from :class:`Options`; each field
is declared with :func:`option`, which carries its documentation and its limits (bounds,
choices, a syntax check, whether the value is a secret). :func:`convert` builds one from
a mapping (a TOML table, a dict from a test), driven by the fields and their type hints:
``int``, ``float``, ``bool``, ``str``, ``Path``, ``Literal[...]``, ``X | None``,
``list[X]``/``tuple[X, ...]`` and nested options classes (and lists of them). Every
refusal is one :class:`~jupiter_bus.errors.ConfigError` (or the subclass asked for)
naming the field's full path and what was expected, and never echoing a secret::

    providers.transfer.allow_roots: expected a list of paths, got a string ('/data')

Limits are checked on construction too, so options built in Python are held to them.
:func:`describe` lists the fields with their type, default and documentation (what a
configuration reference is generated from).

Example::

    @dataclass(frozen=True, slots=True)
    class ResourceOptions(Options):
        interval: float = option(5.0, doc="seconds between two samples", gt=0, unit="seconds")

    convert(ResourceOptions, {"interval": 2}, path="providers.resources")
    # ResourceOptions(interval=2.0)
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, TypeVar, get_args, get_origin, overload

from .errors import ConfigError
from .topology import MAX_NODE_NAME_CHARS, NODE_NAME_RE

__all__ = [
    "HOST",
    "NODE_NAME",
    "USER_NAME",
    "OptionInfo",
    "OptionSpec",
    "Options",
    "convert",
    "describe",
    "is_host",
    "is_node_name",
    "is_user_name",
    "option",
    "summarize",
]

T = TypeVar("T")
OptionsT = TypeVar("OptionsT", bound="Options")

_SPEC: Final = "jupiter_bus.option"
# RFC 1123 labels, and '_' (common in container and service names, and harmless here).
_HOST_LABEL_RE: Final = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_USER_UNSAFE_RE: Final = re.compile(r"^-|[\s\x00-\x1f\x7f]")


# -- syntax checks used by options of the agent and of providers ----------------------------


def is_node_name(value: str) -> bool:
    """Whether ``value`` is a node name: ``[A-Za-z0-9_-]+``, at most 100 characters.

    Example::

        >>> is_node_name("node-1"), is_node_name("node 1"), is_node_name("n" * 200)
        (True, False, False)
    """
    return len(value) <= MAX_NODE_NAME_CHARS and NODE_NAME_RE.fullmatch(value) is not None


def is_host(value: str) -> bool:
    """Whether ``value`` is an IP address or a DNS host name (RFC 1123 labels, and ``_``).

    Example::

        >>> is_host("10.0.0.12"), is_host("node-1.lab"), is_host("not a host!!")
        (True, True, False)
    """
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        pass
    name = value[:-1] if value.endswith(".") else value
    return 0 < len(name) <= 253 and all(_HOST_LABEL_RE.fullmatch(p) for p in name.split("."))


def is_user_name(value: str) -> bool:
    """Whether ``value`` can be a login name: not empty, no blanks, no leading ``-``.

    Example::

        >>> is_user_name("jupiter"), is_user_name("-oProxyCommand=x")
        (True, False)
    """
    return 0 < len(value) <= 255 and _USER_UNSAFE_RE.search(value) is None


NODE_NAME: Final[Mapping[str, Any]] = {
    "check": is_node_name,
    "expect": f"a node name (letters, digits, '_' and '-'; at most {MAX_NODE_NAME_CHARS} "
    "characters)",
}
"""Limits of an option holding a node name: ``option(doc=..., **NODE_NAME)``."""
HOST: Final[Mapping[str, Any]] = {"check": is_host, "expect": "a host name or IP address"}
"""Limits of an option holding a host name or address."""
USER_NAME: Final[Mapping[str, Any]] = {
    "check": is_user_name,
    "expect": "a user name (no blanks, not starting with '-')",
}
"""Limits of an option holding a login name."""


# -- declaring options -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """What a field of an options class means and which values it takes.

    Bounds (``ge``, ``gt``, ``le``, ``lt``) apply to numbers, and to each item of a list;
    ``min_items`` to a list's length; ``min_length``/``max_length`` to strings;
    ``check`` (with ``expect``, the words for what it wants) to each scalar value.
    ``secret`` values are never shown in an error. ``convert`` replaces the type-driven
    conversion for a field that needs its own (called with the value and its path).

    Example::

        field = dataclasses.fields(TransferOptions)[0]
        field.metadata["jupiter_bus.option"].doc   # 'jobs run at once (...)'
    """

    doc: str
    unit: str | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    min_items: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    check: Callable[[Any], bool] | None = None
    expect: str | None = None
    secret: bool = False
    convert: Callable[[Any, str], Any] | None = None


@overload
def option(default: T, *, doc: str, **limits: Any) -> T: ...
@overload
def option(*, factory: Callable[[], T], doc: str, **limits: Any) -> T: ...
@overload
def option(*, doc: str, **limits: Any) -> Any: ...
def option(
    default: Any = MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    doc: str,
    **limits: Any,
) -> Any:
    """A dataclass field of an options class: its default, documentation and limits.

    ``limits`` are the other fields of :class:`OptionSpec`. No default and no
    ``factory``: the option is required.

    Example::

        concurrency: int = option(4, doc="jobs at once", ge=1, le=65535)
    """
    spec = OptionSpec(doc=doc, **limits)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={_SPEC: spec})
    return dataclasses.field(default=default, metadata={_SPEC: spec})


class Options:
    """Base class of options dataclasses: each field is checked against its spec.

    Subclasses are ``@dataclass(frozen=True, slots=True)`` with :func:`option` fields;
    cross-field rules go in :meth:`check_together`, raising :class:`ConfigError` whose
    message starts with the field's name (the converter puts the path in front).
    """

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            spec = f.metadata.get(_SPEC)
            if spec is not None and spec.convert is None:
                _check_limits(getattr(self, f.name), f.name, _hints(type(self))[f.name], spec)
        self.check_together()

    def check_together(self) -> None:
        """Refuse combinations of values that cannot work together (none by default)."""


def _spec(f: dataclasses.Field[Any]) -> OptionSpec:
    spec = f.metadata.get(_SPEC)
    return spec if isinstance(spec, OptionSpec) else OptionSpec(doc="")


_HINTS: Final[dict[type, dict[str, Any]]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The resolved type hints of an options class (looked up once per class)."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


# -- converting ------------------------------------------------------------------------------


def convert(
    cls: type[OptionsT],
    data: object,
    *,
    path: str = "",
    error: type[ConfigError] = ConfigError,
) -> OptionsT:
    """Build ``cls`` from ``data`` (a mapping; an instance of ``cls`` is returned as is).

    Unknown keys, missing required ones, values of the wrong type or outside their limits
    raise ``error`` naming the field's full path (``path`` is the table's own, e.g.
    ``providers.transfer``).

    Example::

        convert(TransferOptions, {"concurrency": 0}, path="providers.transfer")
        # ConfigError: providers.transfer.concurrency: expected an integer from 1 to 65535, got 0
    """
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise error(f"{path or 'configuration'}: expected a table, got {_got(data, False)}")
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [key for key in data if key not in known]
    if unknown:
        where = f"{path}: no option" if path else "no top-level option"
        raise error(
            f"{where} {', '.join(repr(key) for key in unknown)}; known: {', '.join(sorted(known))}"
        )
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for name, f in known.items():
        here = _join(path, name)
        if name in data:
            values[name] = _value(data[name], hints[name], _spec(f), here, error)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise error(f"{here}: required: expected {_expected(hints[name], _spec(f))}")
    try:
        return cls(**values)
    except ConfigError as exc:
        raise error(_join(path, str(exc))) from None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _optional(hint: Any) -> Any:
    """``X`` for ``X | None``; ``hint`` itself otherwise."""
    if get_origin(hint) in (types.UnionType, typing.Union):
        inner = [a for a in get_args(hint) if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"options of type {hint!r} are not supported")
        return inner[0]
    return hint


def _value(value: Any, hint: Any, spec: OptionSpec, path: str, error: type[ConfigError]) -> Any:
    if spec.convert is not None:
        return spec.convert(value, path)
    if value is None and _optional(hint) is not hint:
        return None
    hint = _optional(hint)
    origin, args = get_origin(hint), get_args(hint)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise error(f"{path}: expected {_expected(hint, spec)}, got {_got(value, spec.secret)}")
        items = [_value(item, args[0], spec, f"{path}[{i}]", error) for i, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if isinstance(hint, type) and issubclass(hint, Options):
        return convert(hint, value, path=path, error=error)
    converted = _scalar(value, hint)
    if converted is None:
        raise error(f"{path}: expected {_expected(hint, spec)}, got {_got(value, spec.secret)}")
    return converted


def _scalar(value: Any, hint: Any) -> Any:
    """``value`` as ``hint`` (a scalar type), or ``None`` when it is not one."""
    if get_origin(hint) is Literal:
        return value if isinstance(value, str) and value in get_args(hint) else None
    if hint is bool:
        return value if type(value) is bool else None
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if hint is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        try:
            number = float(value)
        except OverflowError:
            return None
        return number if math.isfinite(number) else None
    if hint is str:
        return str(value) if isinstance(value, str) else None
    if hint is Path:
        return Path(value) if isinstance(value, str | os.PathLike) and os.fspath(value) else None
    raise TypeError(f"options of type {hint!r} are not supported")


# -- limits ----------------------------------------------------------------------------------


def _check_limits(value: Any, path: str, hint: Any, spec: OptionSpec) -> None:
    """Raise :class:`ConfigError` if ``value`` (already of its type) breaks ``spec``."""
    hint = _optional(hint)
    if value is None or isinstance(value, Options):
        return
    if isinstance(value, list | tuple):
        if spec.min_items is not None and len(value) < spec.min_items:
            got = f"{len(value)} item{'s' * (len(value) != 1)}"
            raise ConfigError(f"{path}: expected {_expected(hint, spec)}, got {got}")
        (item_hint, *_) = get_args(hint) or (Any,)
        for i, item in enumerate(value):
            _check_limits(item, f"{path}[{i}]", item_hint, spec)
        return
    if _fits(value, spec):
        return
    raise ConfigError(f"{path}: expected {_expected(hint, spec)}, got {_got(value, spec.secret)}")


def _fits(value: Any, spec: OptionSpec) -> bool:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if spec.ge is not None and not value >= spec.ge:
            return False
        if spec.gt is not None and not value > spec.gt:
            return False
        if spec.le is not None and not value <= spec.le:
            return False
        if spec.lt is not None and not value < spec.lt:
            return False
    if isinstance(value, str):
        if spec.min_length is not None and len(value) < spec.min_length:
            return False
        if spec.max_length is not None and len(value) > spec.max_length:
            return False
    return spec.check is None or bool(spec.check(value))


# -- words for errors and for the reference --------------------------------------------------


def _expected(hint: Any, spec: OptionSpec, *, plural: bool = False) -> str:
    """What a field takes, in words: ``an integer from 1 to 65535``, ``a list of paths``."""
    hint = _optional(hint)
    origin, args = get_origin(hint), get_args(hint)
    if origin in (list, tuple):
        at_least = f"at least {spec.min_items} " if spec.min_items else ""
        return f"a list of {at_least}{_expected(args[0], spec, plural=True)}"
    if spec.expect is not None:
        return spec.expect
    if origin is Literal:
        return ("values among " if plural else "one of ") + ", ".join(map(repr, args))
    if isinstance(hint, type) and issubclass(hint, Options):
        return "tables" if plural else "a table"
    noun = {
        bool: ("true or false", "booleans"),
        int: ("an integer", "integers"),
        float: ("a number", "numbers"),
        str: ("a string", "strings"),
        Path: ("a path", "paths"),
    }.get(hint, (str(hint), str(hint)))[plural]
    if spec.unit and hint in (int, float):
        noun += f" of {spec.unit}"
    if hint is str and spec.max_length:
        noun += f" of {spec.min_length or 0} to {spec.max_length} characters"
    elif hint is str and spec.min_length == 1:
        noun = "non-empty strings" if plural else "a non-empty string"
    elif hint is str and spec.min_length:
        noun += f" of at least {spec.min_length} characters"
    bounds = _bounds(spec)
    return f"{noun} {bounds}" if bounds else noun


def _bounds(spec: OptionSpec) -> str:
    if spec.ge is not None and spec.le is not None:
        return f"from {spec.ge:g} to {spec.le:g}"
    words = [
        f"{sign} {bound:g}"
        for sign, bound in ((">=", spec.ge), (">", spec.gt), ("<=", spec.le), ("<", spec.lt))
        if bound is not None
    ]
    return " and ".join(words)


def _got(value: Any, secret: bool) -> str:
    """Name what was given, showing it only when it is short and not a secret."""
    if value is None:
        return "nothing (None)"
    if isinstance(value, bool):
        return "a boolean" if secret else f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        if secret:
            return "an integer" if isinstance(value, int) else "a number"
        if isinstance(value, int) and value.bit_length() > 64:
            return "an integer beyond the 64-bit range"
        return repr(value)
    if isinstance(value, str):
        if secret:
            return "a string"
        if len(value) > 40:
            return f"a string of {len(value)} characters"
        return f"a string ({value!r})"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} item{'s' * (len(value) != 1)}"
    if isinstance(value, Mapping):
        return "a table"
    return f"a {type(value).__name__}"


@dataclass(frozen=True, slots=True)
class OptionInfo:
    """One option of an options class, for a reference: ``path``, type, default, meaning."""

    path: str
    expected: str
    default: str
    doc: str
    secret: bool = False


def describe(cls: type[Options], *, path: str = "") -> Iterator[OptionInfo]:
    """Every option of ``cls`` (nested options classes' fields under ``name[]``), in order.

    Example::

        for info in describe(TransferOptions, path="providers.transfer"):
            print(f"{info.path} ({info.expected}, default {info.default}): {info.doc}")
    """
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        spec, hint, here = _spec(f), hints[f.name], _join(path, f.name)
        if f.default is not MISSING:
            default = _show_default(f.default)
        elif f.default_factory is not MISSING:
            default = _show_default(f.default_factory())
        else:
            default = "required"
        yield OptionInfo(here, _expected(hint, spec), default, spec.doc, spec.secret)
        item = get_args(hint)[0] if get_origin(hint) in (list, tuple) else None
        if isinstance(item, type) and issubclass(item, Options):
            yield from describe(item, path=f"{here}[]")


def _show_default(value: Any) -> str:
    """A default as it would be written in TOML (``none`` for no value)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | Path):
        return repr(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show_default(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_show_default(v)}" for k, v in value.items()) + "}"
    return repr(value)


def summarize(options: Options | Mapping[str, Any]) -> str:
    """The values of ``options`` on one line (``name=value, ...``), for logs.

    Secret options are left out (only whether one is set shows, as ``name=(set)``);
    nested options are shown in braces, with their secrets left out the same way.

    Example::

        summarize(convert(ResourceOptions, {"interval": 2}))
        # 'interval=2.0'
    """
    if not isinstance(options, Options):
        return ", ".join(f"{key}={value!r}" for key, value in options.items()) or "defaults"
    shown: list[str] = []
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if _spec(f).secret:
            if value is not None:
                shown.append(f"{f.name}=(set)")
            continue
        shown.append(f"{f.name}={_summary_value(value)}")
    return ", ".join(shown)


def _summary_value(value: Any) -> str:
    if isinstance(value, Options):
        return "{" + summarize(value) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_summary_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_summary_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Path):
        return str(value)
    return repr(value)
