"""The demo's nodes: a real agent per node, with real SSH peers on shaped loopback links.

:class:`DemoCluster` starts, in this process and on one bus,

- an SFTP server per node (:mod:`.sshd`), each link ``src -> dst`` shaped to its own
  rate and latency, logins by key as the source node's name;
- a node agent per node with the three standard providers: ``resources`` (psutil),
  ``transfer`` (the asyncssh SFTP engine, host keys verified against the demo's
  ``known_hosts``) and ``network`` (the profiler, probing its peers through its own
  worker and publishing quadratic fits), peers learned from resource events.

Probing is fast here (a round every few seconds, small probes) so that fits appear in
seconds; a real deployment probes every minute (see ``docs/configuration.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from ..agent import Agent, running
from ..topology import work_queue
from ..transport import Transport, connect
from .sshd import DemoKeys, DemoServer, LinkShape, link_shapes, serve_nodes

__all__ = [
    "PROBE_SIZES_KB",
    "DemoCluster",
]

PROBE_SIZES_KB: Final = (32, 256, 1024)
"""The demo's probe payloads: three sizes on a log scale, small enough for fast rounds."""

LOCAL_HOST: Final = "127.0.0.1"
_START_SECONDS: Final = 30.0
_STOP_SECONDS: Final = 20.0


class DemoCluster:
    """``nodes`` as real agents with real SSH peers, under ``workdir``, on the bus at ``url``.

    Use it as an async context manager. On entry the SSH servers listen, every node's
    work queue exists and every agent has started; fits follow within a few probing
    rounds. ``root(node)`` is the folder a node serves (and its worker may read from).

    Example::

        async with DemoCluster("memory://demo", ["n1", "n2", "n3"], workdir=tmp) as cluster:
            cluster.shapes["n1", "n2"].mbit_per_s   # what the n1 -> n2 link is held to
            cluster.servers["n2"].port               # n2's SFTP server on 127.0.0.1
    """

    def __init__(
        self,
        url: str,
        nodes: Sequence[str],
        *,
        workdir: Path,
        probe_interval: float = 3.0,
        seed: int = 1,
        delete_queues: bool = False,
    ) -> None:
        self.url = url
        self.nodes = list(nodes)
        self.workdir = workdir
        self.probe_interval = probe_interval
        self.delete_queues = delete_queues
        self.shapes: dict[tuple[str, str], LinkShape] = link_shapes(self.nodes, seed=seed)
        self.servers: dict[str, DemoServer] = {}
        self.keys: DemoKeys | None = None
        self.agents: list[Agent] = []
        self._stack = contextlib.AsyncExitStack()
        self._transport: Transport | None = None

    def root(self, node: str) -> Path:
        """The folder ``node``'s SSH server serves (its ``/``)."""
        return self.workdir / "nodes" / node

    async def __aenter__(self) -> Self:
        try:
            self.keys = await asyncio.to_thread(DemoKeys.create, self.workdir / "keys", self.nodes)
            roots = {node: self.root(node) for node in self.nodes}
            self.servers = await self._stack.enter_async_context(
                serve_nodes(self.keys, roots, self.shapes)
            )
            self._transport = await connect(self.url, connection_name="jupiter-bus demo cluster")
            for node in self.nodes:
                await self._transport.declare_work_queue(node)
                self.agents.append(
                    Agent(
                        node,
                        self.url,
                        self.providers(node),
                        host=LOCAL_HOST,
                        ssh_port=self.servers[node].port,
                        grace=5.0,
                    )
                )
            await self._stack.enter_async_context(
                running(self.agents, start_timeout=_START_SECONDS, stop_timeout=_STOP_SECONDS)
            )
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._shutdown()

    def providers(self, node: str) -> dict[str, dict[str, Any]]:
        """The providers of ``node``'s agent: resources, an SFTP worker, the profiler."""
        assert self.keys is not None
        state = self.workdir / "state" / node
        return {
            "resources": {"interval": 1.0},
            "transfer": {
                "engine": "sftp",
                "known_hosts": str(self.keys.known_hosts),
                "client_keys": [str(self.keys.client_key(node))],
                "allow_roots": [str(self.root(node))],
                "state_dir": str(state),
                "max_attempts": 2,
                "progress_interval": 0.1,  # the demo's transfers last a fraction of a second
            },
            "network": {
                # Its peers named, not learned from resource events: on a shared broker
                # those would include other deployments' nodes. The demo's servers know
                # a node by its name: that is its login everywhere.
                "peers": [
                    {"node": peer, "host": LOCAL_HOST, "port": server.port, "user": node}
                    for peer, server in self.servers.items()
                    if peer != node
                ],
                "probe_sizes_kb": list(PROBE_SIZES_KB),
                "interval": self.probe_interval,
                "jitter": 0.2,
                "fresh_seconds": 0.0,
                "window": 18,
                "refresh_seconds": 4 * self.probe_interval,
                "change_tolerance": 0.02,
                "max_probes_per_round": 3 * len(self.nodes),
                "probe_timeout": 30.0,
                "state_dir": str(state),
            },
        }

    async def _shutdown(self) -> None:
        # the agents first (the stack's last entry), then the SSH servers
        transport, self._transport = self._transport, None
        try:
            await self._stack.aclose()
        finally:
            if transport is not None:
                try:
                    if self.delete_queues:
                        for node in self.nodes:
                            await transport.delete_queue(work_queue(node))
                finally:
                    await transport.close()
