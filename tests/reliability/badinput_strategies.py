"""Hypothesis strategies for bad input: bodies and AMQP properties nobody should trust.

Bodies: random bytes, non-UTF-8, JSON of the wrong shape, valid-looking messages with one
field mutated, a higher ``v``, an unknown ``type``, huge numbers, NaN, deep nesting, very
long strings, truncated or corrupted binary ``network.batch`` bodies. Properties: content
types, headers of every type AMQP carries, correlation ids, ``reply_to`` and message ids.
"""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
from typing import Any

import orjson
from hypothesis import strategies as st

from jupiter_bus.batch import BATCH_CONTENT_TYPE, LinkBatch
from jupiter_bus.messages import LinkCost, ResourceSample, TransferRequest, TransferResult, encode
from jupiter_bus.snapshot import SnapshotRequest

SECRET = "hunter2-bad-input-secret"
"""The password in every valid-looking transfer request: it must never reach a dead letter."""

_ID = "9d2f4e61-7a3b-4c8d-9e0f-1a2b3c4d5e6f"
_COST = LinkCost(
    src="bi-a", dst="bi-b", a=1e-9, b=0.01, c=3.0, samples=9, r2=0.9, min_kbit=8.0, max_kbit=800.0
)
_BATCH = LinkBatch.from_costs(
    [_COST, LinkCost(src="bi-b", dst="bi-a", a=0.0, b=0.02, c=1.0, samples=5, r2=0.8,
                     min_kbit=8.0, max_kbit=80.0)]
)  # fmt: skip
BATCH_BINARY = _BATCH.to_binary()
VALID_BODIES: tuple[bytes, ...] = (
    encode(_COST),
    encode(
        ResourceSample(
            node="bi-n",
            cpu_percent=5.0,
            cpu_count=4,
            memory_percent=10.0,
            memory_total_bytes=1 << 30,
            memory_available_bytes=1 << 29,
            host="127.0.0.1",
        )
    ),
    encode(TransferRequest(host="h", user="u", password=SECRET, source="/a", destination="/b")),
    encode(TransferResult(request_id=_ID, node="bi-n", ok=True, bytes=1, seconds=0.1, attempts=1)),
    _BATCH.to_json(),
    SnapshotRequest.body(batch=True),
)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
_extremes = st.sampled_from(
    [10**30, -(10**30), 2**64, 2**63, -1, 0, 1e308, -1e308, 5e-324, "", "x" * 100_000, [], {},
     True, "../../etc/passwd", "\u0000", "\udcff"[:0] + "é" * 50, [[[[[]]]]]]
)  # fmt: skip


def _dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # a > 64-bit integer: valid JSON all the same, as other languages write it
        return json.dumps(obj).encode()


def _long_body() -> bytes:
    return b'{"v":1,"type":"resource","note":"' + b"z" * 1_000_000 + b'"}'


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid body of the contract with one field removed or given another value."""
    obj = orjson.loads(draw(st.sampled_from(VALID_BODIES)))
    key = draw(st.sampled_from([*sorted(obj), "v", "type"]))
    action = draw(st.sampled_from(["value", "extreme", "drop", "huge-int", "nan"]))
    if action == "drop":
        obj.pop(key, None)
        return orjson.dumps(obj)
    if action == "huge-int":
        text = orjson.dumps({**obj, key: 0}).decode()
        return text.replace(f'"{key}":0', f'"{key}":{"9" * draw(st.integers(20, 5000))}').encode()
    if action == "nan":
        token = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400"]))
        text = orjson.dumps({**obj, key: 0}).decode()
        return text.replace(f'"{key}":0', f'"{key}":{token}').encode()
    obj[key] = draw(json_values if action == "value" else _extremes)
    return _dumps(obj)


@st.composite
def corrupted_batch(draw: st.DrawFn) -> bytes:
    """The binary ``network.batch`` encoding, truncated and/or with bytes overwritten."""
    body = bytearray(BATCH_BINARY[: draw(st.integers(0, len(BATCH_BINARY)))])
    for _ in range(draw(st.integers(0 if len(body) < len(BATCH_BINARY) else 1, 6))):
        if body:
            body[draw(st.integers(0, len(body) - 1))] = draw(st.integers(0, 255))
    return bytes(body)


def _deep(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


bodies = st.one_of(
    st.binary(max_size=300),
    st.binary(min_size=1, max_size=64).map(lambda b: b"\xff\xfe" + b),  # never UTF-8
    json_values.map(_dumps),  # JSON, hardly ever an object of the contract
    mutated(),
    mutated(),
    corrupted_batch(),
    st.integers(1, 3000).flatmap(
        lambda d: st.sampled_from(["list", "dict"]).map(lambda k: _deep(d, k))
    ),
    st.sampled_from(VALID_BODIES).map(lambda b: orjson.dumps({**orjson.loads(b), "v": 2})),
    st.text(min_size=1, max_size=20).map(
        lambda t: orjson.dumps({"v": 1, "type": t, "id": _ID, "ts": 1.0})
    ),
    st.builds(_long_body),
)
"""Bodies of every kind of bad (some happen to be valid: tests sort them with the readers)."""

_short = st.text(max_size=40).filter(lambda s: len(s.encode()) <= 255)
header_values = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=50),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(-3e38, 3e38),  # beyond: refused by publish, tested apart
    st.booleans(),
    st.none(),
    st.lists(st.integers(-1000, 1000), max_size=4),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    st.decimals(min_value=-1000, max_value=1000, places=2, allow_nan=False),
    st.datetimes(min_value=datetime.datetime(1970, 1, 2), max_value=datetime.datetime(2100, 1, 1)),
)
headers = st.dictionaries(
    st.text(min_size=1, max_size=20).filter(lambda s: len(s.encode()) <= 128),
    header_values,
    max_size=5,
)
content_types = st.one_of(
    st.just("application/json"),
    st.just(BATCH_CONTENT_TYPE),
    st.just(""),
    _short,
)
properties = st.fixed_dictionaries(
    {
        "content_type": content_types,
        "headers": headers,
        "correlation_id": st.none() | _short,
        "reply_to": st.none() | _short,
        "message_id": st.none() | _short | st.just(str(uuid.uuid4())),
    }
)
"""Keyword arguments for :meth:`Transport.publish`, headers of any AMQP type."""


def normalise_headers(values: dict[str, Any]) -> dict[str, Any]:
    """Header values RabbitMQ carries as given (aio-pika refuses naive datetimes' micros)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, datetime.datetime):
            value = value.replace(microsecond=0)
        if isinstance(value, decimal.Decimal) and not value.is_finite():
            continue
        if isinstance(value, bytes):
            value = bytearray(value)  # AMQP's byte array, as aio-pika writes it
        out[key] = value
    return out
