"""The public API is the list in ``__all__``: every name there exists and is documented."""

from __future__ import annotations

import inspect
import types

import pytest

import jupiter_bus
import jupiter_bus.facade
import jupiter_bus.formats
import jupiter_bus.state
import jupiter_bus.state.coverage
import jupiter_bus.state.network_data
import jupiter_bus.state.network_state
import jupiter_bus.state.resources
import jupiter_bus.state.signal
import jupiter_bus.state.tables
import jupiter_bus.transport

MODULES = [
    jupiter_bus,
    jupiter_bus.transport,
    jupiter_bus.facade,
    jupiter_bus.formats,
    jupiter_bus.state,
    jupiter_bus.state.coverage,
    jupiter_bus.state.network_data,
    jupiter_bus.state.network_state,
    jupiter_bus.state.resources,
    jupiter_bus.state.signal,
    jupiter_bus.state.tables,
]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_all_names_exist_and_are_documented(module: types.ModuleType) -> None:
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj):
            assert inspect.getdoc(obj), f"{module.__name__}.{name} has no docstring"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_public_members_are_listed(module: types.ModuleType) -> None:
    public = {
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", "").startswith(module.__name__)
    }
    assert public <= set(module.__all__)
