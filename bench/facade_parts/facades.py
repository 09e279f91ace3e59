"""How the bench opens a facade for counting and waits for its state."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from jupiter_bus import JupiterInterface
from jupiter_bus.state import NetworkState


def live_only(url: str, **options: Any) -> JupiterInterface:
    """A facade that does not ask for a snapshot on entering (where the option exists):
    agents of other users of the broker must not add answers to the updates counted."""
    if "snapshot" in inspect.signature(JupiterInterface).parameters:
        options["snapshot"] = False
    return JupiterInterface(url, **options)


async def until_version(state: NetworkState, target: int, timeout: float) -> None:
    """Wait until ``state`` has applied changes up to version ``target``."""
    async with asyncio.timeout(timeout):
        while state.version < target:
            await state.wait_changed(state.version)
