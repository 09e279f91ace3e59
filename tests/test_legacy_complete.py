"""The legacy calls return the complete picture of one deployment, or raise naming the gap.

Each test runs on a memory:// bus and on a RabbitMQ vhost of its own (made with
``rabbitmqctl add_vhost`` and deleted after), the way docs/jupiter.md separates
deployments. Events are published through the legacy bus's own transport: a memory://
broker lives on one event loop, the legacy bus's.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupiter_bus import legacy
from jupiter_bus.facade import JupiterInterface
from jupiter_bus.messages import LinkCost, ResourceSample, encode
from jupiter_bus.state import StateUnavailable
from jupiter_bus.topology import EVENTS_EXCHANGE, network_key, resource_key
from jupiter_bus.transport.memory import drop_memory_broker

from .conftest import AMQP_URL

HOSTS = {"n1": "10.0.0.1", "n2": "10.0.0.2", "n3": "10.0.0.3"}


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def vhosts() -> Iterator[tuple[str, str]]:
    """Two fresh RabbitMQ vhosts (two deployments on one broker), deleted afterwards."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed: cannot make a vhost")
    names = (f"jb-test-{uuid.uuid4().hex[:8]}", f"jb-test-{uuid.uuid4().hex[:8]}")
    made = []
    try:
        for name in names:
            _rabbitmqctl("add_vhost", name)
            made.append(name)
            _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield names
    finally:
        for name in made:
            _rabbitmqctl("delete_vhost", name)


@pytest.fixture(params=["memory", "amqp"])
def deployments(request: pytest.FixtureRequest, unique: str) -> Iterator[dict[str, str]]:
    """URLs of two deployments ``a`` and ``b``: two memory:// buses or two vhosts."""
    if request.param == "memory":
        urls = {d: f"memory://legacy-{d}-{unique}" for d in "ab"}
    else:
        request.applymarker(pytest.mark.amqp)
        names = request.getfixturevalue("vhosts")
        urls = {d: AMQP_URL.rstrip("/") + "/" + names[i] for i, d in enumerate("ab")}
    yield urls
    legacy.shutdown()
    for url in urls.values():
        if url.startswith("memory://"):
            drop_memory_broker(url)


def _publish(url: str, *messages: ResourceSample | LinkCost) -> None:
    """Publish events on ``url`` from a legacy bus of this process (its own loop)."""
    bus = legacy.LegacyBus(url, node="publisher", timeout=10)
    try:
        publish_on(bus, *messages)
    finally:
        bus.close()


def publish_on(bus: legacy.LegacyBus, *messages: ResourceSample | LinkCost) -> None:
    async def send(jupiter: JupiterInterface) -> None:
        for message in messages:
            if isinstance(message, ResourceSample):
                key = resource_key(message.node)
            else:
                key = network_key(message.src, message.dst)
            await jupiter.transport.publish(EVENTS_EXCHANGE, key, encode(message))

    bus.call(send, 10)


def sample(node: str) -> ResourceSample:
    return ResourceSample(
        node=node,
        cpu_percent=12.5,
        cpu_count=2,
        memory_percent=40.0,
        memory_total_bytes=100,
        memory_available_bytes=60,
        host=HOSTS.get(node, "10.0.9.9"),
    )


def cost(src: str, dst: str, c: float = 40.0) -> LinkCost:
    return LinkCost(
        src=src,
        dst=dst,
        a=0.0,
        b=0.002,
        c=c,
        samples=9,
        r2=0.99,
        min_kbit=8.0,
        max_kbit=8000.0,
    )


def node_events(node: str, peers: list[str]) -> list[ResourceSample | LinkCost]:
    """What a node's agent publishes: its sample and its links to ``peers`` and home."""
    return [sample(node), *(cost(node, p) for p in peers), cost(node, "home", 1.0)]


def shared_bus() -> legacy.LegacyBus:
    return legacy._current()


async def test_legacy_calls_wait_for_a_late_node_and_return_both(
    deployments: dict[str, str],
) -> None:
    legacy.configure(deployments["a"], node="n1", timeout=15, nodes=["n1", "n2"])
    bus = shared_bus()
    publish_on(bus, *node_events("n1", ["n2"]))
    resources = asyncio.create_task(asyncio.to_thread(legacy.get_resource_data_mapping(0)))
    rows = asyncio.create_task(asyncio.to_thread(legacy.heft_network_rows))
    wave = asyncio.create_task(asyncio.to_thread(legacy.get_network_data_mapping(0)))
    await asyncio.sleep(1.0)
    assert not resources.done(), "answered before n2 was heard"
    assert not rows.done(), "answered before n2 was heard"
    await asyncio.to_thread(publish_on, bus, *node_events("n2", ["n1"]))
    assert set(await resources) == {"n1", "n2"}
    assert await rows == [
        ["n1", "10.0.0.1", "n2", "10.0.0.2", "0.0 0.002 40.0"],
        ["n2", "10.0.0.2", "n1", "10.0.0.1", "0.0 0.002 40.0"],
    ]
    assert await wave == {"n2": {"a": 0.0, "b": 0.002, "c": 40.0, "ip": "10.0.0.2"}}


async def test_without_a_worker_list_every_node_heard_in_the_settle_window_counts(
    deployments: dict[str, str],
) -> None:
    legacy.configure(deployments["a"], node="n1", timeout=15, settle=1.0)
    bus = shared_bus()
    publish_on(bus, *node_events("n1", []))
    started = time.monotonic()
    call = asyncio.create_task(asyncio.to_thread(legacy.heft_network_rows))
    await asyncio.sleep(0.5)  # within the settle window: n2 still counts
    await asyncio.to_thread(publish_on, bus, *node_events("n2", ["n1"]), cost("n1", "n2"))
    rows = await call
    assert {(r[0], r[2]) for r in rows} == {("n1", "n2"), ("n2", "n1")}
    assert time.monotonic() - started >= 1.4  # the window restarted when n2 came
    # Nothing new since: the next call need not wait out another window.
    started = time.monotonic()
    data = await asyncio.to_thread(legacy.get_resource_data_mapping(0))
    assert set(data) == {"n1", "n2"}
    assert time.monotonic() - started < 0.9


async def test_a_listed_node_that_never_comes_raises_naming_it(
    deployments: dict[str, str],
) -> None:
    legacy.configure(deployments["a"], node="n1", timeout=1.0, nodes=["n1", "n2"])
    bus = shared_bus()
    publish_on(bus, *node_events("n1", ["n2"]), *node_events("n2", ["n1"]))
    calls = {
        "resources": lambda: legacy.get_resource_data_mapping(0)(nodes=["n1", "ghost"]),
        "heft": lambda: legacy.heft_network_rows(nodes=["n1", "n2", "ghost"]),
        "wave": lambda: legacy.get_network_data_mapping(0)(nodes=["n2", "ghost"]),
    }
    for name, call in calls.items():
        started = time.monotonic()
        with pytest.raises(StateUnavailable, match="ghost") as caught:
            await asyncio.to_thread(call)
        assert time.monotonic() - started < 3.0, name
        assert any("ghost" in x for x in caught.value.missing), name
    # a link that never comes is named too (n2 -> n3 is missing)
    publish_on(bus, *node_events("n3", ["n1", "n2"]), cost("n1", "n3"))
    with pytest.raises(StateUnavailable, match="n2->n3"):
        await asyncio.to_thread(legacy.heft_network_rows, nodes=["n1", "n2", "n3"])


async def test_exports_are_limited_to_the_node_list(
    deployments: dict[str, str], tmp_path: Path
) -> None:
    legacy.configure(deployments["a"], node="n1", timeout=10, nodes=["n1", "n2"])
    bus = shared_bus()
    for node in HOSTS:
        publish_on(bus, *node_events(node, [p for p in HOSTS if p != node]))
    rows = await asyncio.to_thread(legacy.heft_network_rows)
    assert {(r[0], r[2]) for r in rows} == {("n1", "n2"), ("n2", "n1")}
    resources = await asyncio.to_thread(legacy.get_resource_data_mapping(0))
    assert set(resources) == {"n1", "n2"}
    wave = await asyncio.to_thread(legacy.get_network_data_mapping(0))
    assert set(wave) == {"n2"}
    log = tmp_path / "network_log.txt"
    await asyncio.to_thread(legacy.write_network_log, log)
    assert "n3" not in log.read_text()
    assert log.read_text().count("\n") == 2
    tgff = tmp_path / "input.tgff"
    await asyncio.to_thread(legacy.write_tgff_quadratic, tgff)
    assert "n3" not in tgff.read_text()
    assert "home" not in tgff.read_text()
    # a call's own list wins over configure()'s
    rows = await asyncio.to_thread(legacy.heft_network_rows, nodes=list(HOSTS))
    assert len(rows) == 6


async def test_tgff_section_starts_on_a_new_line(
    deployments: dict[str, str], tmp_path: Path
) -> None:
    legacy.configure(deployments["a"], node="n1", timeout=10, nodes=["n1", "n2"])
    publish_on(shared_bus(), *node_events("n1", ["n2"]), *node_events("n2", ["n1"]))
    tgff = tmp_path / "input.tgff"
    tgff.write_text("@computation_cost 0 {\n  T0 n1 3.0\n}")  # no newline at the end
    await asyncio.to_thread(legacy.write_tgff_quadratic, tgff)
    await asyncio.to_thread(legacy.write_tgff_quadratic, tgff)  # ends with one now
    section = (
        "@quadratic 0 {\n# Source Destination a b c\n"
        "  n1\tn2\t0.0 0.002 40.0\n  n2\tn1\t0.0 0.002 40.0\n}\n"
    )
    assert tgff.read_text() == "@computation_cost 0 {\n  T0 n1 3.0\n}\n" + section + section


async def test_deployments_are_separated_by_their_url(deployments: dict[str, str]) -> None:
    legacy.configure(deployments["a"], node="n1", timeout=10, settle=0.5)
    bus = shared_bus()  # listening on deployment a from here on
    # deployment b: same node name n1, and others, on the same broker (or process)
    await asyncio.to_thread(_publish, deployments["b"], *node_events("b1", ["n1"]))
    await asyncio.to_thread(_publish, deployments["b"], *node_events("n1", ["b1"]))
    publish_on(bus, *node_events("n1", []))
    resources = await asyncio.to_thread(legacy.get_resource_data_mapping(0))
    assert set(resources) == {"n1"}
    assert resources["n1"]["memory"] == 40.0
    assert await asyncio.to_thread(legacy.heft_network_rows) == []
    with pytest.raises(StateUnavailable, match="b1"):
        await asyncio.to_thread(
            legacy.get_resource_data_mapping(0), nodes=["n1", "b1"], timeout=0.5
        )
