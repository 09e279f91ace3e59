"""Keeps passwords out of the AMQP libraries' DEBUG logs.

aiormq logs every frame it sends and receives at DEBUG (``Prepare to send %r``,
``Received frame %r``), bodies included, so a ``transfer.request`` with a password
appeared in clear in any log configured at DEBUG. A filter on those loggers rewrites
a record whose text holds a ``"password": "..."`` pair with the value replaced. It
costs nothing unless DEBUG is enabled for them: a logger runs its filters only for
records it will emit.

Example::

    install()  # done once by jupiter_bus.transport.amqp on import
"""

from __future__ import annotations

import logging
import re
from typing import Final

__all__ = ["PasswordScrubber", "install"]

SCRUBBED_LOGGERS: Final = (
    "aiormq.connection",
    "aiormq.channel",
    "aio_pika",
    "aio_pika.channel",
    "aio_pika.connection",
    "aio_pika.exchange",
    "aio_pika.message",
    "aio_pika.queue",
    "aio_pika.robust_connection",
    "aio_pika.robust_channel",
)
"""The loggers of aiormq and aio-pika; a logger's filter sees only its own records."""

# "password": and its value: a string (escaped quotes included), a list, an object or a
# scalar; in a bytes repr the JSON quotes stay as they are.
_PAIR: Final = re.compile(
    r'("password"\s*:\s*)(?:"(?:[^"\\]|\\.)*"?|\[[^\]]*\]?|\{[^}]*\}?|[^,}\s]*)', re.DOTALL
)


class PasswordScrubber(logging.Filter):
    """Replace every ``"password": "..."`` value in a record's message by ``"<redacted>"``.

    Example::

        logging.getLogger("aiormq.connection").addFilter(PasswordScrubber())
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is logging's business, not ours
            return True
        if "password" in message:
            record.msg = _PAIR.sub(r'\1"<redacted>"', message)
            record.args = None
        return True


def install() -> None:
    """Add one :class:`PasswordScrubber` to each of :data:`SCRUBBED_LOGGERS` (idempotent)."""
    for name in SCRUBBED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, PasswordScrubber) for f in logger.filters):
            logger.addFilter(PasswordScrubber())
