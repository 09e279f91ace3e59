"""Figure 2c: encoding and decoding link costs: per-link JSON, batch JSON, batch binary."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Final

from facade_parts.repeat import repeat_timed
from facade_parts.results import Results
from facade_parts.settings import Settings
from facade_parts.synthetic import Topology
from jupiter_bus.batch import LinkBatch, decode_batch
from jupiter_bus.messages import LinkCost, decode, encode
from jupiter_bus.state import NetworkState

CODECS: Final = ("links", "json", "binary")  # per-link network.cost JSON, batch JSON, binary


def codec_one_source(settings: Settings, row: list[LinkCost], results: Results, n: int) -> None:
    """ms per encode / decode / decode+apply of one source's N-1 links, each encoding."""
    batch = LinkBatch.from_costs(row)
    bodies = {"links": [encode(c) for c in row], "json": [batch.to_json()],
              "binary": [batch.to_binary()]}  # fmt: skip
    links_state, batch_state = NetworkState(), NetworkState()

    def decode_apply_links() -> None:
        apply = links_state.apply
        for body in bodies["links"]:
            message = decode(body)
            if isinstance(message, LinkCost):  # as the facade's pump does
                apply(message)

    work: dict[str, dict[str, Callable[[], object]]] = {
        "links": {
            "encode": lambda: [encode(c) for c in row],
            "decode": lambda: [decode(b) for b in bodies["links"]],
            "apply": decode_apply_links,
        },
        "json": {
            "encode": batch.to_json,
            "decode": lambda: decode_batch(bodies["json"][0]),
            "apply": lambda: batch_state.apply_batch(decode_batch(bodies["json"][0])),
        },
        "binary": {
            "encode": batch.to_binary,
            "decode": lambda: decode_batch(bodies["binary"][0]),
            "apply": lambda: batch_state.apply_batch(decode_batch(bodies["binary"][0])),
        },
    }
    timed: list[tuple[str, str, Callable[[], object]]] = [
        ("columns", "build", lambda: LinkBatch.from_costs(row))
    ]
    timed += [(codec, op, call) for codec, ops in work.items() for op, call in ops.items()]
    for codec, op, call in timed:
        samples = repeat_timed(call, settings.codec_budget_s, most=2_000)
        results.add(f"codec.{codec}.{op}.one", n, statistics.median(samples) * 1e3)
    for codec, parts in bodies.items():
        results.add(f"codec.{codec}.bytes", n, sum(map(len, parts)) / len(row))


def codec_all_links(rows: Sequence[list[LinkCost]], results: Results, n: int) -> None:
    """Seconds to build, encode, decode and decode+apply every source's batch (N batches)."""
    gc.collect()
    started = time.perf_counter()
    batches = [LinkBatch.from_costs(row) for row in rows]
    results.add("codec.columns.build.all", n, time.perf_counter() - started)
    for codec in ("json", "binary"):
        convert = LinkBatch.to_json if codec == "json" else LinkBatch.to_binary
        started = time.perf_counter()
        bodies = [convert(batch) for batch in batches]
        results.add(f"codec.{codec}.encode.all", n, time.perf_counter() - started)
        started = time.perf_counter()
        for body in bodies:
            decode_batch(body)
        results.add(f"codec.{codec}.decode.all", n, time.perf_counter() - started)
        state = NetworkState()  # fresh: it grows to N nodes, as a late joiner's does
        started = time.perf_counter()
        for body in bodies:
            state.apply_batch(decode_batch(body))
        results.add(f"codec.{codec}.apply.all", n, time.perf_counter() - started)
        del bodies


def measure_codec(
    settings: Settings, topology: Topology, rows: Sequence[list[LinkCost]], results: Results
) -> None:
    codec_one_source(settings, rows[0], results, topology.n)
    for _ in range(settings.codec_rounds):
        codec_all_links(rows, results, topology.n)
