"""Live state: numpy-held link costs, snapshots, Jupiter's formats, change notification."""

from __future__ import annotations

import asyncio
import gc
import math
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupiter_bus import formats
from jupiter_bus.messages import LinkCost, ResourceSample
from jupiter_bus.state import (
    ChangeSignal,
    NetworkState,
    ResourceState,
    UnknownLink,
    UnknownNode,
    format_abc,
    format_last_update,
)
from jupiter_bus.state.coverage import link_coverage, node_coverage


def cost(src: str, dst: str, a: float, b: float, c: float, **fields: float) -> LinkCost:
    values: dict[str, float] = {"samples": 10, "r2": 0.99, "min_kbit": 8.0, "max_kbit": 80_000.0}
    values.update(fields)
    return LinkCost(src=src, dst=dst, a=a, b=b, c=c, **values)  # type: ignore[arg-type]


def sample(node: str, cpu: float, memory: float, **fields: object) -> ResourceSample:
    return ResourceSample(
        node=node,
        cpu_percent=cpu,
        cpu_count=4,
        memory_percent=memory,
        memory_total_bytes=8_000_000_000,
        memory_available_bytes=4_000_000_000,
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture
def triangle() -> NetworkState:
    """n1, n2, n3 with four links of known parameters."""
    state = NetworkState()
    state.apply(cost("n1", "n2", 1e-6, 0.002, 40.0), received_at=100.0)
    state.apply(cost("n1", "n3", 0.0, 0.001, 10.0), received_at=101.0)
    state.apply(cost("n2", "n1", 2e-6, 0.004, 5.0), received_at=102.0)
    state.apply(cost("n3", "n2", 0.0, 0.0, 1.5), received_at=103.0)
    return state


# -- cost model through the arrays ------------------------------------------------------


def test_cost_ms_gives_known_values_for_one_link(triangle: NetworkState) -> None:
    data = triangle.snapshot()
    # 1e-6 * 1000**2 + 0.002 * 1000 + 40 = 1 + 2 + 40
    assert data.cost_ms("n1", "n2", 1000.0) == pytest.approx(43.0)
    assert isinstance(data.cost_ms("n1", "n2", 1000.0), float)
    assert data.cost_ms(data.index("n1"), data.index("n3"), 0.0) == 10.0


def test_cost_ms_is_vectorised_over_sizes_and_links(triangle: NetworkState) -> None:
    data = triangle.snapshot()
    sizes = np.array([0.0, 1000.0, 2000.0])
    by_size = data.cost_ms("n1", "n2", sizes)
    assert isinstance(by_size, np.ndarray)
    np.testing.assert_allclose(by_size, [40.0, 43.0, 48.0])
    by_link = data.cost_ms(["n1", "n1", "n2"], ["n2", "n3", "n1"], 1000.0)
    np.testing.assert_allclose(by_link, [43.0, 11.0, 11.0])
    by_index = data.cost_ms(np.array([0, 0]), np.array([1, 2]), np.array([1000.0, 0.0]))
    np.testing.assert_allclose(by_index, [43.0, 10.0])
    grid = data.cost_ms(0, np.array([1, 2]), sizes[:, None])  # sizes x destinations
    assert grid.shape == (3, 2)
    np.testing.assert_allclose(grid[1], [43.0, 11.0])


def test_cost_ms_of_a_link_without_cost_is_nan_and_unknown_nodes_raise(
    triangle: NetworkState,
) -> None:
    data = triangle.snapshot()
    assert math.isnan(data.cost_ms("n2", "n3", 10.0))
    assert np.isnan(data.cost_ms(["n1", "n2"], ["n2", "n3"], 10.0)).tolist() == [False, True]
    with pytest.raises(UnknownNode, match="nope"):
        data.cost_ms("nope", "n1", 1.0)
    with pytest.raises(UnknownNode):
        data.cost_ms(7, 0, 1.0)
    with pytest.raises(UnknownLink, match="n2->n3"):
        data.link("n2", "n3")


def test_cost_ms_can_count_data_that_stays_on_a_node_as_free(triangle: NetworkState) -> None:
    data = triangle.snapshot()
    names = np.array(data.nodes)
    grid = data.cost_ms(names[:, None], names, 1000.0, same_node=0.0)
    assert np.diag(grid).tolist() == [0.0, 0.0, 0.0]
    assert grid[data.index("n1"), data.index("n2")] == pytest.approx(43.0)
    assert math.isnan(grid[data.index("n2"), data.index("n3")])  # no cost, other nodes
    assert data.cost_ms("n2", "n2", 5.0, same_node=1.5) == 1.5
    assert math.isnan(data.cost_ms("n2", "n2", 5.0))  # without it: no such link


def test_links_and_matrices_show_every_field(triangle: NetworkState) -> None:
    triangle.apply(cost("n1", "n2", 0.5, 0.25, 2.0, samples=7, r2=0.5, min_kbit=1.0), 200.0)
    data = triangle.snapshot()
    entry = data.link("n1", "n2")
    assert (entry.a, entry.b, entry.c, entry.samples, entry.r2) == (0.5, 0.25, 2.0, 7, 0.5)
    assert (entry.min_kbit, entry.max_kbit, entry.received_at) == (1.0, 80_000.0, 200.0)
    assert entry.cost_ms(2.0) == data.cost_ms("n1", "n2", 2.0) == 4.5
    assert [(e.src, e.dst) for e in data.links()] == [
        ("n1", "n2"),
        ("n1", "n3"),
        ("n2", "n1"),
        ("n3", "n2"),
    ]
    i, j = data.index("n1"), data.index("n2")
    assert (data.a[i, j], data.b[i, j], data.c[i, j]) == (0.5, 0.25, 2.0)
    assert data.samples[i, j] == 7
    assert data.valid[i, j]
    assert not data.valid[j, data.index("n3")]
    assert data.ts[i, j] == entry.ts
    assert data.received_at[i, j] == 200.0
    assert data.link_count == 4
    assert len(data) == 3
    assert "n3" in data


def test_matrices_are_read_only(triangle: NetworkState) -> None:
    data = triangle.snapshot()
    for matrix in (data.a, data.params, data.valid, data.received_at, data.samples):
        with pytest.raises(ValueError, match="read-only"):
            matrix[0, 0] = 1
    with pytest.raises(AttributeError):
        data.a = data.b  # type: ignore[assignment]


def test_values_beyond_float32_saturate_instead_of_failing() -> None:
    state = NetworkState()
    state.apply(cost("n1", "n2", 0.0, 0.0, 1.0, r2=-1e300, max_kbit=1e300, samples=2**40))
    data = state.snapshot()
    assert data.r2[0, 1] == np.finfo(np.float32).min
    assert data.max_kbit[0, 1] == np.finfo(np.float32).max
    assert data.samples[0, 1] == 2**31 - 1


# -- snapshots --------------------------------------------------------------------------


def test_snapshot_is_unaffected_by_later_updates(triangle: NetworkState) -> None:
    before = triangle.snapshot()
    a_matrix = before.a
    triangle.apply(cost("n1", "n2", 9.0, 9.0, 9.0), received_at=300.0)
    triangle.apply(cost("n2", "n3", 1.0, 1.0, 1.0))
    triangle.apply(cost("n1", "n9", 1.0, 1.0, 1.0))
    assert before.cost_ms("n1", "n2", 1000.0) == pytest.approx(43.0)
    assert not before.has_link("n2", "n3")
    assert before.nodes == ("n1", "n2", "n3")
    assert before.link_count == 4
    assert a_matrix[0, 1] == 1e-6
    after = triangle.snapshot()
    assert after.cost_ms("n1", "n2", 0.0) == 9.0
    assert after.version > before.version
    assert after.link_count == 6


def test_an_array_kept_from_a_dropped_snapshot_is_not_changed(triangle: NetworkState) -> None:
    kept = triangle.snapshot().c  # the snapshot itself is gone at once
    triangle.apply(cost("n1", "n2", 0.0, 0.0, 77.0))
    assert kept[0, 1] == 40.0
    assert triangle.snapshot().c[0, 1] == 77.0


def test_a_dropped_snapshot_costs_no_copy(triangle: NetworkState) -> None:
    tables = id(triangle._t)  # an id: holding the tables would itself count as a reader
    data = triangle.snapshot()
    del data
    gc.collect()
    triangle.apply(cost("n1", "n2", 0.0, 0.0, 1.0))
    assert id(triangle._t) == tables  # no snapshot alive: updated in place
    held = triangle.snapshot()
    triangle.apply(cost("n1", "n2", 0.0, 0.0, 2.0))
    assert id(triangle._t) != tables  # copied once for the live snapshot
    assert held.c[0, 1] == 1.0


def test_apply_many_matches_apply_and_the_last_update_of_a_link_wins() -> None:
    batch = [
        cost("n1", "n2", 0.0, 0.0, 1.0),
        cost("n2", "n3", 0.0, 0.0, 2.0),
        cost("n1", "n2", 0.0, 0.0, 3.0),
    ]
    one, many = NetworkState(), NetworkState()
    for update in batch:
        one.apply(update, received_at=5.0)
    assert many.apply_many(batch, received_at=5.0) == 3
    a, b = one.snapshot(), many.snapshot()
    assert a.nodes == b.nodes
    assert a.link_count == b.link_count == 2
    for matrix in ("params", "received_at", "ts", "samples", "r2", "valid"):
        np.testing.assert_array_equal(getattr(a, matrix), getattr(b, matrix))
    assert b.cost_ms("n1", "n2", 0.0) == 3.0


def test_capacity_doubles_and_keeps_every_value() -> None:
    state = NetworkState(capacity=8)
    names = [f"n{i}" for i in range(20)]
    for i, src in enumerate(names):
        state.apply(cost(src, names[(i + 1) % 20], 0.0, 0.0, float(i)))
    assert state.capacity == 32
    assert state.node_count == 20
    data = state.snapshot()
    assert data.params.shape == (20, 20, 3)
    for i, src in enumerate(names):
        assert data.cost_ms(src, names[(i + 1) % 20], 5.0) == float(i)


def test_removed_node_loses_its_links_and_others_keep_theirs(triangle: NetworkState) -> None:
    before = triangle.snapshot()
    assert triangle.remove_node("n1")
    assert not triangle.remove_node("n1")
    data = triangle.snapshot()
    assert sorted(data.nodes) == ["n2", "n3"]
    assert len(data) == 2
    assert data.link_count == 1
    assert data.cost_ms("n3", "n2", 0.0) == 1.5
    assert "n1" not in data
    assert data.valid.sum() == 1
    assert before.cost_ms("n1", "n2", 1000.0) == pytest.approx(43.0)  # old snapshot intact
    triangle.apply(cost("n1", "n3", 0.0, 0.0, 4.0))  # comes back: a fresh row and column
    again = triangle.snapshot()
    assert again.link_count == 2
    assert again.cost_ms("n1", "n3", 0.0) == 4.0
    assert not again.has_link("n1", "n2")
    assert not again.has_link("n2", "n1")


def test_removing_the_last_node_and_a_middle_node_keep_indices_dense() -> None:
    state = NetworkState()
    for src, dst in [("a", "b"), ("b", "c"), ("c", "d"), ("d", "a"), ("c", "c")]:
        state.apply(cost(src, dst, 0.0, 0.0, float(ord(src[0]) * 10 + ord(dst[0]))))
    state.remove_node("d")
    state.remove_node("a")
    data = state.snapshot()
    assert set(data.nodes) == {"b", "c"}
    assert sorted((e.src, e.dst, e.c) for e in data.links()) == [
        ("b", "c", ord("b") * 10 + ord("c")),
        ("c", "c", ord("c") * 10 + ord("c")),
    ]
    assert data.link_count == 2


# -- staleness and coverage -------------------------------------------------------------


def test_age_and_staleness_follow_receipt_time_not_producer_ts() -> None:
    state = NetworkState()
    old_ts = time.time() - 86_400  # the producer's clock is a day behind
    state.apply(LinkCost(src="n1", dst="n2", a=0, b=0, c=1.0, samples=3, r2=1.0, min_kbit=0,
                         max_kbit=1, ts=old_ts), received_at=10.0)  # fmt: skip
    state.apply(cost("n2", "n1", 0.0, 0.0, 1.0), received_at=50.0)
    data = state.snapshot(max_age=30.0, now=60.0)
    assert data.age_seconds("n1", "n2", now=60.0) == 50.0
    assert data.age_seconds("n1", "n1", now=60.0) == math.inf
    assert data.stale == (("n1", "n2"),)
    assert data.ts[0, 1] == old_ts
    assert state.snapshot().stale == ()  # no max_age: not judged


def test_coverage_names_missing_and_stale_links() -> None:
    state = NetworkState()
    state.apply(cost("n1", "n2", 0, 0, 1.0), received_at=0.0)
    state.apply(cost("n2", "n1", 0, 0, 1.0), received_at=100.0)
    data = state.snapshot()
    mesh = data.coverage(nodes=["n1", "n2", "n3"], max_age=10.0, now=105.0)
    assert (mesh.requested, mesh.missing, mesh.stale, mesh.fresh) == (6, 4, 1, 1)
    assert mesh.unknown_nodes == ("n3",)
    assert mesh.stale_examples == ("n1->n2",)
    listed = data.coverage(links=[("n1", "n2"), ("n9", "n1")])
    assert (listed.requested, listed.missing, listed.missing_examples) == (2, 1, ("n9->n1",))
    assert data.coverage().complete
    assert NetworkState().snapshot().coverage().requested == 0


def test_coverage_judgement_needs_only_masks_and_names() -> None:
    valid = np.array([[False, True], [False, False]])
    stale = np.array([[False, True], [False, False]])
    cov = link_coverage(("n1", "n2"), {"n1": 0, "n2": 1}, valid, stale, nodes=["n1", "n2", "n3"])
    assert (cov.requested, cov.missing, cov.stale, cov.unknown_nodes) == (6, 5, 1, ("n3",))
    assert cov.missing_examples[:2] == ("n1->n3", "n2->n3")
    held = {"n1": (None, 5.0), "n2": (None, 50.0)}
    nodes = node_coverage(held, nodes=["n1", "n2", "n9"], stale_before=10.0)
    assert (nodes.requested, nodes.missing, nodes.stale, nodes.fresh) == (3, 1, 1, 1)
    assert (nodes.missing_examples, nodes.stale_examples) == (("n9",), ("n1",))


# -- Jupiter's formats ------------------------------------------------------------------

IPS = {"n1": "10.0.0.1", "n2": "10.0.0.2", "home": "10.0.0.100"}


@pytest.fixture
def with_home(triangle: NetworkState) -> NetworkState:
    triangle.apply(cost("home", "n1", 0.0, 1.0, 1.0))
    triangle.apply(cost("n2", "home", 0.0, 1.0, 1.0))
    triangle.apply(cost("n2", "n2", 0.0, 1.0, 1.0))  # a self-link is never a Jupiter row
    return triangle


def test_heft_rows_are_exact_and_skip_home(with_home: NetworkState) -> None:
    rows = with_home.snapshot().heft_rows(home="home", ips=IPS)
    assert rows == [
        ["n1", "10.0.0.1", "n2", "10.0.0.2", "1e-06 0.002 40.0"],
        ["n1", "10.0.0.1", "n3", "n3", "0.0 0.001 10.0"],
        ["n2", "10.0.0.2", "n1", "10.0.0.1", "2e-06 0.004 5.0"],
        ["n3", "n3", "n2", "10.0.0.2", "0.0 0.0 1.5"],
    ]
    assert len(with_home.snapshot().heft_rows(home=None)) == 6


def test_wave_view_is_exact_for_one_source(with_home: NetworkState) -> None:
    data = with_home.snapshot()
    assert data.wave("n2", IPS) == {"n1": {"a": 2e-06, "b": 0.004, "c": 5.0, "ip": "10.0.0.1"}}
    assert data.wave("n1", IPS) == {
        "n2": {"a": 1e-06, "b": 0.002, "c": 40.0, "ip": "10.0.0.2"},
        "n3": {"a": 0.0, "b": 0.001, "c": 10.0, "ip": "n3"},
    }
    assert data.wave("n2", home=None)["home"]["ip"] == "home"
    with pytest.raises(UnknownNode):
        data.wave("nope")


def test_formats_are_pure_functions_of_any_link_table(with_home: NetworkState) -> None:
    data = with_home.snapshot()

    class Table:  # not a snapshot: names and two matrices are all the formats read
        nodes = data.nodes
        params = np.array(data.params)
        valid = np.array(data.valid)

        def __contains__(self, name: object) -> bool:
            return name in self.nodes

        def index(self, name: str) -> int:
            return self.nodes.index(name)

    assert formats.heft_rows(Table(), ips=IPS) == data.heft_rows(ips=IPS)
    assert formats.wave(Table(), "n1", IPS) == data.wave("n1", IPS)
    assert formats.tgff_quadratic(Table()) == data.tgff_quadratic()


def test_tgff_quadratic_section_is_exact(with_home: NetworkState) -> None:
    assert with_home.snapshot().tgff_quadratic(home="home") == (
        "@quadratic 0 {\n"
        "# Source Destination a b c\n"
        "  n1\tn2\t1e-06 0.002 40.0\n"
        "  n1\tn3\t0.0 0.001 10.0\n"
        "  n2\tn1\t2e-06 0.004 5.0\n"
        "  n3\tn2\t0.0 0.0 1.5\n"
        "}\n"
    )
    assert NetworkState().snapshot().tgff_quadratic() == (
        "@quadratic 0 {\n# Source Destination a b c\n}\n"
    )


@given(
    st.lists(
        st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=3, max_size=60
    ).filter(lambda v: len(v) % 3 == 0)
)
def test_abc_text_is_python_repr_of_each_number(values: list[float]) -> None:
    rows = np.array(values, dtype=np.float64).reshape(-1, 3)
    assert format_abc(rows) == [" ".join(repr(v) for v in row) for row in rows.tolist()]


def test_abc_text_matches_repr_at_every_magnitude() -> None:
    rng = np.random.default_rng(7)
    magnitudes = 10.0 ** rng.integers(-320, 308, size=30_000)
    values = rng.random(30_000) * magnitudes * rng.choice([-1.0, 1.0], size=30_000)
    rows = values.reshape(-1, 3)
    assert format_abc(rows) == [" ".join(repr(v) for v in row) for row in rows.tolist()]


def test_jupiter_formats_cover_every_link_of_100_nodes() -> None:
    # their speed (< 10 ms at 100 nodes) is measured by bench/facade.py, not here
    state = NetworkState()
    names = [f"node{i}" for i in range(100)]
    rng = np.random.default_rng(3)
    state.apply_many(
        cost(s, d, float(rng.random() * 1e-8), float(rng.random() * 1e-2), float(rng.random() * 50))
        for s in names
        for d in names
        if s != d
    )
    data = state.snapshot()
    ips = {name: f"10.0.{i // 256}.{i % 256}" for i, name in enumerate(names)}
    assert len(data.heft_rows(ips=ips)) == 9900
    assert data.tgff_quadratic().count("\n") == 9900 + 3
    assert len(data.wave("node0", ips)) == 99


# -- resources --------------------------------------------------------------------------


def test_resources_in_jupiter_format_with_utc_last_update() -> None:
    state = ResourceState()
    ts = 1_795_680_100.9  # 2026-11-26 08:01:40.9 UTC
    state.apply(sample("n1", 37.5, 41.2, host="10.0.0.11", ssh_port=2222, ts=ts))
    state.apply(sample("n2", 5.0, 10.0, ts=ts + 3600))
    data = state.snapshot()
    assert data.to_jupiter() == {
        "n1": {"cpu": 37.5, "memory": 41.2, "last_update": "November 26 2026 - 08:01:40"},
        "n2": {"cpu": 5.0, "memory": 10.0, "last_update": "November 26 2026 - 09:01:40"},
    }
    assert formats.jupiter_resources(data.values()) == data.to_jupiter()
    assert data.ips() == {"n1": "10.0.0.11"}
    assert (data.host("n1"), data.ssh_port("n1"), data.host("n2")) == ("10.0.0.11", 2222, None)
    assert format_last_update(0.0) == "January 01 1970 - 00:00:00"


def test_resource_snapshot_is_unaffected_by_later_samples_and_removal() -> None:
    state = ResourceState()
    state.apply(sample("n1", 1.0, 1.0), received_at=0.0)
    before = state.snapshot(max_age=5.0, now=10.0)
    state.apply(sample("n1", 99.0, 99.0), received_at=9.0)
    state.apply(sample("n2", 2.0, 2.0), received_at=9.0)
    assert state.remove_node("n1")
    assert not state.remove_node("n1")
    assert before["n1"].cpu_percent == 1.0
    assert list(before) == ["n1"]
    assert before.stale == ("n1",)
    assert before.age_seconds("n1", now=10.0) == 10.0
    after = state.snapshot()
    assert list(after) == ["n2"]
    assert after.version > before.version
    with pytest.raises(UnknownNode, match="n1"):
        after["n1"]
    cov = after.coverage(nodes=["n1", "n2"])
    assert (cov.requested, cov.missing, cov.missing_examples) == (2, 1, ("n1",))


# -- change notification ----------------------------------------------------------------


async def test_waiters_wake_when_data_arrives_and_not_before() -> None:
    state = NetworkState()
    seen = state.version
    waiter = asyncio.create_task(state.wait_changed(seen, timeout=5.0))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    state.apply(cost("n1", "n2", 0, 0, 1.0))
    assert await waiter == state.version
    assert await state.wait_changed(seen) == state.version  # already changed: at once


async def test_wait_changed_times_out_and_cancelling_leaves_no_waiter() -> None:
    signal = ChangeSignal()
    with pytest.raises(TimeoutError):
        await signal.wait_changed(signal.version, timeout=0.01)
    task = asyncio.create_task(signal.wait_changed(signal.version, timeout=5.0))
    await asyncio.sleep(0)
    assert len(signal._waiters) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert signal._waiters == []


async def test_failed_signal_wakes_waiters_with_the_error() -> None:
    signal = ChangeSignal()
    task = asyncio.create_task(signal.wait_changed(0, timeout=5.0))
    await asyncio.sleep(0)
    signal.fail(RuntimeError("feed gone"))
    with pytest.raises(RuntimeError, match="feed gone"):
        await task
    with pytest.raises(RuntimeError):
        await signal.wait_changed(0)
