"""The facade's waiting reads: snapshot the live state until it holds what was asked.

A read returns at once when the state holds the nodes or links asked for; otherwise it
waits for the state to change (no polling) up to its timeout, then raises
:class:`~jupiter_bus.errors.StateUnavailable` naming what is missing, or
:class:`~jupiter_bus.errors.StaleState` when everything asked for is older than
``max_age``.

Example::

    reads = StateReads(network, resources, failure=lambda: None)
    data = await reads.network_data(nodes=["n1", "n2"], max_age=None, timeout=5.0)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from ..errors import StaleState, StateUnavailable
from ..state import Coverage, NetworkData, NetworkState, ResourceData, ResourceState

__all__ = ["StateReads"]

D = TypeVar("D", NetworkData, ResourceData)


class StateReads:
    """Reads of one interface's network and resource state that wait for coverage.

    ``failure`` gives the interface's failure, if any: a read that times out after the
    interface failed raises that instead of naming what is missing.

    Example::

        reads = StateReads(NetworkState(), ResourceState(), failure=lambda: None)
        data = await reads.resource_data(nodes=["n1"], max_age=30, timeout=5.0)
    """

    def __init__(
        self,
        network: NetworkState,
        resources: ResourceState,
        failure: Callable[[], BaseException | None],
    ) -> None:
        self._network = network
        self._resources = resources
        self._failure = failure

    async def network_data(
        self,
        *,
        max_age: float | None,
        timeout: float,
        nodes: Iterable[str] | None,
        links: Iterable[tuple[str, str]] | None,
    ) -> NetworkData:
        """A snapshot holding every link between ``nodes`` and every pair in ``links``."""
        wanted_nodes = None if nodes is None else list(nodes)
        wanted_links = None if links is None else list(links)

        def judge(data: NetworkData, now: float) -> Coverage:
            return data.coverage(nodes=wanted_nodes, links=wanted_links, max_age=max_age, now=now)

        listed = wanted_nodes is not None or wanted_links is not None
        # What any satisfied answer needs: every node of a requested link known, and at
        # least as many links held as requested (a node alone, or a self-link, asks nothing).
        listed_nodes = set(wanted_nodes or ())
        pairs = {(src, dst) for src, dst in wanted_links or () if src != dst}
        names = {x for pair in pairs for x in pair} | (
            listed_nodes if len(listed_nodes) > 1 else set()
        )
        least = max(len(listed_nodes) * (len(listed_nodes) - 1), len(pairs))

        def possible(data: NetworkData) -> bool:
            return data.link_count >= least and all(x in data for x in names)

        ok, data, coverage = await self._await_state(
            self._network, judge, listed, max_age, timeout, possible
        )
        if ok:
            return data
        raise _state_error("network", "links", data, coverage, max_age, timeout)

    async def resource_data(
        self, *, max_age: float | None, timeout: float, nodes: Iterable[str] | None
    ) -> ResourceData:
        """A snapshot holding a sample of every node in ``nodes`` (or of at least one)."""
        wanted = None if nodes is None else list(nodes)

        def judge(data: ResourceData, now: float) -> Coverage:
            return data.coverage(nodes=wanted, max_age=max_age, now=now)

        def possible(data: ResourceData) -> bool:
            return wanted is None or all(x in data for x in wanted)

        ok, data, coverage = await self._await_state(
            self._resources, judge, wanted is not None, max_age, timeout, possible
        )
        if ok:
            return data
        raise _state_error("resource", "nodes", data, coverage, max_age, timeout)

    async def address(self, node: str, *, timeout: float) -> tuple[str, int]:
        """Where ``node`` is reached, ``(host, ssh_port)``, from its resource events."""
        resources = await self.resource_data(max_age=None, timeout=timeout, nodes=[node])
        host = resources.host(node)
        if host is None:
            raise StateUnavailable(
                f"node {node!r} announced no host in its resource events (its agent needs "
                "a host: 'jupiter-bus agent --host ...'); pass the address to data_transfer",
                missing=[node],
            )
        return host, resources.ssh_port(node) or 22

    async def _await_state(
        self,
        state: NetworkState | ResourceState,
        judge: Callable[[D, float], Coverage],
        listed: bool,
        max_age: float | None,
        timeout: float,
        possible: Callable[[D], bool],
    ) -> tuple[bool, D, Coverage]:
        """Snapshot until ``judge`` is satisfied or ``timeout`` passes; (ok, last, coverage).

        ``possible`` is a cheap necessary condition (counts, names known): while it does
        not hold, the full judgement (O(N²) for N requested nodes) is skipped, since a
        state filling with thousands of updates wakes this loop hundreds of times.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            now = time.monotonic()
            data: D = state.snapshot(max_age=max_age, now=now)  # type: ignore[assignment]
            remaining = deadline - loop.time()
            if remaining <= 0 or possible(data):
                coverage = judge(data, now)
                if _satisfied(coverage, listed, max_age):
                    return True, data, coverage
            if remaining <= 0:
                failure = self._failure()
                if failure is not None:
                    raise failure
                return False, data, coverage
            version = data.version
            # Not held while waiting: a live snapshot makes the next update copy the
            # arrays (60 MB at 1,000 nodes) instead of writing in place.
            del data
            with contextlib.suppress(TimeoutError):
                await state.wait_changed(version, remaining)


def _satisfied(coverage: Coverage, listed: bool, max_age: float | None) -> bool:
    """Whether a read can return: all requested present, and one fresh if ``max_age``.

    Asking for nothing (empty lists, one node's links among themselves) is satisfied at
    once; asking for nothing in particular needs at least one entry.
    """
    if coverage.missing:
        return False
    if coverage.requested == 0:
        return listed
    return max_age is None or coverage.fresh > 0


def _state_error(
    what: str,
    unit: str,
    data: NetworkData | ResourceData,
    coverage: Coverage,
    max_age: float | None,
    timeout: float,
) -> StateUnavailable | StaleState:
    """The error for a state read that timed out, naming what is missing or stale."""
    if coverage.requested == 0:
        return StateUnavailable(
            f"no {what} data within {timeout:g} s: nothing has been received yet "
            f"(is a {what} provider publishing on this bus?)"
        )
    if coverage.missing:
        unknown = ""
        if coverage.unknown_nodes and unit == "links":
            never = coverage.unknown_nodes
            unknown = f" (never heard of: {_listing(never[:20], len(never))})"
        return StateUnavailable(
            f"no {what} data within {timeout:g} s for {coverage.missing} of "
            f"{coverage.requested} requested {unit}: "
            f"{_listing(coverage.missing_examples, coverage.missing)}{unknown}",
            missing=coverage.missing_examples,
        )
    return StaleState(
        f"all {coverage.requested} requested {unit} are older than max_age={max_age:g} s "
        f"(by receipt time), and no fresh update came within {timeout:g} s: "
        f"{_listing(coverage.stale_examples, coverage.stale)}",
        stale=coverage.stale_examples,
        count=coverage.stale,
        data=data,
    )


def _listing(examples: Iterable[str], total: int) -> str:
    shown = list(examples)
    more = total - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")
