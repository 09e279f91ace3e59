"""The one backoff policy, shared by the agent, the transfer worker and the profiler."""

from __future__ import annotations

import time

import pytest
from jupiter_providers.network import NetworkProvider
from jupiter_providers.transfer import TransferProvider

from jupiter_bus.agent import RestartPolicy
from jupiter_bus.backoff import Backoff
from jupiter_bus.errors import ConfigError, CopyFailure
from jupiter_bus.plugins import NodeContext
from jupiter_bus.transport import Transport


def test_backoff_doubles_from_initial_up_to_its_cap() -> None:
    backoff = Backoff(initial_seconds=0.5, max_seconds=10.0, jitter=0.0)
    assert [backoff.delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.delay(0) == 0.5
    assert backoff.delay(10**9) == 10.0  # no overflow however long it keeps failing


def test_backoff_jitter_only_shortens_a_delay() -> None:
    backoff = Backoff(initial_seconds=1.0, max_seconds=30.0, jitter=0.5)
    delays = [backoff.delay(3) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays)
    assert max(delays) - min(delays) > 1.0


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ConfigError, match="jitter"):
        Backoff(jitter=1.5)
    with pytest.raises(ConfigError, match=">= 0 seconds"):
        Backoff(initial_seconds=-1)


def test_the_agent_the_worker_and_the_profiler_share_the_backoff(transport: Transport) -> None:
    restart = RestartPolicy(initial_seconds=0.5, max_seconds=30.0)
    assert restart.backoff == Backoff(0.5, 30.0, 0.5)
    assert all(0.25 * 2**n <= restart.delay(n + 1) <= 0.5 * 2**n for n in range(5))

    context = NodeContext("n1", transport)
    worker = TransferProvider(
        context, {"retry_initial_seconds": 0.5, "retry_max_seconds": 10.0, "max_attempts": 9}
    )
    assert worker.retry == Backoff(0.5, 10.0, 0.5)
    transient = CopyFailure("unreachable", "refused", transient=True)
    assert 4.0 <= (worker._retry_delay(transient, 5, None) or 0) <= 8.0
    assert worker._retry_delay(transient, 9, None) is None  # attempts used up
    assert worker._retry_delay(transient, 1, time.time() + 0.1) is None  # past the deadline
    assert worker._retry_delay(CopyFailure("auth", "no"), 1, None) is None

    profiler = NetworkProvider(context, {"interval": 60})
    # The profiler's rule so far: interval * 2**min(failures, 6), at most an hour, no jitter.
    expected = [min(60 * 2 ** min(f, 6), 3600.0) for f in range(1, 10)]
    assert [profiler.failure_backoff.delay(f) for f in range(1, 10)] == expected
    fast = NetworkProvider(context, {"interval": 0.1})
    expected = [min(0.1 * 2 ** min(f, 6), 3600.0) for f in range(1, 10)]
    assert [fast.failure_backoff.delay(f) for f in range(1, 10)] == pytest.approx(expected)
