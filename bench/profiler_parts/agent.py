"""The agent in namespace A: ``bench/profiler.py --agent-child``, and its parent's handle."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any, Final

from harness.children import stop_process
from jupiter_providers.network import NetworkProvider

from jupiter_bus.agent import Agent
from profiler_parts.lab import Lab
from profiler_parts.settings import COMPRESSION, STOP_TIMEOUT_S

SCRIPT: Final = str(Path(__file__).resolve().parent.parent / "profiler.py")
"""The bench's entry point: the agent in A is this script run with ``--agent-child``."""


def transfer_options(lab: Lab, state: Path) -> dict[str, Any]:
    known_hosts = lab.workdir / "known_hosts"
    known_hosts.write_text(lab.server.host_key_line + "\n")
    return {
        "engine": "sftp",
        "concurrency": 1,
        "known_hosts": str(known_hosts),
        "client_keys": [str(lab.server.client_key)],
        "state_dir": str(state),
    }


def compressed_profiler_options(lab: Lab, defaults: NetworkProvider, state: Path) -> dict[str, Any]:
    """Our profiler's defaults with every duration divided by :data:`COMPRESSION`."""
    server = lab.server
    return {
        "interval": defaults.interval / COMPRESSION,
        "fresh_seconds": defaults.fresh_seconds / COMPRESSION,
        "refresh_seconds": defaults.refresh_seconds / COMPRESSION,
        "max_sample_age_seconds": defaults.max_sample_age / COMPRESSION,
        "state_dir": str(state),
        "peers": [
            {"node": lab.peer, "host": server.host, "port": server.port, "user": server.user}
        ],
    }


class AgentProcess:
    """An agent (this script's ``--agent-child``) running in namespace A."""

    def __init__(self, lab: Lab, name: str, providers: dict[str, dict[str, Any]]) -> None:
        self.lab = lab
        self.config = lab.workdir / f"{name}.json"
        self.out = lab.workdir / f"{name}.out.json"
        self.log = lab.workdir / f"{name}.log"
        self.config.write_text(
            json.dumps({"node": lab.node, "broker": lab.broker, "providers": providers})
        )
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        command = ("ip", "netns", "exec", self.lab.hub, sys.executable, SCRIPT)
        with self.log.open("ab") as output:
            self.process = await asyncio.create_subprocess_exec(
                *command,
                *("--agent-child", str(self.config), "--out", str(self.out)),
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
            )

    async def stop(self) -> dict[str, Any]:
        """SIGTERM the agent, wait for it, and return what it reported."""
        if self.process is not None:  # `ip netns exec` became the agent itself
            await stop_process(self.process, STOP_TIMEOUT_S)
        return read_json(self.out) if self.out.exists() else {}

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])


async def agent_child(config_path: Path, out: Path) -> None:
    """The agent in A: run until SIGTERM, then write the profiler's byte accounting."""
    config = read_json(config_path)
    agent = Agent(config["node"], config["broker"], config["providers"], grace=10.0)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stop)
    await agent.run()
    report: dict[str, Any] = {}
    if "network" in config["providers"]:
        provider = agent.provider("network")
        assert isinstance(provider, NetworkProvider)
        report = {
            "probes": [[t, size] for p in provider.peers.values() for t, size in p.probe_bytes],
            "probes_sent": provider.probes_sent,
            "probe_failures": provider.probe_failures,
            "errors": {p.node: p.last_error for p in provider.peers.values() if p.last_error},
            "samples": [
                [sample.size_kbit, sample.cost_ms]
                for p in provider.peers.values()
                for sample in p.model.samples
            ],
        }
    write_json(out, report)


def read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data))
