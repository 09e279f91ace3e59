"""docs/configuration.md is generated from the typed options and kept equal to them."""

from __future__ import annotations

from pathlib import Path

from jupiter_bus.agent import AgentOptions
from jupiter_bus.config_reference import provider_options, render
from jupiter_bus.options import describe

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_docs_configuration_md_is_the_generated_reference() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: run "
        "python -m jupiter_bus.config_reference --write docs/configuration.md"
    )


def test_every_option_of_the_agent_and_each_provider_is_in_the_reference() -> None:
    text = render()
    for info in describe(AgentOptions):
        if info.path != "providers":
            assert f"| `{info.path}` |" in text
    options = provider_options()
    assert {"resources", "transfer", "network"} <= set(options)
    for name, cls in options.items():
        assert cls is not None, f"provider {name} has no typed options"
        assert f"## `[providers.{name}]`" in text
        for info in describe(cls, path=name):
            assert info.doc, f"{info.path} has no doc"
            assert f"| `{info.path.removeprefix(name + '.')}` |" in text
