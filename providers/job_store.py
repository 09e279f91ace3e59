"""The transfer worker's local record of jobs, surviving restarts (SQLite).

For each idempotency key it keeps how often the job was redelivered and, once the
job finished, its encoded result: a redelivered request whose key already completed
is answered from here instead of being run again. Records older than
``keep_seconds`` are pruned.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,
    redeliveries INTEGER NOT NULL DEFAULT 0,
    result BLOB,
    updated REAL NOT NULL
)
"""


class JobStore:
    """Idempotency records in ``<folder>/jobs.sqlite3``.

    Statements run inline on the event loop: small WAL writes without an fsync each.

    Example::

        store = JobStore(Path("/var/lib/jupiter-bus/node1"))
        if (done := await store.result(key)) is not None: ...
    """

    def __init__(self, folder: Path, *, keep_seconds: float = 7 * 86_400) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "jobs.sqlite3"
        self.keep_seconds = keep_seconds
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._db.execute("DELETE FROM jobs WHERE updated < ?", (time.time() - keep_seconds,))

    async def _run(self, sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
        # Inline, not in a thread: these are tiny WAL writes without fsync
        # (synchronous=NORMAL); measured, the thread hop cost the worker about a
        # third of its small-file throughput (bench/transfer.py).
        return self._db.execute(sql, args).fetchall()

    async def result(self, key: str) -> bytes | None:
        """The stored result of a finished job, if any."""
        rows = await self._run("SELECT result FROM jobs WHERE key = ?", (key,))
        value = rows[0][0] if rows else None
        return bytes(value) if isinstance(value, bytes | memoryview) else None

    async def count_redelivery(self, key: str) -> int:
        """Record one more redelivery of ``key``; return how many there have been."""
        rows = await self._run(
            "INSERT INTO jobs (key, redeliveries, updated) VALUES (?, 1, ?) "
            "ON CONFLICT(key) DO UPDATE SET redeliveries = redeliveries + 1, "
            "updated = excluded.updated RETURNING redeliveries",
            (key, time.time()),
        )
        count = rows[0][0]
        assert isinstance(count, int)
        return count

    async def save_result(self, key: str, result: bytes) -> None:
        """Remember the finished job's encoded result."""
        await self._run(
            "INSERT INTO jobs (key, result, updated) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET result = excluded.result, updated = excluded.updated",
            (key, result, time.time()),
        )

    def close(self) -> None:
        """Close the database."""
        self._db.close()
