"""The command-line options every benchmark spells the same way."""

from __future__ import annotations

import argparse

from harness.broker import DEFAULT_URL


def bench_parser(
    doc: str | None, quick_help: str, *, rounds_help: str | None = None, uvloop: bool = False
) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of ``doc``, with ``--url`` and ``--quick``;
    ``--rounds N`` (N >= 1, ``None`` when not given) if ``rounds_help`` says what it does,
    and ``--uvloop`` (see :func:`harness.loop.use_uvloop`) if asked for.

    Example::

        parser = bench_parser(__doc__, "fewer messages", rounds_help="default 7", uvloop=True)
        args = parser.parse_args()
    """
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    parser.add_argument("--url", default=DEFAULT_URL, help=f"AMQP URL (default {DEFAULT_URL})")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if uvloop:
        parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    if rounds_help is not None:
        parser.add_argument("--rounds", type=rounds_count, help=rounds_help)
    return parser


def rounds_count(text: str) -> int:
    """A ``--rounds`` value: a whole number of at least 1."""
    try:
        rounds = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if rounds < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return rounds
