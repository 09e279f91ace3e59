"""What went wrong when connecting to a broker, in words: the one place that says it.

aio-pika and aiormq report a failed connection as ``AMQPConnectionError`` wrapping an
``OSError``, ``ProbableAuthenticationError``, or even ``InvalidFrameError`` (an unknown
virtual host: the broker answers ``Connection.Open`` with ``Connection.Close``). This
module turns each into a :class:`~jupiter_bus.errors.BrokerUnreachable` (waiting may
help: DNS, refused, timed out) or a :class:`~jupiter_bus.errors.BrokerRefused` (it will
not: credentials, virtual host, TLS), whose message names the broker without its
password and says what failed.

Example::

    try:
        await aio_pika.connect_robust(url)
    except Exception as exc:
        raise connect_error(exc, url) from None
"""

from __future__ import annotations

import socket
import ssl
from urllib.parse import unquote, urlsplit

import aiormq

from ..errors import BrokerRefused, BrokerUnreachable
from .base import safe_url

__all__ = ["connect_error"]


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (``__cause__``/``__context__``), outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _vhost(url: str) -> str:
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def _reason(
    exc: BaseException, url: str
) -> tuple[type[BrokerRefused] | type[BrokerUnreachable], str]:
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port
    where = f"{host}:{port}" if port else host
    chain = _causes(exc)
    text = " ".join(str(e) for e in chain)
    for cause in chain:
        if isinstance(cause, aiormq.exceptions.ProbableAuthenticationError):
            user = unquote(parts.username or "guest")
            return BrokerRefused, f"bad credentials (ACCESS_REFUSED) for user {user!r}"
        if isinstance(cause, aiormq.exceptions.ConnectionNotAllowed) or (
            isinstance(cause, aiormq.exceptions.InvalidFrameError)
            and "Connection.Close" in str(cause)
        ):
            return BrokerRefused, (
                f"no virtual host {_vhost(url)!r}, or the user may not use it (NOT_ALLOWED)"
            )
        if isinstance(cause, ssl.SSLCertVerificationError):
            verify = cause.verify_message
            return BrokerRefused, f"TLS: the broker's certificate was refused ({verify})"
        if isinstance(cause, ssl.SSLError):
            hint = " (is that port plain amqp://?)" if "WRONG_VERSION_NUMBER" in str(cause) else ""
            return BrokerRefused, f"TLS handshake failed: {cause.reason or cause}{hint}"
        if isinstance(cause, socket.gaierror):
            return BrokerUnreachable, f"host name not found (DNS): {host!r}"
        if isinstance(cause, ConnectionRefusedError):
            return BrokerUnreachable, f"connection refused by {where} (is RabbitMQ running there?)"
        if isinstance(cause, TimeoutError):
            return BrokerUnreachable, f"no answer from {where} in time (timed out)"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return BrokerUnreachable, f"host name not found (DNS): {host!r}"
    if isinstance(exc, OSError) and exc.strerror:
        return BrokerUnreachable, f"cannot reach {where}: {exc.strerror}"
    return BrokerUnreachable, f"connection to {where} failed ({type(exc).__name__})"


def connect_error(exc: BaseException, url: str) -> BrokerRefused | BrokerUnreachable:
    """The jupiter-bus error for ``exc``, raised while connecting to the broker at ``url``.

    Example::

        >>> str(connect_error(ConnectionRefusedError(111, "refused"), "amqp://u:p@h:1/"))
        'cannot connect to amqp://h:1/: connection refused by h:1 (is RabbitMQ running there?)'
    """
    if isinstance(exc, BrokerRefused | BrokerUnreachable):
        return exc
    cls, reason = _reason(exc, url)
    message = f"cannot connect to {safe_url(url)}: {reason}"
    password = urlsplit(url).password
    if password:  # a reason quoting the broker's words must not carry it either
        message, reason = message.replace(password, "***"), reason.replace(password, "***")
    return cls(message, reason=reason)
