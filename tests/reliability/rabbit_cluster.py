"""Three extra RabbitMQ nodes on this machine, clustered, for failover tests (issue 12 item 8).

The nodes ``rabbit-jb1@localhost`` .. ``rabbit-jb3@localhost`` listen for AMQP on
127.0.0.1:5781-5783 and for Erlang distribution on 25781-25783, each with its own data,
log, pid, configuration and (empty) plugin files under one temporary folder: nothing is
shared with the default broker (``rabbit@<host>`` on 5672), which this module never
addresses. Every ``rabbitmqctl`` call names its node with ``-n``.

Nodes 2 and 3 join node 1 (``stop_app``, ``join_cluster``, ``start_app``). The nodes
run as the ``rabbitmq`` user (the packaged scripts switch to it when run as root), so
they share its Erlang cookie with the CLI.

Example::

    cluster = RabbitCluster.create()
    try:
        cluster.start()
        url = cluster.url              # amqp://guest:guest@127.0.0.1:5781,...:5783/
        await cluster.stop_app(cluster.nodes[0])
    finally:
        cluster.destroy()
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CLUSTER_NODES",
    "ClusterError",
    "QuorumQueue",
    "RabbitCluster",
    "RabbitNode",
    "cluster_unavailable_reason",
    "running_cluster",
]

log = logging.getLogger(__name__)

CLUSTER_NODES = 3
_RUN_AS = "rabbitmq"
_CTL_TIMEOUT = 60.0


class ClusterError(RuntimeError):
    """A cluster node did not do what it was told (its log file is named)."""


def cluster_unavailable_reason() -> str | None:
    """Why this machine cannot run the test cluster, or ``None`` when it can."""
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        return "rabbitmq-server/rabbitmqctl are not installed"
    if os.geteuid() != 0:
        return "starting extra RabbitMQ nodes needs root (they run as the rabbitmq user)"
    try:
        pwd.getpwnam(_RUN_AS)
    except KeyError:
        return f"no {_RUN_AS!r} user (the packaged RabbitMQ runs as it)"
    return None


@dataclass(frozen=True, slots=True)
class RabbitNode:
    """One node of the test cluster: its names, ports and folder."""

    index: int
    base: Path

    @property
    def name(self) -> str:
        """Erlang node name, e.g. ``rabbit-jb1@localhost``."""
        return f"rabbit-jb{self.index}@localhost"

    @property
    def short(self) -> str:
        """``jb1``: for log lines."""
        return f"jb{self.index}"

    @property
    def port(self) -> int:
        """AMQP port."""
        return 5780 + self.index

    @property
    def dist_port(self) -> int:
        """Erlang distribution port."""
        return 25780 + self.index

    @property
    def folder(self) -> Path:
        return self.base / self.short

    @property
    def log_file(self) -> Path:
        return self.folder / "log" / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.folder / "pid"

    def environment(self) -> dict[str, str]:
        """The environment ``rabbitmq-server``/``rabbitmqctl`` run with for this node.

        The machine's ``rabbitmq-env.conf`` and ``rabbitmq.conf`` belong to the default
        node (its node name, its listener on 5672): both are replaced by this node's own.
        """
        env = dict(os.environ)
        env.update(
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.folder / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.folder / "log"),
            RABBITMQ_PID_FILE=str(self.pid_file),
            RABBITMQ_CONFIG_FILE=str(self.folder / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.folder / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(self.folder / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.folder / "enabled_plugins"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def write_files(self) -> None:
        """This node's folders and configuration, owned by the user the node runs as."""
        for sub in ("mnesia", "log"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        (self.folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n"
            "log.file.level = info\n"
            "log.console = false\n"
        )
        (self.folder / "advanced.config").write_text("[].\n")
        (self.folder / "rabbitmq-env.conf").write_text("")
        (self.folder / "enabled_plugins").write_text("[].\n")
        user = pwd.getpwnam(_RUN_AS)
        for path in (self.folder, *self.folder.rglob("*")):
            os.chown(path, user.pw_uid, user.pw_gid)

    def log_tail(self, lines: int = 30) -> str:
        """The end of this node's log (for failure messages)."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return f"(no log at {self.log_file})"
        return "\n".join(text.splitlines()[-lines:])


class RabbitCluster:
    """Three clustered RabbitMQ nodes in a temporary folder; :meth:`destroy` removes all.

    Example::

        cluster = RabbitCluster.create()
        cluster.start()
        print(cluster.url)
        cluster.destroy()
    """

    def __init__(self, base: Path, count: int = CLUSTER_NODES) -> None:
        self.base = base
        self.nodes = [RabbitNode(i + 1, base) for i in range(count)]
        self.started_seconds = 0.0

    @classmethod
    def create(cls) -> RabbitCluster:
        """A cluster in a new folder under the system's temporary directory.

        Not pytest's ``tmp_path``: its parents are 0700 and the ``rabbitmq`` user must
        reach the nodes' folders.
        """
        base = Path(tempfile.mkdtemp(prefix="jupiter-bus-cluster-"))
        base.chmod(0o755)
        return cls(base)

    @property
    def url(self) -> str:
        """One AMQP URL naming every node (:mod:`jupiter_bus.transport.broker_list`)."""
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"amqp://guest:guest@{hosts}/"

    def node_url(self, node: RabbitNode, vhost: str = "") -> str:
        """An AMQP URL of ``node`` alone (of virtual host ``vhost``; default ``/``)."""
        return f"amqp://guest:guest@127.0.0.1:{node.port}/{vhost}"

    def node_at(self, port: int) -> RabbitNode:
        """The node listening on AMQP ``port``."""
        return next(n for n in self.nodes if n.port == port)

    # -- synchronous: set-up and tear-down (fixtures, no event loop running) ------------------

    def ctl(self, node: RabbitNode, *args: str, timeout: float = _CTL_TIMEOUT) -> str:
        """``rabbitmqctl -n <node> args...``; its output, or :class:`ClusterError`."""
        return self._run_all([(node, ["rabbitmqctl", "-n", node.name, *args])], timeout)[0]

    def _run_all(
        self, commands: list[tuple[RabbitNode, list[str]]], timeout: float = _CTL_TIMEOUT
    ) -> list[str]:
        """Run ``commands`` (each with its node's environment) side by side; their outputs.

        :class:`ClusterError` names the first that failed, with its node's log.
        """
        processes = [
            (
                node,
                command,
                subprocess.Popen(
                    command,
                    env=node.environment(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
            for node, command in commands
        ]
        deadline = time.monotonic() + timeout
        outputs: list[str] = []
        failure: str | None = None
        for node, command, process in processes:
            try:
                out, err = process.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                failure = failure or f"{' '.join(command)} took over {timeout:g} s"
                continue
            outputs.append(out)
            if process.returncode != 0 and failure is None:
                failure = (
                    f"{' '.join(command)} failed ({process.returncode}): "
                    f"{(err or out).strip()[-800:]}\n-- {node.log_file}:\n{node.log_tail()}"
                )
        if failure is not None:
            raise ClusterError(failure)
        return outputs

    def start(self) -> None:
        """Start every node, then join nodes 2.. to node 1; :class:`ClusterError` if not."""
        began = time.monotonic()
        self._stop_leftovers()
        for node in self.nodes:
            node.write_files()
        self._run_all([(n, ["rabbitmq-server", "-detached"]) for n in self.nodes])
        # -detached returns before the node is up: ``wait`` waits for its pid file to
        # appear, then for the application to start (await_startup fails at once while
        # the node is not registered yet).
        self._run_all(
            [
                (n, ["rabbitmqctl", "-n", n.name, "wait", "--timeout", "60", str(n.pid_file)])
                for n in self.nodes
            ],
            timeout=90,
        )
        first = self.nodes[0]
        joining = self.nodes[1:]
        for step in (["stop_app"], ["join_cluster", first.name], ["start_app"]):
            self._run_all([(n, ["rabbitmqctl", "-n", n.name, *step]) for n in joining])
        running = self.running_nodes(first)
        missing = {n.name for n in self.nodes} - set(running)
        if missing:
            raise ClusterError(f"nodes not in the cluster after joining: {sorted(missing)}")
        self.started_seconds = time.monotonic() - began
        log.info("cluster of %d nodes up in %.1f s", len(self.nodes), self.started_seconds)

    def running_nodes(self, node: RabbitNode) -> list[str]:
        """The running nodes of the cluster, as ``node`` sees them."""
        status = self.ctl(node, "cluster_status", "--formatter", "json")
        match = re.search(r'"running_nodes"\s*:\s*\[([^\]]*)\]', status)
        return re.findall(r'"([^"]+)"', match.group(1)) if match else []

    def _registered(self) -> set[str]:
        """Node names (``rabbit-jb1``...) registered with the local epmd."""
        epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
        try:
            done = subprocess.run(
                [epmd, "-names"], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return set()
        return set(re.findall(r"^name (\S+) at port", done.stdout, re.MULTILINE))

    def _stop_leftovers(self) -> None:
        """Stop nodes of these names left running by an interrupted earlier run."""
        registered = self._registered()
        for node in self.nodes:
            if node.name.split("@")[0] in registered:
                log.warning("stopping %s left running by an earlier run", node.name)
                with contextlib.suppress(ClusterError):
                    self.ctl(node, "stop", timeout=60)

    def destroy(self) -> None:
        """Stop every node (killing its process if it will not stop) and remove the folder."""
        pids = {node.name: _read_pid(node.pid_file) for node in self.nodes}
        registered = self._registered()
        running = [n for n in self.nodes if n.name.split("@")[0] in registered]
        if running:
            try:
                self._run_all(
                    [(n, ["rabbitmqctl", "-n", n.name, "stop", str(n.pid_file)]) for n in running]
                )
            except ClusterError as exc:
                log.warning("a cluster node did not stop cleanly: %s", exc)
        for pid in pids.values():
            if pid is not None and _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)

    # -- asynchronous: what a test does while clients run -------------------------------------

    async def actl(self, node: RabbitNode, *args: str, timeout: float = _CTL_TIMEOUT) -> str:
        """:meth:`ctl` without blocking the event loop."""
        command = ["rabbitmqctl", "-n", node.name, *args]
        process = await asyncio.create_subprocess_exec(
            *command,
            env=node.environment(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise ClusterError(f"{' '.join(command)} took over {timeout:g} s") from None
        if process.returncode != 0:
            raise ClusterError(
                f"{' '.join(command)} failed ({process.returncode}): "
                f"{(err or out).decode(errors='replace').strip()[-800:]}"
            )
        return out.decode(errors="replace")

    async def add_vhost(self, name: str) -> None:
        """A virtual host on the cluster that ``guest`` may use fully."""
        first = self.nodes[0]
        await self.actl(first, "add_vhost", name)
        await self.actl(first, "set_permissions", "-p", name, "guest", ".*", ".*", ".*")

    async def delete_vhost(self, name: str) -> None:
        """Remove virtual host ``name`` and everything in it."""
        await self.actl(self.nodes[0], "delete_vhost", name)

    async def stop_app(self, node: RabbitNode) -> None:
        """Stop the RabbitMQ application on ``node`` (its Erlang node stays up)."""
        await self.actl(node, "stop_app")

    async def start_app(self, node: RabbitNode) -> None:
        """Start the RabbitMQ application on ``node`` again and wait until it runs."""
        await self.actl(node, "start_app")
        await self.actl(node, "await_startup", "--timeout", "60", timeout=90)

    async def connections(self, node: RabbitNode) -> list[str]:
        """Client-given names of the connections ``node`` itself serves.

        ``list_connections`` answers for the whole cluster, whichever node is asked: the
        server-side port tells the node.
        """
        out = await self.actl(
            node, "list_connections", "client_properties", "port", "--no-table-headers", "-q"
        )
        names: list[str] = []
        for line in out.splitlines():
            port = re.search(r"\t(\d+)\s*$", line)
            if port is not None and int(port.group(1)) == node.port:
                name = re.search(r'\{"connection_name","([^"]*)"\}', line)
                names.append(name.group(1) if name else "?")
        return names

    async def quorum_queues(self, node: RabbitNode) -> dict[str, QuorumQueue]:
        """The cluster's quorum queues, by name, as ``node`` sees them."""
        out = await self.actl(
            node,
            "list_queues",
            *("name", "type", "leader", "members", "online"),
            "--no-table-headers",
            "-q",
        )
        queues: dict[str, QuorumQueue] = {}
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) == 5 and parts[1] == "quorum":
                queues[parts[0]] = QuorumQueue(
                    leader=parts[2],
                    members=frozenset(re.findall(r"[\w.-]+@[\w.-]+", parts[3])),
                    online=frozenset(re.findall(r"[\w.-]+@[\w.-]+", parts[4])),
                )
        return queues


@dataclass(frozen=True, slots=True)
class QuorumQueue:
    """Where a quorum queue's replicas are: its leader, its members, those online."""

    leader: str
    members: frozenset[str]
    online: frozenset[str]


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def _exclusive(lock_path: Path, wait_seconds: float) -> Iterator[None]:
    """Hold ``lock_path`` (one test cluster per machine: the node names and ports are fixed)."""
    with lock_path.open("a") as handle:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"another run holds {lock_path} (its test cluster uses the same "
                        f"node names and ports) for over {wait_seconds:g} s"
                    ) from None
                time.sleep(0.5)  # a fixture's set-up: no event loop runs here
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def running_cluster(wait_seconds: float = 300.0) -> Iterator[RabbitCluster]:
    """A started :class:`RabbitCluster`, destroyed on exit (also when starting failed).

    Only one runs per machine at a time: a second run waits up to ``wait_seconds`` for
    the first to finish (it would otherwise stop the first one's nodes as leftovers).
    """
    with _exclusive(Path(tempfile.gettempdir()) / "jupiter-bus-cluster.lock", wait_seconds):
        cluster = RabbitCluster.create()
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.destroy()
