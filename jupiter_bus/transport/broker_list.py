"""Several broker addresses for one AMQP transport, tried in rotation.

``amqp://u:p@h1:5672,h2:5673,h3/vhost`` names three nodes of one cluster: the
first connect and every reconnect take the next address in turn, so a client
whose node stops moves to a surviving one (aio-pika's robust connection alone
reconnects to a single URL).

Example::

    >>> split_brokers("amqp://u:p@h1:5672,h2:5673/v?heartbeat=5")
    ['amqp://u:p@h1:5672/v?heartbeat=5', 'amqp://u:p@h2:5673/v?heartbeat=5']
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
from yarl import URL

__all__ = ["RotatingConnection", "split_brokers"]


def split_brokers(url: str) -> list[str]:
    """One URL per address of a comma-separated host list (credentials, path and query shared)."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    prefix = userinfo + at
    return [
        urlunsplit((parts.scheme, prefix + host, parts.path, parts.query, parts.fragment))
        for host in hosts.split(",")
        if host
    ] or [url]


class RotatingConnection(aio_pika.RobustConnection):
    """A robust connection whose every connect attempt takes the next of ``urls``.

    aio-pika reads ``self.url`` once per attempt while no transport is up; this
    class answers that read with the next address and leaves the address in use
    unchanged otherwise.
    """

    def __init__(self, urls: list[URL], **kwargs: Any) -> None:
        self._urls = list(urls)
        self._next = 0
        self._ready = False
        super().__init__(urls[0], **kwargs)
        self._ready = True

    @property
    def url(self) -> URL:
        if self._ready and getattr(self, "transport", None) is None:
            index = self._next
            self._next = (index + 1) % len(self._urls)
            return self._urls[index]
        return self._urls[(self._next - 1) % len(self._urls)]

    @url.setter
    def url(self, value: URL) -> None:
        # update_secret(): the new password applies to every address
        if self._ready:
            self._urls = [u.with_password(value.password) for u in self._urls]

    def __str__(self) -> str:
        return str(
            self._urls[(self._next - 1) % len(self._urls)].with_password(None).with_user(None)
        )
