"""How much work each figure of ``bench/facade.py`` does, and the aims DESIGN sets them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

JSON: Final = "application/json"
WAIT_S: Final = 300.0  # the longest any one wait of the bench may take

INGEST_AIM: Final = 100_000.0  # link updates/s, in process
READ_AIM_US: Final = 1_000.0  # get_network_data() "in microseconds", at 100 nodes
FORMAT_AIM_MS: Final = 10.0  # each Jupiter format, at 100 nodes
MEMORY_AIM_MB: Final = 64.0  # at 1,000 nodes
LATENCY_AIM_MS: Final = 5.0  # p99 event-to-facade on loopback
LATE_JOIN_AIM_S: Final = 1.0  # at 1,000 nodes
AIM_NODES: Final = 100  # where the read and format aims apply
SCALE_NODES: Final = 1_000  # where the memory and late-joiner aims apply
MB: Final = 1e6


@dataclass(frozen=True, slots=True)
class Settings:
    """How much work each figure does; the same for every contender of a figure."""

    url: str
    quick: bool
    nodes: tuple[int, ...]
    rounds: int
    # Updates per sample: every link once, repeated up to ``*_min`` for small node
    # counts, cut to ``*_max`` (a sample of the links) for large ones.
    inproc_min: int
    inproc_max: int
    memory_bus_min: int
    memory_bus_max: int
    amqp_min: int
    amqp_max: int
    amqp_rounds: int
    amqp_max_nodes: int  # larger node counts skip RabbitMQ ingest
    batch_links_min: int  # links per batch-ingest sample: every source once, or more
    latency_samples: int
    read_budget_s: float  # time spent repeating one read
    format_budget_s: float  # ... one conversion to Jupiter's formats
    codec_budget_s: float  # ... one encoding or decoding of one source's links
    codec_rounds: int  # encodings and decodings of every link
    late_join_max_nodes: int  # on the memory bus
    late_join_amqp_max_nodes: int
    late_join_scale_rounds: int  # rounds from SCALE_NODES nodes up

    def inproc_count(self, links: int) -> int:
        return min(self.inproc_max, max(self.inproc_min, links))

    def memory_bus_count(self, links: int) -> int:
        return min(self.memory_bus_max, max(self.memory_bus_min, links))

    def amqp_count(self, links: int) -> int:
        return min(self.amqp_max, max(self.amqp_min, links))

    def batch_count(self, n: int) -> int:
        """Batch messages per sample: one per source, cycling until ``batch_links_min``."""
        return max(n, -(-self.batch_links_min // (n - 1)))

    def late_join_rounds(self, n: int) -> int:
        return self.late_join_scale_rounds if n >= SCALE_NODES else self.rounds


def settings_for(url: str, quick: bool, nodes: tuple[int, ...], rounds: int | None) -> Settings:
    if quick:
        return Settings(
            url,
            True,
            nodes,
            rounds or 3,
            inproc_min=50_000,
            inproc_max=50_000,
            memory_bus_min=30_000,
            memory_bus_max=30_000,
            amqp_min=4_000,
            amqp_max=4_000,
            amqp_rounds=2,
            amqp_max_nodes=100,
            batch_links_min=10_000,
            latency_samples=200,
            read_budget_s=0.3,
            format_budget_s=0.3,
            codec_budget_s=0.1,
            codec_rounds=1,
            late_join_max_nodes=1_000,
            late_join_amqp_max_nodes=100,
            late_join_scale_rounds=1,
        )
    return Settings(
        url,
        False,
        nodes,
        rounds or 3,
        inproc_min=200_000,
        inproc_max=1_000_000,
        memory_bus_min=100_000,
        memory_bus_max=1_000_000,
        amqp_min=20_000,
        amqp_max=100_000,
        amqp_rounds=2,
        amqp_max_nodes=1_000,
        batch_links_min=100_000,
        latency_samples=1_000,
        read_budget_s=1.0,
        format_budget_s=4.0,
        codec_budget_s=1.0,
        codec_rounds=rounds or 3,
        late_join_max_nodes=1_000,
        late_join_amqp_max_nodes=1_000,
        late_join_scale_rounds=rounds or 3,
    )
