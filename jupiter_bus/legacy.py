"""Jupiter's own call style, kept working: the mapping functions and data formats.

Jupiter's threaded code selects its integration functions by number
(``TRANSFER=0``, ``PROFILER=0`` in ``jupiter_config.ini``) and calls them
synchronously. These functions return synchronous callables backed by one
:class:`~jupiter_bus.facade.JupiterInterface` running on one event loop in a daemon
thread (the one place jupiter-bus uses a thread):

- :func:`transfer_mapping_decorator` -> ``data_transfer(IP, user, pword, source,
  destination)``, which blocks until the copy is done and **raises** on failure
  (:class:`~jupiter_bus.facade.TransferFailed`), where the original never noticed;
- :func:`get_network_data_mapping` -> a function returning WAVE's
  ``{dest_name: {"a", "b", "c", "ip"}}`` for this node (``heft_rows``/``tgff``
  variants below);
- :func:`get_resource_data_mapping` -> a function returning
  ``{node: {"cpu", "memory", "last_update"}}``;
- :func:`profilers_mapping_decorator`, as in the original.

The formats themselves are pure functions in :mod:`jupiter_bus.formats`.

Where the bus is comes from :func:`configure` or the environment:
``JUPITER_BUS_URL`` (default ``amqp://guest:guest@127.0.0.1:5672/``) and
``JUPITER_BUS_NODE`` (this node's name, the executing node of transfers; Jupiter sets
``NODE_NAME``, which is used when ``JUPITER_BUS_NODE`` is absent).

Example::

    from jupiter_bus.legacy import transfer_mapping_decorator

    transfer_data = transfer_mapping_decorator(0)
    transfer_data("10.0.0.12", "jupiter", None, "/output/a.bin", "/input/a.bin")
"""

from __future__ import annotations

import asyncio
import atexit
import csv
import functools
import os
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from . import formats
from .errors import ConfigError
from .facade import JupiterInterface
from .messages import TransferEngine, TransferResult
from .state import ResourceData, StateUnavailable

__all__ = [
    "DEFAULT_SETTLE",
    "DEFAULT_URL",
    "PROFILERS_BY_NUMBER",
    "TRANSFER_ENGINES_BY_NUMBER",
    "LegacyBus",
    "configure",
    "get_network_data_mapping",
    "get_resource_data_mapping",
    "heft_network_rows",
    "profilers_mapping_decorator",
    "shutdown",
    "transfer_mapping_decorator",
    "write_network_log",
    "write_tgff_quadratic",
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
TRANSFER_ENGINES_BY_NUMBER: dict[int, TransferEngine | None] = {
    0: None,  # the worker's default engine (SFTP): Jupiter's "0 = SCP" slot
    1: "scp",
    2: "openssh-scp",
    3: "local",
}
"""Jupiter's ``TRANSFER`` numbers: 0 is the default; names are accepted too."""
PROFILERS_BY_NUMBER = {0: "network"}
"""Jupiter's ``PROFILER`` numbers: 0 is DRUPE, here the ``network`` provider."""


DEFAULT_SETTLE = 2.0
"""Seconds without a new node after which a legacy call without a worker list takes the
nodes heard so far as all there are."""


class LegacyBus:
    """One :class:`JupiterInterface` on an event loop in a daemon thread, for sync callers.

    ``nodes`` is Jupiter's worker list, the nodes the mapping functions wait for
    (``None``: every node heard until none new came for ``settle`` seconds).

    Example::

        bus = LegacyBus("amqp://guest:guest@127.0.0.1/", node="node1")
        data = bus.call(lambda jupiter: jupiter.get_resource_data(timeout=30))
        bus.close()
    """

    def __init__(
        self,
        url: str,
        *,
        node: str | None = None,
        timeout: float = 60.0,
        nodes: Sequence[str] | None = None,
        settle: float = DEFAULT_SETTLE,
    ) -> None:
        self.url = url
        self.node = node
        self.timeout = timeout
        self.nodes = None if nodes is None else tuple(nodes)
        self.settle = settle
        self.settled: frozenset[str] = frozenset()  # the nodes of the last settled window
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="jupiter-bus", daemon=True
        )
        self._thread.start()
        self._interface = JupiterInterface(
            url, node=node, connection_name=f"jupiter-bus legacy {node}"
        )
        try:
            self._submit(self._interface.__aenter__(), timeout)
        except BaseException:
            self._stop_loop()
            raise

    def _submit(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def call(
        self,
        work: Callable[[JupiterInterface], Coroutine[Any, Any, T]],
        timeout: float | None = None,
    ) -> T:
        """Run ``work(interface)`` on the bus's loop and wait for its result."""
        limit = self.timeout if timeout is None else timeout
        return self._submit(work(self._interface), limit + 5.0)

    def close(self) -> None:
        """Close the interface and stop the loop thread."""
        if self._loop.is_closed():
            return
        try:
            self._submit(self._interface.close(), 30.0)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()


_lock = threading.Lock()
_bus: LegacyBus | None = None
_settings: dict[str, Any] = {}


def configure(
    url: str | None = None,
    *,
    node: str | None = None,
    timeout: float = 60.0,
    nodes: Sequence[str] | None = None,
    settle: float = DEFAULT_SETTLE,
) -> None:
    """Say where the bus is and which node this is (before the first call; closes any open bus).

    ``url`` names one deployment: give each its own RabbitMQ vhost
    (``amqp://user:pw@broker:5672/<vhost>``), or its own ``memory://<name>``.
    ``nodes`` is Jupiter's worker list, the nodes every mapping function waits for
    and limits its answer to (a call's own ``nodes=`` wins); without one, a call takes
    every node heard until none new came for ``settle`` seconds.

    Example::

        configure("amqp://jupiter:pw@broker/jupiter-prod", node="node1",
                  nodes=["node1", "node2", "node3"], timeout=120)
    """
    global _bus
    with _lock:
        if _bus is not None:
            _bus.close()
            _bus = None
        _settings.update(url=url, node=node, timeout=timeout, nodes=nodes, settle=settle)


def _current() -> LegacyBus:
    global _bus
    with _lock:
        if _bus is None:
            url = _settings.get("url") or os.environ.get("JUPITER_BUS_URL") or DEFAULT_URL
            node = (
                _settings.get("node")
                or os.environ.get("JUPITER_BUS_NODE")
                or os.environ.get("NODE_NAME")
            )
            _bus = LegacyBus(
                url,
                node=node,
                timeout=_settings.get("timeout", 60.0),
                nodes=_settings.get("nodes"),
                settle=_settings.get("settle", DEFAULT_SETTLE),
            )
        return _bus


def shutdown() -> None:
    """Close the shared bus (also done at interpreter exit)."""
    configure(
        _settings.get("url"),
        node=_settings.get("node"),
        timeout=_settings.get("timeout", 60.0),
        nodes=_settings.get("nodes"),
        settle=_settings.get("settle", DEFAULT_SETTLE),
    )


atexit.register(shutdown)


def _engine(choice: int | str | None) -> TransferEngine | None:
    if choice is None:
        return None
    if isinstance(choice, int) and not isinstance(choice, bool):
        if choice not in TRANSFER_ENGINES_BY_NUMBER:
            known = ", ".join(
                f"{k} ({v or 'default'})" for k, v in TRANSFER_ENGINES_BY_NUMBER.items()
            )
            raise ConfigError(f"no transfer method number {choice}; known: {known}")
        return TRANSFER_ENGINES_BY_NUMBER[choice]
    names = {v for v in TRANSFER_ENGINES_BY_NUMBER.values() if v} | {"sftp"}
    if choice not in names:
        raise ConfigError(f"no transfer engine {choice!r}; known: {', '.join(sorted(names))}")
    return choice  # type: ignore[return-value]


def transfer_mapping_decorator(
    TRANSFER: int | str | Callable[..., Any] = 0,
) -> Callable[..., TransferResult]:
    """Jupiter's transfer selector: returns ``data_transfer(IP, user, pword, source, destination)``.

    ``TRANSFER`` is Jupiter's number (0: the default engine) or an engine name. As in
    Jupiter's code, it can also decorate a placeholder function (``@transfer_mapping_decorator``),
    which it replaces. The returned function blocks until the copy is done, returns
    its :class:`~jupiter_bus.messages.TransferResult` and raises
    :class:`~jupiter_bus.facade.TransferFailed` (a subclass per error kind) on failure.
    Keyword arguments ``via``, ``port``, ``timeout``, ``deadline`` and ``create_dirs``
    pass through. The job's deadline is ``timeout`` from now unless ``deadline`` (UTC
    epoch seconds) is given: a job to a node whose agent is down raises
    :class:`~jupiter_bus.facade.NoReply` after ``timeout`` and expires in its queue
    instead of running when the agent comes back.
    """
    engine = None if callable(TRANSFER) else _engine(TRANSFER)

    def data_transfer(
        IP: str,
        user: str,
        pword: str | None,
        source: str,
        destination: str,
        **options: Any,
    ) -> TransferResult:
        bus = _current()
        timeout = float(options.pop("timeout", bus.timeout))
        return bus.call(
            lambda jupiter: jupiter.data_transfer(
                IP,
                user,
                pword or None,
                source,
                destination,
                engine=engine,
                timeout=timeout,
                **options,
            ),
            timeout,
        )

    if callable(TRANSFER):
        functools.update_wrapper(data_transfer, TRANSFER)
    return data_transfer


def profilers_mapping_decorator(f: F) -> F:
    """Jupiter's general mapping decorator: wraps ``f`` unchanged."""

    @functools.wraps(f)
    def profiler_mapping(*args: Any, **kwargs: Any) -> Any:
        return f(*args, **kwargs)

    return profiler_mapping  # type: ignore[return-value]


def _profiler(choice: int | str) -> str:
    if isinstance(choice, int) and not isinstance(choice, bool):
        if choice not in PROFILERS_BY_NUMBER:
            raise ConfigError(
                f"no profiler number {choice}; known: 0 (DRUPE, the network provider)"
            )
        return PROFILERS_BY_NUMBER[choice]
    if choice not in ("network", "drupe"):
        raise ConfigError(f"no profiler {choice!r}; known: network (DRUPE)")
    return "network"


# -- a complete picture --------------------------------------------------------------------


async def _heard_nodes(
    bus: LegacyBus, jupiter: JupiterInterface, settle: float, deadline: float, home: str | None
) -> list[str]:
    """Every node heard (resources or links; not ``home``) once none new came for
    ``settle`` seconds, or at ``deadline``; raises when none was heard at all."""
    loop = asyncio.get_running_loop()

    def known() -> set[str]:
        return {*jupiter.resources.nodes, *jupiter.network.nodes} - {home}

    seen = known()
    if seen and seen == bus.settled:  # no node new since a previous call settled
        return sorted(seen)
    started = loop.time()
    quiet_until = started + settle
    while True:
        now = loop.time()
        if (seen and now >= quiet_until) or now >= deadline:
            break
        until = min(quiet_until, deadline) if seen else deadline
        await _either_changed(jupiter, until - now)
        if known() - seen:
            seen |= known()
            quiet_until = loop.time() + settle
    if not seen:
        raise StateUnavailable(
            f"no node heard within {loop.time() - started:.3g} s: is a node agent "
            "publishing on this bus (same broker URL and vhost)?"
        )
    if loop.time() >= quiet_until:  # a real quiet window, not the deadline
        bus.settled = frozenset(seen)
    return sorted(seen)


async def _either_changed(jupiter: JupiterInterface, timeout: float) -> None:
    """Wait up to ``timeout`` for the network or the resource state to change."""
    waits = [
        asyncio.ensure_future(jupiter.network.wait_changed(jupiter.network.version, timeout)),
        asyncio.ensure_future(jupiter.resources.wait_changed(jupiter.resources.version, timeout)),
    ]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)  # a failure shows in the next read


async def _expected(
    bus: LegacyBus,
    jupiter: JupiterInterface,
    nodes: Sequence[str] | None,
    settle: float | None,
    home: str | None,
    deadline: float,
) -> list[str]:
    """The nodes a legacy call must cover: the worker list given (to the call, else to
    :func:`configure`), or every node heard within the settle window but ``home``."""
    listed = nodes if nodes is not None else bus.nodes
    if listed is not None:
        return list(dict.fromkeys(listed))
    window = bus.settle if settle is None else settle
    return await _heard_nodes(bus, jupiter, window, deadline, home)


def _left(deadline: float) -> float:
    return max(0.0, deadline - asyncio.get_running_loop().time())


def _limit(bus: LegacyBus, timeout: float | None) -> float:
    return bus.timeout if timeout is None else timeout


def get_network_data_mapping(PROFILER: int | str = 0) -> Callable[..., dict[str, dict[str, Any]]]:
    """Jupiter's network-data selector: returns a function giving WAVE's view of this node.

    The returned ``get_network_data(*legacy_args, source=None, nodes=None, settle=None,
    home="home", timeout=None, max_age=None)`` returns ``{dest_name: {"a", "b", "c",
    "ip"}}`` for ``source`` (default: this node): one entry per expected node, once
    the link from ``source`` to each and each one's address are known. Expected nodes
    are ``nodes`` (Jupiter's worker list; else the one given to :func:`configure`), or
    without a list every node heard until none new came for ``settle`` seconds; links
    to other nodes are left out. Past ``timeout`` it raises
    :class:`~jupiter_bus.state.StateUnavailable` naming what is missing (the original
    polled MongoDB forever). Jupiter's positional arguments (profiler IPs, Mongo
    port, network map) are accepted and ignored: the bus replaces them.
    """
    _profiler(PROFILER)

    def get_network_data(
        *_legacy: Any,
        source: str | None = None,
        nodes: Sequence[str] | None = None,
        settle: float | None = None,
        home: str | None = "home",
        timeout: float | None = None,
        max_age: float | None = None,
    ) -> dict[str, dict[str, Any]]:
        bus = _current()
        origin = source or bus.node
        if origin is None:
            raise ConfigError(
                "get_network_data needs this node's name: JUPITER_BUS_NODE or source="
            )
        limit = _limit(bus, timeout)

        async def fetch(jupiter: JupiterInterface) -> dict[str, dict[str, Any]]:
            deadline = asyncio.get_running_loop().time() + limit
            expected = await _expected(bus, jupiter, nodes, settle, home, deadline)
            peers = [x for x in expected if x not in (origin, home)]
            data = await jupiter.get_network_data(
                links=[(origin, x) for x in peers], timeout=_left(deadline), max_age=max_age
            )
            resources = await jupiter.get_resource_data(
                nodes=peers, timeout=_left(deadline), max_age=max_age
            )
            view = formats.wave(data, origin, resources.ips(), home=home) if origin in data else {}
            return {x: view[x] for x in peers if x in view}

        return profilers_mapping_decorator(lambda: bus.call(fetch, limit))()

    return get_network_data


def get_resource_data_mapping(PROFILER: int | str = 0) -> Callable[..., dict[str, dict[str, Any]]]:
    """Jupiter's resource-data selector: returns a function giving every node's CPU and memory.

    The returned ``get_resource_data(*legacy_args, nodes=None, settle=None,
    home="home", timeout=None, max_age=None)`` returns ``{node: {"cpu": percent, "memory":
    percent, "last_update": "%B %d %Y - %H:%M:%S"}}`` for exactly the expected nodes
    (``nodes``, else :func:`configure`'s, else every node heard until none new came
    for ``settle`` seconds), once each has a sample; past ``timeout`` it raises
    :class:`~jupiter_bus.state.StateUnavailable` naming the missing ones. The node
    named ``home`` (Jupiter's master) is never expected; list it to have it.
    """
    _profiler(PROFILER)

    def get_resource_data(
        *_legacy: Any,
        nodes: Sequence[str] | None = None,
        settle: float | None = None,
        home: str | None = "home",
        timeout: float | None = None,
        max_age: float | None = None,
    ) -> dict[str, dict[str, Any]]:
        bus = _current()
        limit = _limit(bus, timeout)

        async def fetch(jupiter: JupiterInterface) -> dict[str, dict[str, Any]]:
            deadline = asyncio.get_running_loop().time() + limit
            expected = await _expected(bus, jupiter, nodes, settle, home, deadline)
            data = await jupiter.get_resource_data(
                nodes=expected, timeout=_left(deadline), max_age=max_age
            )
            return formats.jupiter_resources(data[x] for x in expected)

        return bus.call(fetch, limit)

    return get_resource_data


async def _complete_network(
    bus: LegacyBus,
    jupiter: JupiterInterface,
    nodes: Sequence[str] | None,
    settle: float | None,
    home: str | None,
    limit: float,
) -> tuple[formats.NodeSubset, ResourceData]:
    """Every link among the expected nodes and each one's address, or StateUnavailable."""
    deadline = asyncio.get_running_loop().time() + limit
    listed = await _expected(bus, jupiter, nodes, settle, home, deadline)
    expected = [x for x in listed if x != home]  # HEFT leaves home's links out
    resources = await jupiter.get_resource_data(nodes=expected, timeout=_left(deadline))
    data = await jupiter.get_network_data(nodes=expected, timeout=_left(deadline))
    return formats.select_nodes(data, expected), resources


def heft_network_rows(
    *,
    nodes: Sequence[str] | None = None,
    settle: float | None = None,
    home: str | None = "home",
    timeout: float | None = None,
) -> list[list[str]]:
    """HEFT's rows ``[src_name, src_ip, dst_name, dst_ip, "a b c"]``, links to home left out.

    One row per ordered pair of expected nodes (``nodes``: Jupiter's worker list, else
    :func:`configure`'s, else every node heard until none new came for ``settle``
    seconds), returned once every one of those links and every node's address is
    known; past ``timeout`` it raises :class:`~jupiter_bus.state.StateUnavailable`
    naming what is missing (HEFT takes a missing link as free). No row names a node
    outside the list.
    """
    bus = _current()
    limit = _limit(bus, timeout)

    async def fetch(jupiter: JupiterInterface) -> list[list[str]]:
        data, resources = await _complete_network(bus, jupiter, nodes, settle, home, limit)
        return formats.heft_rows(data, home=home, ips=resources.ips())

    return bus.call(fetch, limit)


def write_network_log(
    path: str | Path,
    rows: list[list[str]] | None = None,
    *,
    nodes: Sequence[str] | None = None,
    settle: float | None = None,
    home: str | None = "home",
    timeout: float | None = None,
) -> None:
    """Write HEFT's ``network_log.txt`` as Jupiter did (CSV, every field quoted).

    ``rows`` default to :func:`heft_network_rows` with the other arguments (the
    complete picture, or :class:`~jupiter_bus.state.StateUnavailable` and no file).
    """
    if rows is None:
        rows = heft_network_rows(nodes=nodes, settle=settle, home=home, timeout=timeout)
    with open(path, "w", newline="") as file:
        csv.writer(file, quoting=csv.QUOTE_ALL).writerows(rows)


def write_tgff_quadratic(
    path: str | Path,
    *,
    nodes: Sequence[str] | None = None,
    settle: float | None = None,
    home: str | None = "home",
    timeout: float | None = None,
    computation: Mapping[str, str] | None = None,
) -> None:
    """Append HEFT's TGFF ``@quadratic 0 {`` section (current link costs) to ``path``.

    The links are those of :func:`heft_network_rows` (every link among the expected
    nodes, or :class:`~jupiter_bus.state.StateUnavailable` and nothing written). The
    section starts on a line of its own: after a file whose last line has no newline
    one is added first (upstream's parser loops forever on ``}@quadratic``).
    """
    bus = _current()
    limit = _limit(bus, timeout)

    async def fetch(jupiter: JupiterInterface) -> str:
        data, _ = await _complete_network(bus, jupiter, nodes, settle, home, limit)
        return formats.tgff_quadratic(data, home=home)

    section = bus.call(fetch, limit)
    with open(path, "a+b") as file:
        if file.tell() > 0:
            file.seek(-1, os.SEEK_END)
            if file.read(1) != b"\n":
                section = "\n" + section
        file.write(section.encode())
