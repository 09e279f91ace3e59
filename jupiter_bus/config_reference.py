"""The configuration reference, generated from the typed options so it cannot drift.

Every option of the agent (:class:`~jupiter_bus.agent.AgentOptions`) and of each installed
provider (its ``Options`` class, found through the ``jupiter_bus.providers`` entry points)
is listed with its TOML path, expected type, default and meaning. ``docs/configuration.md``
is this module's output; a test fails when the two differ, and
``python -m jupiter_bus.config_reference --write docs/configuration.md`` brings it up to date.

Example::

    from jupiter_bus.config_reference import render
    print(render())
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from .agent import AgentOptions
from .options import OptionInfo, Options, describe
from .plugins import available_providers, load_provider

__all__ = ["main", "provider_options", "render"]

_HEADER = """\
# Configuration reference

Generated from the typed options (`python -m jupiter_bus.config_reference --write
docs/configuration.md`); a test keeps it equal to the code. An agent reads one TOML file
(`jupiter-bus agent --config FILE`): the top-level keys below, then one
`[providers.<name>]` table per provider to run. A value of the wrong type or out of range,
and any key not listed here, is refused at start with one line naming it (exit status 2).
Defaults are written as in TOML; `none` means the option is absent.

Without any `[providers.<name>]` table the agent runs `resources`, `transfer` and
`network`, the profiler learning its peers from their resource events and logging in to
them as the agent's own user (`default_user`). Without `host`, the agent announces the
local address of its route to the broker (`127.0.0.1` when the broker is on this
machine), and warns when that is loopback while configured peers are remote.
"""


def provider_options() -> dict[str, type[Options] | None]:
    """Each installed provider's options class, by provider name (``None``: untyped)."""
    return {name: load_provider(name).Options for name in sorted(available_providers())}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(infos: Iterable[OptionInfo], prefix: str) -> list[str]:
    rows = ["| option | type | default | meaning |", "| --- | --- | --- | --- |"]
    for info in infos:
        name = info.path.removeprefix(prefix)
        doc = info.doc + (" (secret: never logged or echoed)" if info.secret else "")
        rows.append(
            f"| `{_cell(name)}` | {_cell(info.expected)} | `{_cell(info.default)}` | {_cell(doc)} |"
        )
    return rows


def render() -> str:
    """The whole reference, as Markdown.

    Example::

        >>> "providers.transfer" in render()
        True
    """
    lines = [_HEADER, "## Top level", ""]
    top = [info for info in describe(AgentOptions) if info.path != "providers"]
    lines += _table(top, "")
    for name, options in provider_options().items():
        lines += ["", f"## `[providers.{name}]`", ""]
        if options is None:
            lines.append("This provider declares no typed options.")
            continue
        doc = (options.__doc__ or "").strip().split("\n\n")[0]
        if doc:
            lines += [" ".join(doc.split()).replace("``", "`"), ""]
        prefix = f"providers.{name}."
        lines += _table(describe(options, path=f"providers.{name}"), prefix)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the reference, or write it to a file (``--write PATH``)."""
    parser = argparse.ArgumentParser(description="print the configuration reference")
    parser.add_argument("--write", metavar="PATH", help="write it to PATH instead of stdout")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
