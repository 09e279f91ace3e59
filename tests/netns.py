"""Network namespaces joined by veth pairs, some links shaped with ``tc tbf``, for tests.

:func:`star_network` creates a hub namespace and a few peer namespaces. Every namespace
has an *uplink*, a veth pair to the root namespace (so a test can offer it the broker
through a proxy on the root end), and every peer has a direct link to the hub; a link
given a :class:`Tbf` is shaped on both of its ends. Everything is removed on exit, also
when the test failed: processes left in the namespaces, links, namespaces.

Addresses come from 10.231.<k>.0/24, with ``<k>`` not yet used in the root namespace:
uplink ``i`` (hub 0, then the peers in order) is 10.231.<k>.<4i+1>/30 on the root end
and .<4i+2> in the namespace; the link to peer ``j`` (from 1) is .<128+4j+1>/30 in the
hub and .<128+4j+2> in the peer. Tests that cannot run it skip with
:func:`netns_unavailable_reason`.

Example::

    if (reason := netns_unavailable_reason()) is not None:
        pytest.skip(reason)
    with star_network(["b", "c"], shaped={"b": Tbf(rate="8mbit")}) as net:
        subprocess.run(["ip", "netns", "exec", net.hub.name, "ping", "-c1",
                        net.links["b"].peer_addr], check=True)
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PREFIX = "10.231"
COMMAND_TIMEOUT_S = 30.0
# Concurrent test runs pick their /24 under this lock, so two never take the same one.
LOCK_FILE = Path("/run/jupiter-bus-netns.lock")
LABEL = re.compile(r"[b-z]")
MAX_PEERS = 31  # the peer links' /30s fill the upper half of the /24
CLONE_NEWNET = 0x40000000
TOOLS = ("ip", "tc")


class NetnsError(RuntimeError):
    """A namespace, link or qdisc could not be set up; the message has the command's output."""


@dataclass(frozen=True, slots=True)
class Tbf:
    """``tc qdisc ... root tbf`` parameters, in tc's own units (``kb`` = kilobytes).

    Example::

        Tbf(rate="8mbit", burst="8kb", latency="50ms")
    """

    rate: str = "8mbit"
    burst: str = "8kb"
    latency: str = "50ms"

    def argv(self) -> list[str]:
        """The ``tbf ...`` tail of a ``tc qdisc add`` command."""
        return ["tbf", "rate", self.rate, "burst", self.burst, "latency", self.latency]


@dataclass(frozen=True, slots=True)
class Namespace:
    """One namespace and its uplink to the root namespace."""

    name: str
    root_addr: str
    """The root namespace's end of the uplink (listen here to serve this namespace)."""
    addr: str
    """This namespace's end of the uplink."""


@dataclass(frozen=True, slots=True)
class Link:
    """The direct link between the hub and one peer."""

    hub_addr: str
    peer_addr: str
    shaping: Tbf | None


@dataclass(frozen=True, slots=True)
class StarNetwork:
    """The hub, the peers by label, and the hub's link to each peer.

    Example::

        net.peers["b"].name, net.links["b"].peer_addr
    """

    hub: Namespace
    peers: Mapping[str, Namespace]
    links: Mapping[str, Link]

    def namespaces(self) -> list[Namespace]:
        """The hub, then the peers."""
        return [self.hub, *self.peers.values()]


def _run(*argv: str) -> str:
    """Run a setup command and return its output; raise :class:`NetnsError` if it fails."""
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(argv)}: {exc}") from None
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise NetnsError(f"{' '.join(argv)} failed ({result.returncode}): {output}")
    return result.stdout


@functools.cache
def netns_unavailable_reason() -> str | None:
    """Why namespaces with shaped veth links cannot be made here, or None if they can.

    The answer comes from really making (and removing) a small network, once per session.

    Example::

        if (reason := netns_unavailable_reason()) is not None:
            pytest.skip(reason)
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)}: apt-get install iproute2"
    try:
        with star_network(["b"], shaped={"b": Tbf()}):
            pass
    except (NetnsError, OSError) as exc:
        return f"cannot create network namespaces with tbf-shaped veth links: {exc}"
    return None


@contextlib.contextmanager
def star_network(
    peers: Sequence[str], *, shaped: Mapping[str, Tbf] | None = None
) -> Iterator[StarNetwork]:
    """Make a hub namespace linked to each peer (labels ``b``..``z``); remove all on exit.

    Example::

        with star_network(["b", "c"], shaped={"b": Tbf()}) as net:
            print(net.hub.name, net.links["b"].peer_addr)
    """
    shaped = dict(shaped or {})
    labels = list(peers)
    if len(set(labels)) != len(labels) or len(labels) > MAX_PEERS:
        raise ValueError(f"peers must be at most {MAX_PEERS} distinct labels, got {labels}")
    if bad := [x for x in [*labels, *shaped] if not LABEL.fullmatch(x) or x not in labels]:
        raise ValueError(f"bad peer labels {bad}: one letter b-z each, shaped ones among peers")
    token = secrets.token_hex(2)
    names = [f"jb{token}a", *(f"jb{token}{label}" for label in labels)]
    with contextlib.ExitStack() as cleanup:
        for name in names:
            _run("ip", "netns", "add", name)
            cleanup.callback(_delete_namespace, name)
            _run("ip", "-n", name, "link", "set", "lo", "up")
        with _address_lock():
            subnet = f"{PREFIX}.{_free_octet()}"
            namespaces = []
            for i, name in enumerate(names):
                namespaces.append(_uplink(name, subnet, i))
                cleanup.callback(_delete_root_link, _uplink_device(name))
        links = {}
        for j, label in enumerate(labels, start=1):
            links[label] = _peer_link(names[0], names[j], label, subnet, j, shaped.get(label))
            cleanup.callback(_delete_peer_link, names[0], label)
        yield StarNetwork(
            hub=namespaces[0],
            peers=dict(zip(labels, namespaces[1:], strict=True)),
            links=links,
        )


def _uplink_device(name: str) -> str:
    return f"{name}u"


@contextlib.contextmanager
def _address_lock() -> Iterator[None]:
    with LOCK_FILE.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _free_octet() -> int:
    """A third octet whose 10.231.<k>.0/24 no address or route of the root namespace uses."""
    used = _run("ip", "-4", "-o", "addr", "show") + _run("ip", "-4", "route", "show")
    candidates = list(range(256))
    secrets.SystemRandom().shuffle(candidates)
    for octet in candidates:
        if f"{PREFIX}.{octet}." not in used:
            return octet
    raise NetnsError(f"every {PREFIX}.<k>.0/24 is in use in the root namespace")


def _uplink(name: str, subnet: str, index: int) -> Namespace:
    """Link namespace ``name`` to the root namespace with the ``index``-th /30 of ``subnet``."""
    root_dev = _uplink_device(name)
    root_addr, addr = f"{subnet}.{4 * index + 1}", f"{subnet}.{4 * index + 2}"
    _run("ip", "link", "add", root_dev, "type", "veth", "peer", "name", "uplink", "netns", name)
    _run("ip", "addr", "add", f"{root_addr}/30", "dev", root_dev)
    _run("ip", "link", "set", root_dev, "up")
    _run("ip", "-n", name, "addr", "add", f"{addr}/30", "dev", "uplink")
    _run("ip", "-n", name, "link", "set", "uplink", "up")
    return Namespace(name=name, root_addr=root_addr, addr=addr)


def _peer_link(hub: str, peer: str, label: str, subnet: str, index: int, tbf: Tbf | None) -> Link:
    """Link ``hub`` (device ``to-<label>``) and ``peer`` (device ``to-hub``), maybe shaped."""
    hub_addr, peer_addr = f"{subnet}.{128 + 4 * index + 1}", f"{subnet}.{128 + 4 * index + 2}"
    ends = ((hub, f"to-{label}", hub_addr), (peer, "to-hub", peer_addr))
    # Made in the root namespace under unique names, then moved: a pair made right in
    # two other namespaces (`ip link add ... netns A ... peer ... netns B`) can come up
    # with no carrier on one end.
    temp_names = (f"{hub}-{label}", f"{peer}-a")
    _run("ip", "link", "add", temp_names[0], "type", "veth", "peer", "name", temp_names[1])
    for (name, device, _), temp in zip(ends, temp_names, strict=True):
        try:
            _run("ip", "link", "set", temp, "netns", name, "name", device)
        except NetnsError:
            _delete_root_link(temp)  # not moved, so no namespace takes it along
            raise
    for name, device, addr in ends:
        _run("ip", "-n", name, "addr", "add", f"{addr}/30", "dev", device)
        _run("ip", "-n", name, "link", "set", device, "up")
        if tbf is not None:  # both ends: data one way, acks the other
            _run("tc", "-n", name, "qdisc", "add", "dev", device, "root", *tbf.argv())
    return Link(hub_addr=hub_addr, peer_addr=peer_addr, shaping=tbf)


def _delete_namespace(name: str) -> None:
    """Kill what still runs in ``name`` (only tests put it there), then delete it."""
    with contextlib.suppress(NetnsError):
        for pid in _run("ip", "netns", "pids", name).split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    with contextlib.suppress(NetnsError):
        _run("ip", "netns", "del", name)


def _delete_root_link(device: str) -> None:
    # deleting one end deletes the pair now, even if a process keeps the namespace alive
    with contextlib.suppress(NetnsError):
        _run("ip", "link", "del", device)


def _delete_peer_link(hub: str, label: str) -> None:
    with contextlib.suppress(NetnsError):
        _run("ip", "-n", hub, "link", "del", f"to-{label}")


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the calling thread in namespace ``name`` for the block, then return to its own.

    Sockets made inside the block stay in ``name``: this is how the root namespace checks
    a server on an address only that namespace can reach.

    Example::

        with entered(net.hub.name):
            sock = socket.create_connection((net.links["b"].peer_addr, 22), timeout=1)
    """
    libc = ctypes.CDLL(None, use_errno=True)
    with (
        open("/proc/thread-self/ns/net", "rb") as own,
        open(f"/run/netns/{name}", "rb") as target,
    ):
        if libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise NetnsError(f"setns into {name}: {os.strerror(errno)}")
        try:
            yield
        finally:
            if libc.setns(own.fileno(), CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                # a thread stuck in a test namespace would send later traffic astray
                raise SystemExit(f"cannot return from namespace {name}: {os.strerror(errno)}")


def connect_in(name: str, host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to ``host:port`` made from inside namespace ``name``."""
    with entered(name):
        return socket.create_connection((host, port), timeout=timeout)


def tcp_counters(name: str) -> dict[str, int]:
    """TCP counters of namespace ``name`` (``/proc/net/snmp`` and ``netstat``), e.g.
    ``RetransSegs`` and ``TCPTimeouts``: whether a slow transfer met losses and timeouts.

    Example::

        before = tcp_counters(net.hub.name)
        ...
        timeouts = tcp_counters(net.hub.name)["TCPTimeouts"] - before["TCPTimeouts"]
    """
    text = _run("ip", "netns", "exec", name, "cat", "/proc/net/snmp", "/proc/net/netstat")
    counters: dict[str, int] = {}
    lines = text.splitlines()
    # each table is a line of names and a line of values, both led by "Tcp:" or "TcpExt:"
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith(("Tcp:", "TcpExt:")):
            for key, value in zip(names.split()[1:], values.split()[1:], strict=False):
                counters[key] = int(value)
    return counters
