"""The command-line options every benchmark spells the same way."""

from __future__ import annotations

import argparse

from harness.broker import DEFAULT_URL


def bench_parser(doc: str | None, quick_help: str) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of ``doc``, with ``--url`` and ``--quick``.

    Example::

        parser = bench_parser(__doc__, "fewer messages: under a minute")
        add_rounds(parser, "rounds to take the median of (default 7; 3 with --quick)")
        args = parser.parse_args()
    """
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    parser.add_argument("--url", default=DEFAULT_URL, help=f"AMQP URL (default {DEFAULT_URL})")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    return parser


def add_uvloop(parser: argparse.ArgumentParser) -> None:
    """``--uvloop``: run on uvloop's event loop (see :func:`harness.loop.use_uvloop`)."""
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")


def add_rounds(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--rounds N``, N >= 1; ``None`` when not given (each bench has its default)."""
    parser.add_argument("--rounds", type=rounds_count, help=help_text)


def rounds_count(text: str) -> int:
    """A ``--rounds`` value: a whole number of at least 1."""
    try:
        rounds = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if rounds < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return rounds
