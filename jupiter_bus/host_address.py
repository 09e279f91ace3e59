"""The address a node announces to the others when none is configured.

An agent's resource events carry ``host`` (where other nodes reach its SSH server), which
:meth:`~jupiter_bus.JupiterInterface.transfer_to`, peer discovery and Jupiter's formats
need. Without ``--host``, the agent takes the local address of the route to its broker:
every node reaches the broker, so the interface that does is the likeliest one the other
nodes reach too. A broker on loopback (or the in-process ``memory://`` bus) means the
nodes share this machine, and the answer is ``127.0.0.1``. No packet is sent: a UDP
socket is only "connected" to learn the kernel's choice of source address.

Example::

    >>> default_host("memory://demo")
    '127.0.0.1'
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

__all__ = ["LOOPBACK", "default_host", "is_loopback"]

LOOPBACK = "127.0.0.1"
"""What a node on the same machine as its broker announces."""

_AMQP_PORT = 5672


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) names this machine only.

    Example::

        >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("10.0.0.2")
        (True, True, False)
    """
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_host(broker_url: str | None) -> str:
    """The local address of the route to the broker of ``broker_url`` (see module doc).

    Blocking (it may resolve the broker's name): call it through ``asyncio.to_thread``
    from a loop. Falls back to ``127.0.0.1`` when the broker cannot be resolved or
    routed to; the agent then warns.
    """
    if not broker_url:
        return LOOPBACK
    parts = urlsplit(broker_url)
    if parts.scheme == "memory" or not parts.hostname or is_loopback(parts.hostname):
        return LOOPBACK
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or _AMQP_PORT, type=socket.SOCK_DGRAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.connect(address)
            return str(probe.getsockname()[0])
    except (OSError, IndexError):
        return LOOPBACK
