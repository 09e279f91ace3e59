"""The publisher child process: ``bench/facade.py --publisher-child``, and its parent's handle."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import orjson
from harness.window import in_window

from facade_parts.agents import Agents
from facade_parts.settings import JSON
from facade_parts.synthetic import Topology, batch_bodies, keyed_bodies
from jupiter_bus.batch import BATCH_CONTENT_TYPE
from jupiter_bus.topology import EVENTS_EXCHANGE
from jupiter_bus.transport import Transport, connect

PUBLISH_WINDOW: Final = 500
NETWORK_PATTERN: Final = "network.*.*"
BATCH_PATTERN: Final = "network-batch.*"


def topology_command(cmd: str, topology: Topology, **more: Any) -> dict[str, Any]:
    return {"cmd": cmd, "run_id": topology.run_id, "label": topology.label, "n": topology.n,
            **more}  # fmt: skip


class PublisherProcess:
    """``script`` (``bench/facade.py``) run as ``--publisher-child``: publishes prepared
    updates on command, and runs the late-joiner section's agents.

    Its methods block on purpose: while :meth:`publish` waits for the child, this
    process's event loop is held, so no consumer here reads until the backlog is
    complete, and the consumers are then timed draining it (as ``bus.py`` times
    consuming a pre-filled queue).
    """

    def __init__(self, url: str, script: str) -> None:
        self._process = subprocess.Popen(
            [sys.executable, script, "--publisher-child", "--url", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        process = self._process
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(orjson.dumps(command) + b"\n")
        process.stdin.flush()
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the publisher process ended (exit code {process.poll()})")
        answer: dict[str, Any] = orjson.loads(line)
        if "error" in answer:
            raise RuntimeError(f"publisher process: {answer['error']}")
        return answer

    def prepare(self, feed: Feed, topology: Topology, count: int) -> None:
        """Have the child encode ``count`` messages of ``feed`` for ``topology`` (untimed)."""
        self._ask(topology_command("prepare", topology, kind=feed.kind, count=count))

    def publish(self, feed: Feed, count: int) -> float:
        """Publish the first ``count`` prepared messages, holding this process meanwhile;
        the child's seconds."""
        command = {"cmd": "go", "kind": feed.kind, "count": count, "window": PUBLISH_WINDOW}
        return float(self._ask(command)["seconds"])

    def start_agents(self, topology: Topology) -> dict[str, float]:
        """One agent per node of ``topology`` in the child, each publishing its links as one
        batch; the child's seconds to build the links, start the agents and publish."""
        answer = self._ask(topology_command("agents", topology))
        return {key: float(value) for key, value in answer.items()}

    def touch_links(self) -> float:
        """Every agent publishes its first link again: its next answer is built anew."""
        return float(self._ask({"cmd": "touch"})["seconds"])

    def stop_agents(self) -> None:
        self._ask({"cmd": "stop-agents"})

    def close(self) -> None:
        process = self._process
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(slots=True)
class PublisherChild:
    """The child side of :class:`PublisherProcess`: one JSON command in, one answer out."""

    transport: Transport
    prepared: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    agents: Agents | None = None

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        topology = Topology(
            command.get("run_id", ""), command.get("n", 2), command.get("label", "")
        )
        cmd, kind = command["cmd"], command.get("kind", "links")
        if cmd == "prepare":
            make = batch_bodies if kind == "batches" else partial(keyed_bodies, start=0)
            self.prepared[kind] = make(topology, count=command["count"])
            return {"ready": len(self.prepared[kind])}
        if cmd == "go":
            part = self.prepared[kind][: command["count"]]
            content_type = BATCH_CONTENT_TYPE if kind == "batches" else JSON
            return {"seconds": await publish_all(self.transport, part, command["window"],
                                                 content_type)}  # fmt: skip
        if cmd == "agents":
            self.agents, timings = await Agents.set_up(self.transport, topology)
            gc.collect()
            gc.freeze()  # the agents' 999,000 links: no full collection walks them again
            return timings
        if cmd == "touch" and self.agents is not None:
            return {"seconds": await self.agents.publish_links(first=1)}
        if cmd == "stop-agents" and self.agents is not None:
            await self.close()
            gc.unfreeze()
            return {"stopped": True}
        return {"error": f"unknown command {cmd!r} (or no agents running)"}

    async def close(self) -> None:
        agents, self.agents = self.agents, None
        if agents is not None:
            await agents.stop()


async def publisher_child(url: str) -> None:
    """Read commands from stdin until it closes; answer each on stdout."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport = await connect(url, connection_name="bench/facade.py publisher")
    child = PublisherChild(transport)

    def answer(obj: dict[str, Any]) -> None:
        sys.stdout.write(orjson.dumps(obj).decode() + "\n")
        sys.stdout.flush()

    try:
        while line := await reader.readline():
            answer(await child.handle(orjson.loads(line)))
    except Exception as exc:
        answer({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        await child.close()
        await transport.close()


async def publish_all(
    transport: Transport, updates: Sequence[tuple[str, bytes]], window: int, content_type: str
) -> float:
    """Publish every update with ``window`` confirms outstanding; seconds taken."""
    pending = iter(updates)

    async def one() -> None:
        key, body = next(pending)
        await transport.publish(EVENTS_EXCHANGE, key, body, content_type=content_type)

    return (await in_window(len(updates), window, one)).wall_s


@dataclass(frozen=True, slots=True)
class Feed:
    """What the child publishes for one ingest figure, and how results are keyed."""

    prefix: str  # of the result keys
    kind: str  # the child's prepared messages: "links" or "batches"
    pattern: str  # what the raw and transport consumers bind
    links_per_message: int


def link_feed() -> Feed:
    return Feed("amqp", "links", NETWORK_PATTERN, 1)


def batch_feed(n: int) -> Feed:
    return Feed("amqpb", "batches", BATCH_PATTERN, n - 1)
