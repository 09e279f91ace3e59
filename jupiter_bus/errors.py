"""The one error hierarchy of jupiter-bus.

Every error the library raises on purpose derives from :class:`JupiterBusError`.
Messages say what was wrong and what to do about it, and never carry a secret.

Example::

    try:
        decode(body)
    except MessageError as exc:
        print(exc.field, exc)
"""

from __future__ import annotations


class JupiterBusError(Exception):
    """Base class of every error raised by jupiter-bus."""


class MessageError(JupiterBusError, ValueError):
    """A message body could not be decoded or failed validation.

    ``field`` names the offending field (``None`` when the body as a whole is bad,
    e.g. not JSON or not an object).

    Example::

        raise MessageError("must be a number", field="cpu_percent")
    """

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


class TransportError(JupiterBusError):
    """The bus could not carry out an operation (connection, broker refusal)."""


class InvalidURL(TransportError, ValueError):
    """A transport URL has a scheme or shape that no transport understands."""


class Unroutable(TransportError):
    """A message published with ``mandatory`` reached no queue.

    Raised, for example, when a transfer request names a node that runs no worker.
    """


class RequestTimeout(TransportError, TimeoutError):
    """No reply arrived within the request's timeout."""


class InvalidName(JupiterBusError, ValueError):
    """A node name or routing-key word is not ``[A-Za-z0-9_-]+``."""


class ConfigError(JupiterBusError, ValueError):
    """A configuration (agent file, provider options) is missing something or wrong."""
