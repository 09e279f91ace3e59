"""Publish transfer jobs to a queue and collect their results from a completion queue.

Two ways to do the same thing:

1. **Plain JSON, as any language would.** The job is the documented ``transfer.request``
   body (docs/messages.md), published to exchange ``jupiter.transfers`` with routing key
   ``<node>`` (so it lands in the executing node's durable work queue
   ``jupiter.transfer.<node>``), persistent, ``mandatory`` (a node without a queue fails
   at once instead of the job vanishing), with ``reply_to`` naming a durable completion
   queue this client declared. The worker copies the file, then sends the
   ``transfer.result`` to that queue with the job's ``correlation_id``; the client reads
   it from there (it could be another process, later) and acks it.
2. **The facade.** ``submit_transfer`` does the same publish and returns the job id at
   once; ``wait_transfer`` collects the result. The results go to a named completion
   queue, so here one interface submits and closes, and a second one (standing for
   another process) collects.

Run it::

    python examples/publish_transfer_job.py                  # in-process bus and agent
    python examples/publish_transfer_job.py --broker amqp://guest:guest@127.0.0.1:5672/ \\
        --with-agents
    python examples/publish_transfer_job.py --broker amqp://guest:guest@10.0.0.1/ \\
        --nodes node1 --host 10.0.0.12 --user jupiter --transfer-dir /data/jobs

Without ``--with-agents`` on ``amqp://``, node ``--nodes`` (the first one executes) must
run an agent with the transfer provider, and the files written under ``--transfer-dir``
on this host must be readable there (an agent on this host); ``--host``/``--user`` (and
``$JUPITER_PASSWORD``, never on the command line) name the destination login.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _cluster import (
    LocalCluster,
    add_bus_arguments,
    configure_logging,
    exit_status,
    in_process,
    node_names,
    safe_url,
    say_who_serves,
)

from jupiter_bus import JupiterBusError, JupiterInterface, TransferFailed
from jupiter_bus.interrupt import run_interruptible
from jupiter_bus.messages import TransferEngine
from jupiter_bus.topology import TRANSFERS_EXCHANGE, work_queue
from jupiter_bus.transport import Transport, connect

FACADE_JOBS = 3


def write_files(paths: Sequence[Path], size_bytes: int) -> None:
    """The files the jobs will move (random bytes)."""
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size_bytes))


def request_body(
    args: argparse.Namespace, job_id: str, source: Path, destination: Path
) -> dict[str, Any]:
    """A ``transfer.request`` exactly as the contract writes it (no jupiter-bus classes)."""
    body: dict[str, Any] = {
        "v": 1,
        "type": "transfer.request",
        "id": job_id,
        "ts": time.time(),
        "host": args.host,
        "port": args.port,
        "user": args.user,
        "source": str(source),
        "destination": str(destination),
        "create_dirs": True,
    }
    if args.engine_name is not None:
        body["engine"] = args.engine_name
    password = os.environ.get("JUPITER_PASSWORD")
    if password:
        body["password"] = password
    return body


async def collect_result(
    transport: Transport, queue: str, job_id: str, timeout: float
) -> dict[str, Any]:
    """Take the ``transfer.result`` of ``job_id`` from the completion queue, then ack it.

    Results of other jobs (a named queue may be shared between runs) are left
    unanswered, so they go back to the queue when the consumer closes.
    """
    try:
        async with transport.consume(queue, prefetch=16) as results, asyncio.timeout(timeout):
            async for delivery in results:
                if delivery.envelope.correlation_id == job_id:
                    result: dict[str, Any] = json.loads(delivery.envelope.body)
                    await delivery.ack()  # collected: only now does the queue forget it
                    return result
    except TimeoutError:
        pass
    raise TimeoutError(f"no result for job {job_id} in {queue} within {timeout:g} s")


async def publish_plain_job(
    transport: Transport, args: argparse.Namespace, node: str, queue: str, workdir: Path
) -> None:
    """Publish one job as plain JSON with ``reply_to`` = ``queue``; collect its result there."""
    job_id = str(uuid.uuid4())
    body = request_body(
        args, job_id, workdir / node / "out" / "plain.bin", workdir / "in" / "plain.bin"
    )
    await transport.publish(
        TRANSFERS_EXCHANGE,
        node,
        json.dumps(body).encode(),
        persistent=True,
        mandatory=True,
        reply_to=queue,
        correlation_id=job_id,
        message_id=job_id,
    )
    shown = {k: ("***" if k == "password" else v) for k, v in body.items()}
    print(
        f"1) plain JSON to exchange {TRANSFERS_EXCHANGE}, routing key {node} ({work_queue(node)}),"
    )
    print(f"   reply_to {queue}:")
    print(f"   sent   {json.dumps(shown)}")
    result = await collect_result(transport, queue, job_id, args.timeout)
    print(f"   result {json.dumps(result)}")
    if not result["ok"]:
        raise SystemExit(f"job {job_id} failed: {result['error']}")


async def facade_jobs(args: argparse.Namespace, node: str, queue: str, workdir: Path) -> None:
    """Submit jobs through one interface, collect them through another."""
    engine: TransferEngine | None = args.engine_name
    password = os.environ.get("JUPITER_PASSWORD") or None
    print(f"2) facade: submit_transfer x{FACADE_JOBS}, then wait_transfer from a second interface")
    async with JupiterInterface(args.broker, node=node, completion_queue=queue) as submitter:
        jobs = [
            await submitter.submit_transfer(
                args.host,
                args.user,
                password,
                str(workdir / node / "out" / f"job{k}.bin"),
                str(workdir / "in" / f"job{k}.bin"),
                engine=engine,
                create_dirs=True,
            )
            for k in range(FACADE_JOBS)
        ]
        print(f"   submitted {len(jobs)} jobs via {node}; the submitter exits without waiting")
    async with JupiterInterface(args.broker, completion_queue=queue) as collector:
        for job in jobs:
            try:
                result = await collector.wait_transfer(job, timeout=args.timeout)
            except TransferFailed as exc:
                raise SystemExit(f"job {job} failed ({exc.kind}): {exc}") from None
            print(
                f"   collected job {job[:8]}: ok, {result.bytes} bytes in "
                f"{result.seconds * 1000:.1f} ms by {result.node} (attempts {result.attempts})"
            )


async def run(args: argparse.Namespace, workdir: Path) -> int:
    """Start what is needed, send the jobs both ways, remove the completion queue."""
    nodes = node_names(args)
    say_who_serves(args, nodes)
    node = nodes[0]
    queue = f"jupiter.completions.example-{uuid.uuid4().hex[:8]}"
    print(
        f"transfer jobs on {safe_url(args.broker)}: executing node {node}, completion queue {queue}"
    )
    sources = [workdir / node / "out" / "plain.bin"]
    sources += [workdir / node / "out" / f"job{k}.bin" for k in range(FACADE_JOBS)]
    await asyncio.to_thread(write_files, sources, args.size)
    async with contextlib.AsyncExitStack() as stack:
        if in_process(args):
            memory = str(args.broker).startswith("memory://")
            cluster = LocalCluster(args.broker, nodes, workdir=workdir, delete_queues=not memory)
            await stack.enter_async_context(cluster)
        transport = await connect(args.broker, connection_name="jupiter-bus example client")
        stack.push_async_callback(transport.close)
        await transport.declare_queue(queue)  # durable: results wait here until collected
        stack.push_async_callback(transport.delete_queue, queue)
        await publish_plain_job(transport, args, node, queue, workdir)
        await facade_jobs(args, node, queue, workdir)
    print(f"done: {1 + FACADE_JOBS} files transferred; completion queue {queue} deleted")
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_bus_arguments(parser, "jobs", nodes=["node1"])
    parser.add_argument("--host", default="127.0.0.1", help="destination host")
    parser.add_argument("--port", type=int, default=22, help="destination SSH port")
    parser.add_argument("--user", default=getpass.getuser(), help="login on the destination")
    parser.add_argument(
        "--engine",
        choices=["sftp", "scp", "openssh-scp", "local"],
        help="transfer engine (default: local with in-process agents, else the worker's)",
    )
    parser.add_argument("--size", type=int, default=64_000, help="bytes per file")
    parser.add_argument("--transfer-dir", help="folder for the files (default: a temporary one)")
    args = parser.parse_args(argv)
    args.engine_name = args.engine or ("local" if in_process(args) else None)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose)
    try:
        with tempfile.TemporaryDirectory(prefix="jupiter-jobs-") as scratch:
            workdir = Path(os.path.realpath(args.transfer_dir or scratch))
            return run_interruptible(run(args, workdir))
    except (JupiterBusError, TimeoutError) as exc:
        return exit_status(exc)


if __name__ == "__main__":
    sys.exit(main())
