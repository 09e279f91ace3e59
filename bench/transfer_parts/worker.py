"""The transfer worker under test: an agent running ``TransferProvider``, and its requests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from harness.errors import BenchError

from jupiter_bus.agent import Agent
from jupiter_bus.messages import TransferRequest, TransferResult, decode, encode
from jupiter_bus.topology import TRANSFERS_EXCHANGE, work_queue
from jupiter_bus.transport import Transport
from transfer_parts.settings import REQUEST_TIMEOUT_S, START_TIMEOUT_S
from transfer_parts.sshd_site import Site


def request_body(site: Site, source: Path, destination: Path) -> bytes:
    s = site.server
    request = TransferRequest(
        host=s.host, port=s.port, user=s.user, source=str(source), destination=str(destination)
    )
    return encode(request)


async def send(transport: Transport, node: str, body: bytes) -> None:
    reply = await transport.request(TRANSFERS_EXCHANGE, node, body, timeout=REQUEST_TIMEOUT_S)
    result = decode(reply.body, TransferResult)
    if not result.ok:
        raise BenchError(f"worker {node} failed a job: {result.error}")


def worker_options(site: Site, state: Path, concurrency: int) -> dict[str, Any]:
    return {
        "concurrency": concurrency,
        "known_hosts": str(site.server.known_hosts),
        "client_keys": [str(site.server.client_key)],
        "allow_roots": [str(site.local)],
        "state_dir": str(state),
    }


@contextlib.asynccontextmanager
async def running_worker(
    transport: Transport, node: str, options: Mapping[str, Any]
) -> AsyncIterator[Agent]:
    """An agent running only the transfer provider; stopped and its queue deleted on exit."""
    agent = Agent(node, transport, {"transfer": options}, grace=10)
    task = asyncio.create_task(agent.run(), name=f"bench agent {node}")
    try:
        await asyncio.wait_for(agent.started(), START_TIMEOUT_S)
        provider = agent.provider("transfer")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not provider.health().detail.startswith("consuming"):
            if time.monotonic() > deadline or task.done():
                raise BenchError(f"worker {node} did not start: {provider.health().detail}")
            await asyncio.sleep(0.01)
        yield agent
    finally:
        agent.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, START_TIMEOUT_S)
        await transport.delete_queue(work_queue(node))
