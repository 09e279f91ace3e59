"""The event loop a benchmark runs on."""

from __future__ import annotations

import asyncio
import importlib.metadata


def use_uvloop() -> str:
    """Install uvloop's event loop policy if it can be imported; name the loop used.

    Example::

        loop_name = use_uvloop() if args.uvloop else "asyncio default"
    """
    try:
        import uvloop
    except ImportError:
        return "asyncio default (uvloop requested but not importable)"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return f"uvloop {importlib.metadata.version('uvloop')}"
