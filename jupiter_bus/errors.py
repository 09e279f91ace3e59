"""The one error hierarchy of jupiter-bus: every exception class the library raises.

Every error raised on purpose derives from :class:`JupiterBusError`. Messages say what
was wrong and what to do about it, and never carry a secret. The tree::

    JupiterBusError
    ├── MessageError (ValueError)        a body failed decoding or validation
    ├── InvalidName (ValueError)         a node name / routing-key word is malformed
    ├── ConfigError (ValueError)         agent or provider configuration is wrong
    │   └── ProviderError                a provider cannot be found, loaded or configured
    ├── SealError (ValueError)           a sealed password cannot be opened
    ├── TransportError                   the bus could not carry out an operation
    │   ├── InvalidURL (ValueError)
    │   ├── BrokerUnreachable            no broker answered (DNS, refused, timed out)
    │   ├── BrokerRefused                the broker said no (credentials, vhost, TLS)
    │   ├── Unroutable                   a mandatory message reached no queue
    │   ├── QueueMismatch                a queue exists with other arguments
    │   └── RequestTimeout (TimeoutError)
    ├── InterfaceClosed                  the facade is not open
    ├── StateError                       about the live state
    │   ├── UnknownNode (KeyError), UnknownLink (KeyError)
    │   ├── StateUnavailable (TimeoutError)
    │   └── StaleState
    ├── TransferFailed                   a transfer did not complete (by error kind)
    │   ├── AuthError, Unreachable, NotFound, PermissionDenied, RemoteError
    │   ├── InvalidRequest (ValueError)
    │   └── TransferTimeout (TimeoutError)
    │       └── NoReply
    └── CopyFailure                      a node's copy engine failed (worker side)

Four errors are also ``TimeoutError``, each about a different wait:

- :class:`RequestTimeout`: the transport's ``request`` got no reply in time (bus level);
- :class:`TransferTimeout`: the *worker* answered ``timeout`` (its deadline passed);
- :class:`NoReply`: the *caller* stopped waiting for a transfer result; the job may still
  run and its result will still arrive on the completion queue and ``transfer.done``;
- :class:`StateUnavailable`: the state asked for (nodes, links) did not arrive in time.

Example::

    try:
        decode(body)
    except MessageError as exc:
        print(exc.field, exc)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Final

if TYPE_CHECKING:
    from .messages import ErrorKind, TransferResult
    from .state import NetworkData, ResourceData

__all__ = [
    "AuthError",
    "BrokerRefused",
    "BrokerUnreachable",
    "ConfigError",
    "CopyFailure",
    "InterfaceClosed",
    "InvalidName",
    "InvalidRequest",
    "InvalidURL",
    "JupiterBusError",
    "MessageError",
    "NoReply",
    "NotFound",
    "PermissionDenied",
    "ProviderError",
    "QueueMismatch",
    "RemoteError",
    "RequestTimeout",
    "SealError",
    "StaleState",
    "StateError",
    "StateUnavailable",
    "TransferFailed",
    "TransferTimeout",
    "TransportError",
    "UnknownLink",
    "UnknownNode",
    "Unreachable",
    "Unroutable",
    "transfer_error",
]


class JupiterBusError(Exception):
    """Base class of every error raised by jupiter-bus.

    Example::

        try:
            await bus.data_transfer(ip, user, None, src, dst)
        except JupiterBusError as exc:
            log.error("jupiter-bus: %s", exc)
    """


class _Plain:
    """Mixin: ``str()`` is the message alone (``KeyError`` would quote it)."""

    args: tuple[object, ...]

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# -- contract and configuration -------------------------------------------------------------


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


class InvalidName(JupiterBusError, ValueError):
    """A node name or routing-key word is not ``[A-Za-z0-9_-]+``."""


class ConfigError(JupiterBusError, ValueError):
    """A configuration (agent file, provider options) is missing something or wrong."""


class ProviderError(ConfigError):
    """A provider could not be found, loaded or configured."""


class SealError(JupiterBusError, ValueError):
    """A sealed password could not be opened (wrong key, damaged token) or a key is bad."""


# -- the bus --------------------------------------------------------------------------------


class TransportError(JupiterBusError):
    """The bus could not carry out an operation (connection, broker refusal)."""


class InvalidURL(TransportError, ValueError):
    """A transport URL has a scheme or shape that no transport understands."""


class BrokerUnreachable(TransportError):
    """No broker could be reached: its host name is unknown, the port refused, or it
    did not answer in time. Waiting may help (the broker may still be starting).

    ``reason`` says which, in words (never a password).

    Example::

        try:
            await connect("amqp://guest:guest@rabbit.invalid/")
        except BrokerUnreachable as exc:
            print(exc.reason)  # host name not found (DNS): 'rabbit.invalid'
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class BrokerRefused(TransportError):
    """The broker answered but refused the connection: bad credentials, no such virtual
    host (or no permission on it), or a TLS failure. Retrying will not help.

    ``reason`` says which, in words (never a password).

    Example::

        try:
            await connect("amqp://guest:wrong@127.0.0.1/")
        except BrokerRefused as exc:
            print(exc.reason)  # bad credentials (ACCESS_REFUSED) for user 'guest'
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class Unroutable(TransportError):
    """A message published with ``mandatory`` reached no queue.

    Raised, for example, when a transfer request names a node that runs no worker.
    """


class QueueMismatch(TransportError):
    """A queue being declared exists with other arguments (queue type, ``x-expires``,
    limits): made by another version or another configuration. The queue is left as it
    is; ``queue`` names it.

    Example::

        try:
            await bus.declare_queue("jupiter.completions.c1", arguments={"x-expires": 1000})
        except QueueMismatch as exc:
            print(exc.queue)  # delete it (rabbitmqctl delete_queue) or declare it alike
    """

    def __init__(self, message: str, *, queue: str) -> None:
        super().__init__(message)
        self.queue = queue


class RequestTimeout(TransportError, TimeoutError):
    """No reply arrived within the timeout of a transport-level ``request``.

    The facade turns it into :class:`NoReply` for transfers.
    """


class InterfaceClosed(JupiterBusError):
    """The :class:`~jupiter_bus.JupiterInterface` is not open (not entered, closed, or
    its feed failed)."""


# -- live state -----------------------------------------------------------------------------


class StateError(JupiterBusError):
    """Base class of the errors about live state."""


class UnknownNode(_Plain, StateError, KeyError):
    """A node name (or index) that the snapshot does not hold."""


class UnknownLink(_Plain, StateError, KeyError):
    """A link for which no cost has been received."""


class StateUnavailable(_Plain, StateError, TimeoutError):
    """The requested state did not arrive in time; ``missing`` names what is absent.

    Example::

        try:
            data = await bus.get_network_data(nodes=["n1", "n2"], timeout=5)
        except StateUnavailable as exc:
            print(exc.missing)   # ('n1->n2',) ...
    """

    def __init__(self, message: str, *, missing: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.missing: tuple[str, ...] = tuple(missing)


class StaleState(StateError):
    """Every requested entry is older than ``max_age`` (judged by receipt time).

    ``stale`` names them (at most a few examples; ``count`` says how many) and ``data``
    is the snapshot, for a caller who decides to use old values after all.

    Example::

        try:
            data = await bus.get_resource_data(max_age=30)
        except StaleState as exc:
            data = exc.data  # accept old values, knowingly
    """

    def __init__(
        self,
        message: str,
        *,
        stale: Sequence[str] = (),
        count: int = 0,
        data: NetworkData | ResourceData | None = None,
    ) -> None:
        super().__init__(message)
        self.stale: tuple[str, ...] = tuple(stale)
        self.count = count or len(self.stale)
        self.data = data


# -- transfers ------------------------------------------------------------------------------


class TransferFailed(_Plain, JupiterBusError):
    """A transfer did not complete; the subclass says why (the result's ``error.kind``).

    ``result`` is the worker's :class:`~jupiter_bus.messages.TransferResult` (``None``
    when the failure happened before any worker answered); ``job_id`` the request id;
    ``node`` the executing node. The message never contains the password.

    Example::

        try:
            await bus.data_transfer(ip, user, password, src, dst)
        except AuthError:
            ...                      # wrong credentials: do not retry
        except TransferFailed as exc:
            print(exc.kind, exc.result)
    """

    kind: ClassVar[ErrorKind] = "remote"

    def __init__(
        self,
        message: str,
        *,
        result: TransferResult | None = None,
        job_id: str | None = None,
        node: str | None = None,
    ) -> None:
        super().__init__(message)
        self.result = result
        self.job_id = job_id if job_id is not None else (result.request_id if result else None)
        self.node = node if node is not None else (result.node if result else None)


class AuthError(TransferFailed):
    """Authentication failed (wrong password or key, unknown host key): do not retry."""

    kind = "auth"


class Unreachable(TransferFailed):
    """The destination host, or the executing node itself, could not be reached."""

    kind = "unreachable"


class NotFound(TransferFailed):
    """The source file or the destination folder does not exist."""

    kind = "not_found"


class PermissionDenied(TransferFailed):
    """Reading the source or writing the destination was refused."""

    kind = "permission"


class TransferTimeout(TransferFailed, TimeoutError):
    """The transfer ran out of time: the worker answered ``timeout`` (its deadline passed)."""

    kind = "timeout"


class NoReply(TransferTimeout):
    """No result arrived within the caller's timeout; the job may still run.

    Its result will still land on the completion queue and ``transfer.done.<node>``.
    """


class RemoteError(TransferFailed):
    """The remote side failed in another way (SSH or SFTP error, disk full...)."""

    kind = "remote"


class InvalidRequest(TransferFailed, ValueError):
    """The request itself is wrong (bad field, missing executing node...)."""

    kind = "invalid"


_BY_KIND: Final[dict[str, type[TransferFailed]]] = {
    cls.kind: cls
    for cls in (
        AuthError,
        Unreachable,
        NotFound,
        PermissionDenied,
        TransferTimeout,
        RemoteError,
        InvalidRequest,
    )
}


def transfer_error(kind: str) -> type[TransferFailed]:
    """The :class:`TransferFailed` subclass for a result's error ``kind``.

    Example::

        >>> transfer_error("auth").__name__
        'AuthError'
    """
    return _BY_KIND.get(kind, RemoteError)


class CopyFailure(JupiterBusError):
    """A node's copy engine failed (worker side); the worker reports it as a result.

    ``kind`` is the contract's error kind, ``transient`` allows a retry. Callers of the
    facade see the matching :class:`TransferFailed` subclass instead.

    Example::

        raise CopyFailure("not_found", "no such file: /data/a.bin")
    """

    def __init__(self, kind: ErrorKind, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.transient = transient
