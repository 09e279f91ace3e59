"""The snapshot protocol on its own: one module below both the node agent and the facade."""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
import time
from pathlib import Path

from jupiter_bus import snapshot
from jupiter_bus.batch import BATCH_CONTENT_TYPE, decode_batch
from jupiter_bus.messages import LinkCost, decode, encode
from jupiter_bus.snapshot import LastValues, SnapshotResponder, ask, superseded
from jupiter_bus.topology import network_key
from jupiter_bus.transport import JSON_CONTENT_TYPE, Transport

WAIT = 10.0
ROOT = Path(__file__).resolve().parents[1]


def cost(src: str, dst: str, c: float = 40.0) -> LinkCost:
    return LinkCost(
        src=src, dst=dst, a=0.0, b=0.002, c=c, samples=10, r2=0.99,
        min_kbit=8.0, max_kbit=8e4, ts=time.time(),
    )  # fmt: skip


def test_the_facade_does_not_import_the_node_agent() -> None:
    """A scheduler process loads the snapshot protocol, not the agent and its plugins."""
    code = (
        "import sys, jupiter_bus.facade; "
        "print(sorted(m for m in sys.modules if m.startswith('jupiter_bus')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded = set(ast.literal_eval(result.stdout.strip()))
    assert "jupiter_bus.snapshot" in loaded
    assert not loaded & {"jupiter_bus.agent", "jupiter_bus.plugins"}, loaded


def test_the_snapshot_module_uses_only_the_public_transport_api() -> None:
    assert snapshot.__file__ is not None
    tree = ast.parse(Path(snapshot.__file__).read_text())
    ours = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level
    }
    # transport, not transport.base or .memory/.amqp; nothing of the agent, plugins or facade
    assert ours == {"batch", "errors", "messages", "topology", "transport"}


def test_an_answer_is_superseded_by_a_value_at_least_as_new() -> None:
    assert not superseded(None, 10.0)
    assert superseded(10.0, 10.0)
    assert superseded(11.0, 10.0)
    assert not superseded(9.0, 10.0)


def test_last_values_answer_links_as_one_batch_or_one_body_each() -> None:
    values = LastValues()
    values.remember("resource.n1", b'{"resource": 1}')
    links = [cost("n1", "n2"), cost("n1", "n3")]
    batch_body = values.remember_links(links)
    assert values.snapshot_bodies(batch=True) == [
        (batch_body, BATCH_CONTENT_TYPE),
        (b'{"resource": 1}', JSON_CONTENT_TYPE),
    ]
    one_each = values.snapshot_bodies(batch=False)
    assert {content_type for _, content_type in one_each} == {JSON_CONTENT_TYPE}
    assert len(one_each) == 3
    assert values.bodies()[network_key("n1", "n2")] == encode(links[0])
    # A link changed alone: the next batch answer is rebuilt with all links, newest value.
    values.remember(network_key("n1", "n3"), encode(cost("n1", "n3", c=7.0)))
    (rebuilt, _), _ = values.snapshot_bodies(batch=True)
    assert {(c.dst, c.c) for c in decode_batch(rebuilt).costs()} == {("n2", 40.0), ("n3", 7.0)}
    assert values.forget(network_key("n1", "n2"))
    assert not values.forget(network_key("n1", "n2"))
    assert set(values.bodies()) == {"resource.n1", network_key("n1", "n3")}


async def test_a_responder_answers_an_ask_into_the_askers_feed(transport: Transport) -> None:
    values = LastValues()
    values.remember(network_key("n1", "n2"), encode(cost("n1", "n2", c=3.0)))
    responder = SnapshotResponder(transport, values, name="test responder")
    await responder.start()
    try:
        async with transport.subscribe(["nothing.here"]) as feed:
            request_id = await ask(transport, feed.name)
            answer = await asyncio.wait_for(anext(feed), WAIT)
    finally:
        await responder.close()
        await responder.close()  # idempotent
    assert answer.correlation_id == request_id
    assert decode(answer.body, LinkCost).c == 3.0
