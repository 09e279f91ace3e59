"""``jupiter-bus profile SRC DST``: measure one link now, through the agents.

Node SRC's network profiler sends its probe sizes (or ``--sizes-kb``), ``--repeats``
times each, to its peer DST through its own transfer worker, exactly as its rounds do,
and answers with each probe's size and time and the quadratic fit of those points.
The command prints them (``--json``: the ``profile.result``) and, with ``--plot
FILE.png``, draws the points and the curve (matplotlib, the ``plot`` extra). The probes
also feed the link's running fit, which the profiler publishes as usual. Exit 0 when
the round measured the link and fitted it; 1 when it did not (the reason in one line).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from ..errors import ConfigError
from ..facade import JupiterInterface
from ..messages import MAX_PROFILE_REPEATS, LinkCost, ProfileResult, encode
from ..plots import fit_plot
from .broker_url import add_broker_arguments, resolve_broker
from .console import EXIT_FAILED, command_parser, say

__all__ = [
    "add",
    "describe",
    "run",
]

EXAMPLES = """\
examples:
  jupiter-bus profile node1 node2
  jupiter-bus profile node1 node2 --sizes-kb 16,256,4096 --repeats 3 --plot fit.png
  jupiter-bus profile node1 node2 --json | jq .points
"""


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected sizes in KB like 16,256,4096, got {text!r}"
        ) from None
    if not sizes:
        raise argparse.ArgumentTypeError("expected at least one size")
    return sizes


def add(commands: Any) -> None:
    """Add the ``profile`` sub-command."""
    parser = command_parser(
        commands,
        "profile",
        summary="measure one link now and show its points and fit",
        doc=__doc__,
        examples=EXAMPLES,
    )
    parser.add_argument("src", help="the measuring node (runs the network provider)")
    parser.add_argument("dst", help="its peer at the other end of the link")
    add_broker_arguments(parser)
    parser.add_argument(
        "--sizes-kb",
        type=_sizes,
        metavar="KB,KB,...",
        help="probe sizes in KB (default: the profiler's probe_sizes_kb)",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help=f"probes of each size, 1-{MAX_PROFILE_REPEATS}"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, metavar="S", help="seconds to wait for the answer"
    )
    parser.add_argument("--plot", metavar="FILE.png", help="draw the points and the fitted curve")
    parser.add_argument("--json", action="store_true", help="print the profile.result as JSON")
    parser.set_defaults(run=run, log_level=logging.WARNING)


def describe(result: ProfileResult) -> str:
    """The result in lines: each point, then the fit in words.

    Example::

        print(describe(result))   # 'node1 -> node2: 6 points ...'
    """
    lines = [f"{result.src} -> {result.dst}: {len(result.points)} points"]
    lines += [f"  {kbit:>12.1f} Kbit  {ms:>10.2f} ms" for kbit, ms in result.points]
    cost = _as_cost(result)
    if cost is not None:
        mbit = cost.rate_mbit_per_s()
        rate = f", about {mbit:.1f} Mbit/s" if mbit is not None else ""
        lines.append(
            f"fit: cost_ms = {cost.a:.4g} x^2 + {cost.b:.4g} x + {cost.c:.4g} (x in Kbit), "
            f"r2 {cost.r2:.4f}, {cost.model or 'quadratic'}{rate}"
        )
    else:
        lines.append("fit: none (fewer than 3 distinct sizes measured)")
    if result.reason:
        lines.append(f"note: {result.reason}")
    return "\n".join(lines)


def _as_cost(result: ProfileResult) -> LinkCost | None:
    a, b, c, r2 = result.a, result.b, result.c, result.r2
    if a is None or b is None or c is None or r2 is None or not result.points:
        return None
    sizes = [kbit for kbit, _ in result.points]
    return LinkCost(
        src=result.src,
        dst=result.dst,
        a=a,
        b=b,
        c=c,
        samples=len(result.points),
        r2=r2,
        min_kbit=min(sizes),
        max_kbit=max(sizes),
        model=result.model,
    )


async def _profile(args: argparse.Namespace) -> int:
    if not 1 <= args.repeats <= MAX_PROFILE_REPEATS:
        raise ConfigError(f"--repeats: expected 1 to {MAX_PROFILE_REPEATS}, got {args.repeats}")
    async with JupiterInterface(resolve_broker(args), snapshot=False) as jupiter:
        result = await jupiter.profile_link(
            args.src, args.dst, sizes_kb=args.sizes_kb, repeats=args.repeats, timeout=args.timeout
        )
    if not result.ok:
        say(f"profile {args.src} -> {args.dst} failed: {result.reason}")
        if args.json:
            print(encode(result).decode(), flush=True)
        return EXIT_FAILED
    print(encode(result).decode() if args.json else describe(result), flush=True)
    if args.plot:
        path = fit_plot(result.points, _as_cost(result), args.plot)
        say(f"wrote {path}")
    return 0 if result.fitted else EXIT_FAILED


def run(args: argparse.Namespace) -> int:
    """Run ``jupiter-bus profile``."""
    return asyncio.run(_profile(args))
