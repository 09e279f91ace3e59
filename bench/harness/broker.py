"""The RabbitMQ broker the benchmarks talk to: its default URL and how to name it."""

from __future__ import annotations

from typing import Final

from aio_pika.abc import AbstractConnection

DEFAULT_URL: Final = "amqp://guest:guest@127.0.0.1:5672/"


def address(url: str) -> str:
    """``url`` without scheme and credentials, fit to print.

    Example::

        address("amqp://guest:guest@127.0.0.1:5672/")  # "127.0.0.1:5672/"
    """
    return url.split("@")[-1]


def server_version(connection: AbstractConnection) -> str:
    """The version the broker announced on ``connection`` (``?`` if it did not).

    Example::

        connection = await aio_pika.connect(url)
        print(f"RabbitMQ {server_version(connection)}")
    """
    underlay = connection.transport
    properties = underlay.connection.server_properties if underlay else {}
    return str(properties.get("version", "?"))
