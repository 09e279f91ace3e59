"""Synthetic link costs: the per-link bodies, fabricated rows and batches the figures feed."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import orjson

from jupiter_bus.batch import LinkBatch, decode_batch
from jupiter_bus.messages import LinkCost, decode, encode
from jupiter_bus.topology import network_batch_key


@dataclass(frozen=True, slots=True)
class Topology:
    """``n`` nodes named after the run; link ``k`` is the k-th (src, dst) pair, row by row."""

    run_id: str  # hex: it starts every update's id
    n: int
    label: str = ""  # tells apart topologies of one run

    @property
    def prefix(self) -> str:
        """What every node name starts with."""
        return f"b{self.run_id}{self.label}n"

    @property
    def names(self) -> list[str]:
        return [f"{self.prefix}{i:04d}" for i in range(self.n)]

    @property
    def links(self) -> int:
        return self.n * (self.n - 1)

    @property
    def memory_url(self) -> str:
        """An in-process bus of its own."""
        return f"memory://bench-facade-{self.run_id}{self.label}-{self.n}"

    def pair(self, k: int, names: Sequence[str]) -> tuple[str, str]:
        i, r = divmod(k % self.links, self.n - 1)
        return names[i], names[r if r < i else r + 1]


def link_body(run_id: str, k: int, src: str, dst: str, ts: float) -> bytes:
    """The JSON body ``encode`` writes for update ``k`` of a link (checked at start-up)."""
    return orjson.dumps(
        {
            "v": 1,
            "type": "network.cost",
            "id": f"{run_id}-0000-4000-8000-{k:012x}",
            "ts": ts + k * 1e-6,
            "src": src,
            "dst": dst,
            "a": 1e-9 * (k % 7 + 1),
            "b": 0.001 + (k % 13) * 1e-5,
            "c": 40.0 + k % 17,
            "samples": 10 + k % 5,
            "r2": 0.99,
            "min_kbit": 8.0,
            "max_kbit": 80_000.0,
            "model": "quadratic",
        }
    )


def keyed_bodies(topology: Topology, start: int, count: int) -> list[tuple[str, bytes]]:
    """``count`` updates (routing key, body), cycling over the links from link ``start``."""
    names, ts = topology.names, time.time()
    out = []
    for k in range(start, start + count):
        src, dst = topology.pair(k, names)
        out.append((f"network.{src}.{dst}", link_body(topology.run_id, k, src, dst, ts)))
    return out


_set: Final = object.__setattr__


def fabricated_row(topology: Topology, i: int, names: Sequence[str]) -> list[LinkCost]:
    """Source ``i``'s links as :class:`LinkCost` objects built without re-validation.

    Only for untimed fills (memory, reads, formats, the agents' links): ten times faster
    than the validating constructor, and equal to what ``decode`` returns (checked at
    start-up).
    """
    row = []
    ts = time.time()
    for k in range(i * (topology.n - 1), (i + 1) * (topology.n - 1)):
        src, dst = topology.pair(k, names)
        cost = object.__new__(LinkCost)
        for name, value in (
            ("id", f"{topology.run_id}-0000-4000-8000-{k:012x}"),
            ("ts", ts),
            ("src", src),
            ("dst", dst),
            ("a", 1e-9 * (k % 7 + 1)),
            ("b", 0.001 + (k % 13) * 1e-5),
            ("c", 40.0 + k % 17),
            ("samples", 10 + k % 5),
            ("r2", 0.99),
            ("min_kbit", 8.0),
            ("max_kbit", 80_000.0),
            ("model", "quadratic"),
        ):
            _set(cost, name, value)
        row.append(cost)
    return row


def fabricated_rows(topology: Topology) -> list[list[LinkCost]]:
    """Every source's row (:func:`fabricated_row`), source by source."""
    names = topology.names
    return [fabricated_row(topology, i, names) for i in range(topology.n)]


def batch_bodies(topology: Topology, count: int) -> list[tuple[str, bytes]]:
    """``count`` binary ``network.batch`` bodies (routing key, body): source ``i`` carries
    its N-1 links on ``network-batch.<src>``, cycling over the sources."""
    names = topology.names
    rows = min(count, topology.n)
    bodies = [
        (
            network_batch_key(names[i]),
            LinkBatch.from_costs(fabricated_row(topology, i, names)).to_binary(),
        )
        for i in range(rows)
    ]
    return [bodies[k % rows] for k in range(count)]


def check_synthetic(run_id: str) -> None:
    """The synthetic bodies are the codec's own encoding; fabricated rows equal decoded ones."""
    topology = Topology(run_id, 3)
    names = topology.names
    row = fabricated_row(topology, 0, names)
    for (_, body), made in zip(keyed_bodies(topology, 0, 2), row, strict=True):
        cost = decode(body, LinkCost)
        if encode(cost) != body:
            raise AssertionError("synthetic body differs from encode(decode(body))")
        if decode(encode(made), LinkCost) != made:
            raise AssertionError("a fabricated LinkCost does not survive encode/decode")
    (_, body), *_ = batch_bodies(topology, 1)
    again = [(c.src, c.dst, c.a, c.b, c.c) for c in decode_batch(body).costs()]
    if again != [(c.src, c.dst, c.a, c.b, c.c) for c in row]:
        raise AssertionError("a fabricated row does not survive a binary network.batch")
