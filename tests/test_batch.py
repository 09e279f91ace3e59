"""``network.batch``: its two encodings, its checks, and its way into the live state.

A batch carries many link costs in columns (binary or JSON). Agents answer a snapshot
request with one batch of all their links; providers may publish a batch live on
``network-batch.<node>``. What goes in must come out equal (float32 columns within
their precision), a bad batch must be refused naming the link and field, and the
state must end as it would after the same per-link updates.
"""

from __future__ import annotations

import asyncio
import struct
import time
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupiter_bus.agent import SNAPSHOT_REQUEST_KEY, Agent, SnapshotRequest
from jupiter_bus.batch import (
    BATCH_CONTENT_TYPE,
    BATCH_MAGIC,
    MODEL_CODES,
    LinkBatch,
    decode_batch,
)
from jupiter_bus.errors import MessageError, ProviderError
from jupiter_bus.facade import JupiterInterface
from jupiter_bus.messages import LinkCost, ResourceSample, decode, encode
from jupiter_bus.plugins import NodeContext
from jupiter_bus.receive import decode_event
from jupiter_bus.state import NetworkState
from jupiter_bus.topology import (
    DEAD_EXCHANGE,
    ERROR_HEADER,
    EVENTS_EXCHANGE,
    network_batch_key,
    network_key,
    resource_key,
)
from jupiter_bus.transport import Envelope, Transport

WAIT = 10.0


def cost(src: str, dst: str, c: float = 40.0, ts: float | None = None, **extra: Any) -> LinkCost:
    fields: dict[str, Any] = {
        "a": 1e-9,
        "b": 0.002,
        "samples": 10,
        "r2": 0.99,
        "min_kbit": 8.0,
        "max_kbit": 8e4,
        **extra,
    }
    return LinkCost(src=src, dst=dst, c=c, ts=time.time() if ts is None else ts, **fields)


def f32(value: float) -> float:
    return float(np.float32(value))


def as_tuple(c: LinkCost) -> tuple[Any, ...]:
    """What a batch keeps of a link cost (float32 columns at their precision)."""
    return (
        c.src, c.dst, c.a, c.b, c.c, c.ts, min(c.samples, 2**32 - 1),
        f32(c.r2), f32(c.min_kbit), f32(c.max_kbit), c.model,
    )  # fmt: skip


names = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
finite = st.floats(-1e30, 1e30, allow_nan=False)
link_costs = st.builds(
    lambda src, dst, a, b, c, ts, n, r2, low, span, model: LinkCost(
        src=src,
        dst=dst,
        a=a,
        b=b,
        c=c,
        ts=ts,
        samples=n,
        r2=r2,
        min_kbit=low,
        max_kbit=low + span,
        model=model,
    ),
    names,
    names,
    finite,
    finite,
    finite,
    st.floats(0, 4e9),
    st.integers(0, 2**40),
    st.floats(-1e30, 1.0),
    st.floats(0, 1e30),
    st.floats(0, 1e30),
    st.sampled_from(MODEL_CODES),
)


# -- the codec -------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(link_costs, max_size=40))
def test_both_encodings_give_back_every_link(costs: list[LinkCost]) -> None:
    batch = LinkBatch.from_costs(costs, batch_id="b1", ts=12.5)
    for body in (batch.to_binary(), batch.to_json()):
        again = decode_batch(body)
        assert (again.id, again.ts, len(again)) == ("b1", 12.5, len(costs))
        assert [as_tuple(c) for c in again.costs()] == [as_tuple(c) for c in costs]


def test_the_binary_layout_is_the_documented_one() -> None:
    """Magic, u32 header length, JSON header padded to 8 bytes, the names (sorted, one per
    line, zero-padded to 8 bytes), then the columns."""
    costs = [cost("n3", "n2", c=5.0, ts=100.0), cost("n3", "n1", c=6.0, ts=101.0, model="linear")]
    body = LinkBatch.from_costs(costs, batch_id="x", ts=1.0).to_binary()
    magic, header_len = struct.unpack_from("<4sI", body)
    assert magic == BATCH_MAGIC == b"JBNB"
    assert (8 + header_len) % 8 == 0
    header = orjson.loads(body[8 : 8 + header_len])
    assert header == {"v": 1, "type": "network.batch", "id": "x", "ts": 1.0, "count": 2, "names": 8}
    names_at = 8 + header_len
    assert body[names_at : names_at + 8] == b"n1\nn2\nn3"  # 8 bytes: no padding
    columns = body[names_at + 8 :]
    assert len(columns) == 2 * (4 * 8 + 3 * 4 + 3 * 4 + 1)
    c_column = struct.unpack_from("<2d", columns, 2 * 2 * 8)
    assert c_column == (5.0, 6.0)
    src_dst = struct.unpack_from("<4I", columns, 2 * (4 * 8 + 3 * 4) + 2 * 4)
    assert src_dst == (2, 2, 1, 0)  # src column then dst column, indexes into the names
    assert columns[-2:] == bytes([0, MODEL_CODES.index("linear")])


def test_json_batches_from_any_client_are_read() -> None:
    body = orjson.dumps(
        {
            "v": 1, "type": "network.batch", "id": "j", "ts": 5, "nodes": ["a", "b"],
            "src": [0, 1], "dst": [1, 0], "a": [0, 0], "b": [0.5, 0.25], "c": [1, 2],
            "link_ts": [3, 4], "samples": [3, 4], "r2": [1, 0.5],
            "min_kbit": [0, 1], "max_kbit": [10, 20], "model": [None, "quadratic"],
            "unknown": "ignored",
        }
    )  # fmt: skip
    links = list(decode_batch(body).costs())
    assert [(c.src, c.dst, c.b, c.c, c.ts, c.model) for c in links] == [
        ("a", "b", 0.5, 1.0, 3.0, None),
        ("b", "a", 0.25, 2.0, 4.0, "quadratic"),
    ]


def _json_batch(**change: Any) -> bytes:
    body = orjson.loads(LinkBatch.from_costs([cost("a", "b"), cost("a", "c")]).to_json())
    for key, value in change.items():
        if value is None:
            del body[key]
        else:
            body[key] = value
    return orjson.dumps(body)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"v": 2}, "v", "newer"),
        ({"type": "network.cost"}, "type", "expected 'network.batch'"),
        ({"nodes": ["a", "b", "b"]}, "nodes", "repeat"),
        ({"nodes": ["a", "b c", "d"]}, "nodes", "node 1"),
        ({"c": [1.0]}, "c", "has 1 entries"),
        ({"b": [0.1, "x"]}, "b", "link 1"),
        ({"a": [0.0, True]}, "a", "link 1: a boolean"),
        ({"dst": [1, 7]}, "dst", "link 1: no node 7"),
        ({"src": [-1, 0]}, "src", "link 0: must be >= 0"),
        ({"max_kbit": [1.0, 2.0], "min_kbit": [0.0, 3.0]}, "max_kbit", "link 1"),
        ({"r2": [1e300, 0.0]}, "r2", "link 0"),
        ({"model": ["quadratic", "cubic"]}, "model", "link 1: unknown model"),
        ({"link_ts": None}, "link_ts", "is missing"),
        ({"id": ""}, "id", "non-empty"),
    ],
)
def test_a_bad_json_batch_is_refused_naming_the_field_and_link(
    change: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(MessageError) as caught:
        decode_batch(_json_batch(**change))
    assert caught.value.field == field
    assert words in caught.value.reason


def _binary(fields: dict[str, Any], rest: bytes = b"") -> bytes:
    header = orjson.dumps({"v": 1, "type": "network.batch", "id": "x", "ts": 1.0, **fields})
    header += b" " * (-len(header) % 8)
    return b"JBNB" + struct.pack("<I", len(header)) + header + rest


def test_a_bad_binary_batch_is_refused() -> None:
    good = LinkBatch.from_costs([cost("a", "b"), cost("a", "c")]).to_binary()
    header_len = struct.unpack_from("<I", good, 4)[0]
    start = 8 + header_len + 8  # "a\nb\nc" and its padding
    bad_name = bytearray(good)
    bad_name[8 + header_len + 2] = ord("*")
    nan_c = bytearray(good)
    struct.pack_into("<d", nan_c, start + 2 * 2 * 8 + 8, float("nan"))  # c of link 1
    bad_index = bytearray(good)
    struct.pack_into("<I", bad_index, start + 2 * (4 * 8 + 3 * 4) + 2 * 2 * 4, 9)  # dst, link 0
    cases = {
        "short": (good[:6], None, "shorter than its header"),
        "header": (good[:8] + b"{", None, "runs past"),
        "truncated": (good[:-1], "count", "need"),
        "nan": (bytes(nan_c), "c", "link 1: must be finite"),
        "index": (bytes(bad_index), "dst", "link 0: no such node"),
        "name": (bytes(bad_name), "nodes", "node 1"),
        "names": (_binary({"count": 0, "names": 10**6}), "names", "byte length"),
        "ascii": (_binary({"count": 0, "names": 2}, b"\xff\xfe"), "names", "ASCII"),
    }
    for label, (body, field, words) in cases.items():
        with pytest.raises(MessageError) as caught:
            decode_batch(body)
        assert (caught.value.field, words in caught.value.reason) == (field, True), label


def test_events_are_told_apart_by_content_type_magic_or_type() -> None:
    batch = LinkBatch.from_costs([cost("a", "b")])
    binary = Envelope(
        body=batch.to_binary(), exchange="x", routing_key="k", content_type=BATCH_CONTENT_TYPE
    )
    untyped = Envelope(body=batch.to_binary(), exchange="x", routing_key="k")
    json_batch = Envelope(body=batch.to_json(), exchange="x", routing_key="k")
    single = Envelope(body=encode(cost("a", "b")), exchange="x", routing_key="k")
    assert all(isinstance(decode_event(e), LinkBatch) for e in (binary, untyped, json_batch))
    assert isinstance(decode_event(single), LinkCost)
    with pytest.raises(MessageError, match="unknown"):
        decode_event(
            Envelope(
                body=b'{"v":1,"type":"no.such","id":"x","ts":1}', exchange="x", routing_key="k"
            )
        )


# -- the state -------------------------------------------------------------------------------


def test_a_batch_leaves_the_state_as_the_same_per_link_updates_do() -> None:
    nodes = [f"n{i:02d}" for i in range(40)]  # grows past the initial capacity; sorted
    costs = [
        cost(s, d, c=float(k)) for k, (s, d) in enumerate((s, d) for s in nodes for d in nodes)
    ]
    costs += [cost("n01", "n02", c=-1.0)]  # a repeat: the later one wins
    one_by_one, batched = NetworkState(), NetworkState()
    for c in costs:
        one_by_one.apply(c, received_at=7.0)
    assert batched.apply_batch(LinkBatch.from_costs(costs), received_at=7.0) == len(costs) - 1
    left, right = one_by_one.snapshot(), batched.snapshot()
    assert left.nodes == right.nodes
    assert left.link_count == right.link_count == 1600
    for name in ("params", "ts", "samples", "r2", "min_kbit", "max_kbit", "valid", "received_at"):
        np.testing.assert_array_equal(getattr(left, name), getattr(right, name), err_msg=name)
    assert right.link("n01", "n02").c == -1.0


def test_newer_only_keeps_what_is_at_least_as_new_and_adds_the_rest() -> None:
    state = NetworkState()
    state.apply(cost("a", "b", c=2.0, ts=200.0))
    state.apply(cost("a", "c", c=2.0, ts=100.0))
    before = state.snapshot()
    answer = LinkBatch.from_costs(
        [
            cost("a", "b", c=1.0, ts=150.0),
            cost("a", "c", c=1.0, ts=150.0),
            cost("a", "d", c=1.0, ts=1),
        ]
    )
    assert state.apply_batch(answer, newer_only=True) == 2
    after = state.snapshot()
    assert [after.link("a", x).c for x in "bcd"] == [2.0, 1.0, 1.0]
    assert before.link("a", "c").c == 2.0  # a snapshot taken earlier is never changed
    assert not before.has_link("a", "d")
    assert state.held_ts("a", "c") == 150.0
    assert state.held_ts("a", "zz") is None
    version = state.version
    assert state.apply_batch(answer, newer_only=True) == 0
    assert state.version == version  # nothing applied, nothing announced
    assert state.apply_batch(LinkBatch.from_costs([cost("e", "a", ts=0.0)])) == 1


# -- providers and agents --------------------------------------------------------------------


async def test_a_node_publishes_only_its_own_links_in_a_batch(transport: Transport) -> None:
    context = NodeContext("me", transport)
    with pytest.raises(ProviderError, match="links of 'other'"):
        await context.publish_links([cost("me", "a"), cost("other", "a")])
    await context.publish_links([cost("me", "a", c=1.0), cost("me", "b", c=2.0)])
    await context.publish_event(resource_key("me"), encode(_sample("me")))
    batched = context.snapshot_bodies(batch=True)
    assert [content_type for _, content_type in batched] == [BATCH_CONTENT_TYPE, "application/json"]
    assert [(c.dst, c.c) for c in decode_batch(batched[0][0]).costs()] == [("a", 1.0), ("b", 2.0)]
    one_by_one = {decode(body).id for body, _ in context.snapshot_bodies(batch=False)}
    assert len(one_by_one) == 3
    assert set(context.last_events()) == {
        resource_key("me"),
        network_key("me", "a"),
        network_key("me", "b"),
    }
    await context.publish_event(network_key("me", "a"), encode(cost("me", "a", c=9.0)))
    assert context.forget_event(network_key("me", "b"))
    links_body, _ = context.snapshot_bodies(batch=True)[0]
    assert [(c.dst, c.c) for c in decode_batch(links_body).costs()] == [("a", 9.0)]


def _sample(node: str) -> ResourceSample:
    return ResourceSample(
        node=node, cpu_percent=5.0, cpu_count=2, memory_percent=10.0,
        memory_total_bytes=1000, memory_available_bytes=900,
    )  # fmt: skip


async def test_a_plain_snapshot_request_still_gets_one_message_per_link(
    transport: Transport, unique: str
) -> None:
    """Clients that do not ask for batches (``batch`` absent) keep the per-link answers."""
    node = f"pl-{unique}"
    agent = Agent(node, transport, {}, grace=2)
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.started(), WAIT)
        assert agent.context is not None
        await agent.context.publish_links([cost(node, f"x{i}-{unique}") for i in range(3)])
        async with transport.subscribe([f"nothing.{unique}"]) as feed:
            for batch, expected in ((False, 3), (True, 1)):
                await transport.publish(
                    EVENTS_EXCHANGE,
                    SNAPSHOT_REQUEST_KEY,
                    SnapshotRequest.body(batch=batch),
                    reply_to=feed.name,
                    correlation_id=f"{unique}-{batch}",
                )
                got: list[Envelope] = []
                async with asyncio.timeout(WAIT):
                    while len(got) < expected:
                        envelope = await anext(feed)
                        if envelope.correlation_id == f"{unique}-{batch}":
                            got.append(envelope)
                kinds = [type(decode_event(e)).__name__ for e in got]
                assert kinds == (["LinkBatch"] if batch else ["LinkCost"] * 3)
    finally:
        agent.stop()
        await asyncio.wait_for(task, WAIT)


# -- the facade ------------------------------------------------------------------------------


async def test_the_facade_applies_live_batches_and_dead_letters_bad_ones(
    transport: Transport, bus_url: str, unique: str
) -> None:
    src = f"lb-{unique}"
    peers = [f"p{i}-{unique}" for i in range(5)]
    async with (
        transport.subscribe(["#"], exchange=DEAD_EXCHANGE) as dead,
        JupiterInterface(bus_url, snapshot=False) as bus,
    ):
        watch = bus.watch_network(src=src)
        await transport.publish(
            EVENTS_EXCHANGE, network_batch_key(src), b"JBNB\x00\x00", message_id=f"bad-{unique}",
            content_type=BATCH_CONTENT_TYPE,
        )  # fmt: skip
        context = NodeContext(src, transport)
        await context.publish_links([cost(src, p, c=float(i)) for i, p in enumerate(peers)])
        data = await bus.get_network_data(links=[(src, p) for p in peers], timeout=WAIT)
        async with asyncio.timeout(WAIT):
            while (letter := await anext(dead)).message_id != f"bad-{unique}":
                pass
            seen = [await anext(watch) for _ in peers]
        await watch.aclose()
    assert [data.link(src, p).c for p in peers] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert "shorter than its header" in str(letter.headers[ERROR_HEADER])
    assert [c.dst for c in seen] == peers
