"""The worker's idempotency store: results saved together, each saver told once committed."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from jupiter_providers.job_store import JobStore


async def test_results_finishing_together_are_committed_in_one_transaction(
    tmp_path: Path,
) -> None:
    store = JobStore(tmp_path)
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    try:
        await asyncio.gather(*(store.save_result(f"k{i}", b"r%d" % i) for i in range(20)))
        assert sum(s == "COMMIT" for s in statements) == 1
        assert [await store.result(f"k{i}") for i in (0, 19)] == [b"r0", b"r19"]
        assert await store.result("unknown") is None
    finally:
        store.close()
    # committed means on disk: another connection (a restarted worker) sees them
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM jobs WHERE result IS NOT NULL").fetchone() == (20,)


async def test_a_cancelled_saver_does_not_cancel_the_others_commit(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    try:
        first = asyncio.create_task(store.save_result("a", b"1"))
        second = asyncio.create_task(store.save_result("b", b"2"))
        await asyncio.sleep(0)  # both queued; the commit runs next
        first.cancel()
        await second
        assert await store.result("a") == b"1"  # its record was committed all the same
        assert await store.result("b") == b"2"
    finally:
        store.close()


async def test_closing_commits_what_is_still_waiting(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    saving = asyncio.create_task(store.save_result("late", b"x"))
    await asyncio.sleep(0)
    store.close()
    await saving
    again = JobStore(tmp_path)
    try:
        assert await again.result("late") == b"x"
    finally:
        again.close()
