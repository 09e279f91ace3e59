"""``network.batch``: many link costs in one message, column by column.

The per-link ``network.cost`` event stays the live contract (one routing key per link,
so a subscriber can follow a single link). A batch carries what per-link messages make
slow at scale: an agent's answer to a snapshot request (all its outgoing links at
once) and bulk updates (``network-batch.<node>``, e.g. a whole probe round).

Two encodings of the same fields (docs/messages.md has the byte layout):

- JSON (``application/json``), for any client: ``{"v": 1, "type": "network.batch",
  "id", "ts", "nodes": [names], "src": [i], "dst": [j], "a": [...], "b": [...],
  "c": [...], "link_ts": [...], "samples": [...], "r2": [...], "min_kbit": [...],
  "max_kbit": [...], "model": [name or null]}`` (``model`` optional);
- binary (:data:`BATCH_CONTENT_TYPE`): ``JBNB``, a little-endian ``u32`` header
  length, the JSON header (``v type id ts count names``) padded with spaces to a
  multiple of 8 bytes, the ``names`` bytes of node names (ASCII, ``\n``-separated,
  zero-padded to 8), then the columns as little-endian arrays: ``a b c link_ts``
  float64, ``r2 min_kbit max_kbit`` float32, ``samples src dst`` uint32, ``model``
  uint8 (0 absent, 1 quadratic, 2 linear, 3 constrained). About 57 bytes per link;
  at 1,000 nodes JSON is measured 8x slower to read (bench/facade.py).

A link is ``nodes[src[k]] -> nodes[dst[k]]``; names appear once per batch, sorted, so
nodes with the same peers send the same names block: readers check it and map it to
indexes once per distinct block, not once per message. Every
column is checked at once (numpy): one bad link refuses the whole batch with a
:class:`~jupiter_bus.errors.MessageError` naming the link and the field.

Example::

    batch = LinkBatch.from_costs(costs)             # LinkCost objects
    body = batch.to_binary()                         # or batch.to_json()
    again = decode_batch(body)                       # either encoding
    assert [c.dst for c in again.costs()] == [c.dst for c in costs]
"""

from __future__ import annotations

import math
import struct
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, get_args

import numpy as np
import numpy.typing as npt
import orjson

from .errors import MessageError
from .messages import SCHEMA_VERSION, CostModel, LinkCost
from .messages.fields import _node, _valid_nodes

BATCH_TYPE: Final = "network.batch"
"""Body ``type`` of a batch."""
BATCH_CONTENT_TYPE: Final = "application/vnd.jupiter.network-batch"
"""Content type of the binary encoding."""
BATCH_MAGIC: Final = b"JBNB"
"""First four bytes of the binary encoding."""
MAX_BATCH_LINKS: Final = 1 << 24
"""Most links one batch may carry (16,777,216)."""
MAX_BATCH_NODES: Final = 1 << 20

MODEL_CODES: Final[tuple[CostModel | None, ...]] = (None, *get_args(CostModel))
"""``model`` column codes: index in this tuple (0 = absent)."""
_MODEL_INDEX: Final[dict[str | None, int]] = {name: i for i, name in enumerate(MODEL_CODES)}
_U32_MAX: Final = 2**32 - 1
_F32_MAX: Final = float(np.finfo(np.float32).max)
_HEADER: Final = struct.Struct("<4sI")
_F64: Final = np.dtype("<f8")
_F32: Final = np.dtype("<f4")
_U32: Final = np.dtype("<u4")
_BATCH_MARKER: Final = b'"network.batch"'

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.uint32]


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True, eq=False)
class LinkBatch:
    """Link costs in columns: link ``k`` is ``nodes[src[k]] -> nodes[dst[k]]``.

    Build one with :meth:`from_costs` (checked) or :func:`decode_batch` (checked);
    the arrays are read-only. ``r2``, ``min_kbit`` and ``max_kbit`` are float32 and
    ``samples`` saturates at 2**32-1 (the live state keeps them at that precision).
    """

    nodes: tuple[str, ...]
    src: IndexArray
    dst: IndexArray
    a: FloatArray
    b: FloatArray
    c: FloatArray
    link_ts: FloatArray
    """When each link's fit was made (producer's clock, epoch seconds)."""
    samples: IndexArray
    r2: Float32Array
    min_kbit: Float32Array
    max_kbit: Float32Array
    model: npt.NDArray[np.uint8]
    """Codes into :data:`MODEL_CODES` (0: absent)."""
    id: str = field(default_factory=_new_id)
    ts: float = field(default_factory=time.time)
    """When the batch was made (producer's clock)."""

    def __len__(self) -> int:
        return len(self.a)

    def __repr__(self) -> str:
        return f"<LinkBatch {len(self)} links, {len(self.nodes)} nodes, id={self.id}>"

    # -- building --------------------------------------------------------------------------

    @classmethod
    def from_costs(
        cls, costs: Iterable[LinkCost], *, batch_id: str | None = None, ts: float | None = None
    ) -> LinkBatch:
        """Columns of ``costs`` (already valid :class:`LinkCost` objects), in their order."""
        items = costs if isinstance(costs, list | tuple) else list(costs)
        # Sorted: nodes that see the same peers send the same list, which readers cache.
        ordered = sorted({c.src for c in items} | {c.dst for c in items})
        names = {name: i for i, name in enumerate(ordered)}
        src = np.fromiter((names[c.src] for c in items), dtype=_U32, count=len(items))
        dst = np.fromiter((names[c.dst] for c in items), dtype=_U32, count=len(items))
        floats = np.array(
            [(c.a, c.b, c.c, c.ts, c.r2, c.min_kbit, c.max_kbit) for c in items],
            dtype=np.float64,
        ).reshape(len(items), 7)
        counts = np.fromiter((c.samples for c in items), dtype=np.uint64, count=len(items))
        models = np.fromiter(
            (_MODEL_INDEX[c.model] for c in items), dtype=np.uint8, count=len(items)
        )
        batch = cls(
            nodes=tuple(names),
            src=src,
            dst=dst,
            a=floats[:, 0].copy(),
            b=floats[:, 1].copy(),
            c=floats[:, 2].copy(),
            link_ts=floats[:, 3].copy(),
            samples=np.minimum(counts, _U32_MAX).astype(_U32),
            r2=np.clip(floats[:, 4], -_F32_MAX, _F32_MAX).astype(_F32),
            min_kbit=np.minimum(floats[:, 5], _F32_MAX).astype(_F32),
            max_kbit=np.minimum(floats[:, 6], _F32_MAX).astype(_F32),
            model=models,
            id=batch_id or _new_id(),
            ts=time.time() if ts is None else ts,
        )
        _freeze(batch)
        return batch

    # -- reading ---------------------------------------------------------------------------

    def link_names(self) -> tuple[list[str], list[str]]:
        """``(sources, destinations)``: the names of each link's ends, in order."""
        nodes = self.nodes
        return [nodes[i] for i in self.src.tolist()], [nodes[j] for j in self.dst.tolist()]

    def costs(self) -> Iterator[LinkCost]:
        """Each link as a :class:`LinkCost` (its ``ts`` is the link's ``link_ts``)."""
        sources, destinations = self.link_names()
        columns = zip(
            sources,
            destinations,
            self.a.tolist(),
            self.b.tolist(),
            self.c.tolist(),
            self.link_ts.tolist(),
            self.samples.tolist(),
            self.r2.tolist(),
            self.min_kbit.tolist(),
            self.max_kbit.tolist(),
            self.model.tolist(),
            strict=True,
        )
        for s, d, a, b, c, ts, n, r2, low, high, model in columns:
            yield LinkCost(
                src=s, dst=d, a=a, b=b, c=c, ts=ts, samples=n, r2=r2,
                min_kbit=low, max_kbit=high, model=MODEL_CODES[model],
            )  # fmt: skip

    # -- encoding --------------------------------------------------------------------------

    def _header(self) -> dict[str, Any]:
        return {"v": SCHEMA_VERSION, "type": BATCH_TYPE, "id": self.id, "ts": self.ts}

    def to_binary(self) -> bytes:
        """The binary encoding (content type :data:`BATCH_CONTENT_TYPE`)."""
        names = "\n".join(self.nodes).encode()
        header = self._header()
        header.update(count=len(self), names=len(names))
        text = orjson.dumps(header)
        text += b" " * (-(len(text) + _HEADER.size) % 8)
        parts = [_HEADER.pack(BATCH_MAGIC, len(text)), text, names, bytes(-len(names) % 8)]
        for column, dtype in _binary_columns(self):
            parts.append(np.ascontiguousarray(column, dtype=dtype).tobytes())
        return b"".join(parts)

    def to_json(self) -> bytes:
        """The JSON encoding (``application/json``); ``model`` omitted when all absent."""
        body = self._header()
        body.update(
            nodes=list(self.nodes),
            src=self.src.tolist(),
            dst=self.dst.tolist(),
            a=self.a.tolist(),
            b=self.b.tolist(),
            c=self.c.tolist(),
            link_ts=self.link_ts.tolist(),
            samples=self.samples.tolist(),
            r2=self.r2.tolist(),
            min_kbit=self.min_kbit.tolist(),
            max_kbit=self.max_kbit.tolist(),
        )
        if self.model.any():
            body["model"] = [MODEL_CODES[m] for m in self.model.tolist()]
        return orjson.dumps(body)


def _binary_columns(batch: LinkBatch) -> list[tuple[npt.NDArray[Any], np.dtype[Any]]]:
    return [
        (batch.a, _F64),
        (batch.b, _F64),
        (batch.c, _F64),
        (batch.link_ts, _F64),
        (batch.r2, _F32),
        (batch.min_kbit, _F32),
        (batch.max_kbit, _F32),
        (batch.samples, _U32),
        (batch.src, _U32),
        (batch.dst, _U32),
        (batch.model, np.dtype(np.uint8)),
    ]


_BYTES_PER_LINK: Final = 4 * 8 + 3 * 4 + 3 * 4 + 1


def _freeze(batch: LinkBatch) -> None:
    for column, _ in _binary_columns(batch):
        column.flags.writeable = False


# -- decoding ------------------------------------------------------------------------------


def is_batch(body: bytes | bytearray | memoryview, content_type: str | None = None) -> bool:
    """Whether ``body`` looks like a batch (binary by content type or magic; JSON by type)."""
    if content_type == BATCH_CONTENT_TYPE or bytes(body[:4]) == BATCH_MAGIC:
        return True
    return _BATCH_MARKER in bytes(body)


def decode_batch(body: bytes | bytearray | memoryview) -> LinkBatch:
    """Read a batch in either encoding (binary if it starts with :data:`BATCH_MAGIC`).

    Raises :class:`~jupiter_bus.errors.MessageError` (naming the field, and the link
    for a bad value) and nothing else.
    """
    data = bytes(body)
    if data[:4] == BATCH_MAGIC:
        return _from_binary(data)
    return _from_json(data)


def _load_object(text: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"body is not valid JSON: {exc}") from None
    if type(obj) is not dict:
        raise MessageError(f"body must be a JSON object, got {type(obj).__name__}")
    version = obj.get("v")
    if type(version) is not int or version != SCHEMA_VERSION:
        newer = type(version) is int and version > SCHEMA_VERSION
        raise MessageError(
            f"version {version} is newer than this reader understands ({SCHEMA_VERSION})"
            if newer
            else f"must be the integer {SCHEMA_VERSION}, got {version!r:.40}",
            field="v",
        )
    if obj.get("type") != BATCH_TYPE:
        raise MessageError(f"expected {BATCH_TYPE!r}, got {obj.get('type')!r:.60}", field="type")
    return obj


def _envelope(obj: dict[str, Any]) -> tuple[str, float]:
    batch_id, ts = obj.get("id"), obj.get("ts")
    if not isinstance(batch_id, str) or not 0 < len(batch_id) <= 128:
        raise MessageError("must be a non-empty string (at most 128 characters)", field="id")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not (0 <= ts < math.inf):
        raise MessageError(f"must be epoch seconds >= 0, got {ts!r:.40}", field="ts")
    return batch_id, float(ts)


def _node_names(nodes: Any) -> tuple[str, ...]:
    if not isinstance(nodes, list) or len(nodes) > MAX_BATCH_NODES:
        raise MessageError(f"must be a list of at most {MAX_BATCH_NODES} names", field="nodes")
    try:
        known = _valid_nodes.issuperset(nodes)  # each name is checked once (the codec's cache)
    except TypeError:  # an unhashable name (a list, an object): the loop below refuses it
        known = False
    if not known:
        for k, name in enumerate(nodes):
            try:
                _node(name, "nodes")
            except MessageError as exc:
                raise MessageError(f"node {k}: {exc.reason}", field="nodes") from None
    if len(set(nodes)) != len(nodes):
        raise MessageError("names must not repeat", field="nodes")
    return tuple(nodes)


_NAMES_CACHE: Final[dict[bytes, tuple[str, ...]]] = {}
_NAMES_CACHE_MAX: Final = 64


def _binary_names(block: bytes) -> tuple[str, ...]:
    """The names block, checked once per distinct block (agents repeat theirs)."""
    names = _NAMES_CACHE.get(block)
    if names is None:
        try:
            text = block.decode("ascii")
        except UnicodeDecodeError:
            raise MessageError("names must be ASCII node names", field="names") from None
        names = _node_names(text.split("\n") if text else [])
        if len(_NAMES_CACHE) >= _NAMES_CACHE_MAX:
            _NAMES_CACHE.clear()
        _NAMES_CACHE[block] = names
    return names


def _from_binary(data: bytes) -> LinkBatch:
    if len(data) < _HEADER.size:
        raise MessageError("binary batch is shorter than its header")
    _, header_len = _HEADER.unpack_from(data)
    names_at = _HEADER.size + header_len
    if names_at > len(data):
        raise MessageError(f"header length {header_len} runs past the body ({len(data)} bytes)")
    obj = _load_object(data[_HEADER.size : names_at])
    batch_id, ts = _envelope(obj)
    count, names_len = obj.get("count"), obj.get("names")
    if type(count) is not int or not 0 <= count <= MAX_BATCH_LINKS:
        raise MessageError(f"must be an integer 0..{MAX_BATCH_LINKS}", field="count")
    if type(names_len) is not int or not 0 <= names_len <= len(data) - names_at:
        raise MessageError(
            f"must be the byte length of the names block, got {names_len!r:.20}", field="names"
        )
    nodes = _binary_names(data[names_at : names_at + names_len])
    start = names_at + names_len + (-names_len % 8)
    if len(data) - start != count * _BYTES_PER_LINK:
        raise MessageError(
            f"{count} links need {count * _BYTES_PER_LINK} bytes of columns, "
            f"the body has {len(data) - start}",
            field="count",
        )
    columns: list[npt.NDArray[Any]] = []
    offset = start
    for dtype in (_F64, _F64, _F64, _F64, _F32, _F32, _F32, _U32, _U32, _U32, np.dtype(np.uint8)):
        column = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        offset += column.nbytes
        columns.append(column.astype(dtype.newbyteorder("="), copy=False))
    a, b, c, link_ts, r2, low, high, samples, src, dst, model = columns
    return _checked(nodes, src, dst, a, b, c, link_ts, samples, r2, low, high, model, batch_id, ts)


_JSON_COLUMNS: Final = (
    ("src", np.int64),
    ("dst", np.int64),
    ("a", np.float64),
    ("b", np.float64),
    ("c", np.float64),
    ("link_ts", np.float64),
    ("samples", np.int64),
    ("r2", np.float64),
    ("min_kbit", np.float64),
    ("max_kbit", np.float64),
)


def _json_column(obj: dict[str, Any], name: str, dtype: type[Any], count: int) -> Any:
    values = obj.get(name)
    if not isinstance(values, list):
        raise MessageError("is missing (a list, one entry per link)", field=name)
    if len(values) != count:
        raise MessageError(f"has {len(values)} entries, src has {count}", field=name)
    try:
        column = np.array(values, dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        bad = next((k for k, v in enumerate(values) if isinstance(v, bool | str | None | list)), 0)
        raise MessageError(f"link {bad}: not a number: {values[bad]!r:.40}", field=name) from None
    if column.ndim != 1:
        raise MessageError("must be a flat list of numbers", field=name)
    for k, value in enumerate(values):
        if value is True or value is False:
            raise MessageError(f"link {k}: a boolean is not a number", field=name)
    return column


def _from_json(data: bytes) -> LinkBatch:
    obj = _load_object(data)
    batch_id, ts = _envelope(obj)
    nodes = _node_names(obj.get("nodes"))
    sources = obj.get("src")
    count = len(sources) if isinstance(sources, list) else 0
    if count > MAX_BATCH_LINKS:
        raise MessageError(f"at most {MAX_BATCH_LINKS} links per batch", field="src")
    src, dst, a, b, c, link_ts, samples, r2, low, high = (
        _json_column(obj, name, dtype, count) for name, dtype in _JSON_COLUMNS
    )
    for name, column in (("src", src), ("dst", dst), ("samples", samples)):
        if count and int(column.min()) < 0:
            raise MessageError(f"link {int(np.argmin(column))}: must be >= 0", field=name)
    for name, column in (("src", src), ("dst", dst)):
        if count and int(column.max()) >= len(nodes):
            k = int(np.argmax(column))
            raise MessageError(f"link {k}: no node {int(column[k])} in nodes", field=name)
    models = obj.get("model")
    if models is None:
        model = np.zeros(count, dtype=np.uint8)
    else:
        if not isinstance(models, list) or len(models) != count:
            raise MessageError(f"must be a list of {count} names or nulls", field="model")
        try:
            model = np.fromiter((_MODEL_INDEX[m] for m in models), dtype=np.uint8, count=count)
        except (KeyError, TypeError):
            bad = next(k for k, m in enumerate(models) if m not in _MODEL_INDEX)
            raise MessageError(
                f"link {bad}: unknown model {models[bad]!r:.40}", field="model"
            ) from None
    return _checked(
        nodes,
        src.astype(_U32),
        dst.astype(_U32),
        a,
        b,
        c,
        link_ts,
        np.minimum(samples, _U32_MAX).astype(_U32),
        _float32(r2, "r2"),
        _float32(low, "min_kbit"),
        _float32(high, "max_kbit"),
        model,
        batch_id,
        ts,
    )


def _float32(column: FloatArray, name: str) -> Float32Array:
    if len(column) and not np.all(np.abs(column) <= _F32_MAX):
        k = int(np.argmin(np.abs(column) <= _F32_MAX))
        raise MessageError(f"link {k}: {column[k]!r} is out of float32 range", field=name)
    return column.astype(_F32)


def _first_bad(mask: npt.NDArray[np.bool_], what: str, name: str, column: npt.NDArray[Any]) -> None:
    if not mask.all():
        k = int(np.argmin(mask))
        raise MessageError(f"link {k}: {what}, got {column[k]!r}", field=name)


def _checked(
    nodes: tuple[str, ...],
    src: IndexArray,
    dst: IndexArray,
    a: FloatArray,
    b: FloatArray,
    c: FloatArray,
    link_ts: FloatArray,
    samples: IndexArray,
    r2: Float32Array,
    min_kbit: Float32Array,
    max_kbit: Float32Array,
    model: npt.NDArray[np.uint8],
    batch_id: str,
    ts: float,
) -> LinkBatch:
    """Check every column at once; the first bad link names the field."""
    n = len(nodes)
    if len(src):
        _first_bad(src < n, f"no such node (nodes has {n})", "src", src)
        _first_bad(dst < n, f"no such node (nodes has {n})", "dst", dst)
    for name, column in (("a", a), ("b", b), ("c", c), ("r2", r2)):
        _first_bad(np.isfinite(column), "must be finite", name, column)
    _first_bad(
        np.isfinite(link_ts) & (link_ts >= 0), "must be epoch seconds >= 0", "link_ts", link_ts
    )
    _first_bad(
        np.isfinite(min_kbit) & (min_kbit >= 0), "must be finite and >= 0", "min_kbit", min_kbit
    )
    _first_bad(
        np.isfinite(max_kbit) & (max_kbit >= min_kbit),
        "must be finite, >= min_kbit",
        "max_kbit",
        max_kbit,
    )
    _first_bad(model < len(MODEL_CODES), "unknown model code", "model", model)
    batch = LinkBatch(
        nodes=nodes, src=src, dst=dst, a=a, b=b, c=c, link_ts=link_ts, samples=samples,
        r2=r2, min_kbit=min_kbit, max_kbit=max_kbit, model=model, id=batch_id, ts=ts,
    )  # fmt: skip
    _freeze(batch)
    return batch


__all__: Sequence[str] = (
    "BATCH_CONTENT_TYPE",
    "BATCH_MAGIC",
    "BATCH_TYPE",
    "MAX_BATCH_LINKS",
    "MODEL_CODES",
    "LinkBatch",
    "decode_batch",
    "is_batch",
)
