"""The public API is the list in ``__all__`` (httpx's way), for every module we ship.

Every module of ``jupiter_bus`` and ``jupiter_providers`` is found by walking the
packages, so a new module cannot slip past: each has an ``__all__``; every name in it
exists and (for classes and functions) is documented; every public class or function a
module defines is listed there. The package root is held to exactly its ``__all__``.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types

import jupiter_providers
import pytest

import jupiter_bus


def _modules(package: types.ModuleType) -> list[types.ModuleType]:
    found = [package]
    for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue  # private by name (e.g. a __main__)
        found.append(importlib.import_module(info.name))
    return found


MODULES = _modules(jupiter_bus) + _modules(jupiter_providers)


def _defined_here(module: types.ModuleType) -> set[str]:
    """Public classes and functions whose home is ``module``."""
    return {
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", None) == module.__name__
    }


def test_every_module_is_found() -> None:
    names = {m.__name__ for m in MODULES}
    assert {"jupiter_bus.errors", "jupiter_bus.facade.interface"} <= names
    assert "jupiter_providers.transfer" in names


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_all_lists_existing_documented_names_once(module: types.ModuleType) -> None:
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module.__name__} has no __all__"
    assert all(isinstance(name, str) for name in exported)
    assert len(set(exported)) == len(exported), f"{module.__name__}.__all__ repeats a name"
    for name in exported:
        assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name!r}"
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj):
            assert inspect.getdoc(obj), f"{module.__name__}.{name} has no docstring"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_public_class_and_function_is_listed(module: types.ModuleType) -> None:
    unlisted = _defined_here(module) - set(module.__all__)
    assert not unlisted, f"{module.__name__} defines public {sorted(unlisted)} not in __all__"


def test_package_root_exports_exactly_its_all() -> None:
    public = {
        name
        for name, obj in vars(jupiter_bus).items()
        if not name.startswith("_") and not inspect.ismodule(obj) and name != "annotations"
    }
    exported = set(jupiter_bus.__all__) - {"__version__"}
    modules = {name for name in exported if inspect.ismodule(getattr(jupiter_bus, name))}
    assert public == exported - modules
    assert list(jupiter_bus.__all__) == sorted(jupiter_bus.__all__)


def test_every_error_class_lives_in_errors() -> None:
    """One error module: each exception class any module defines has its home there, and
    the package root exports every one."""
    from jupiter_bus import errors

    strays = [
        f"{module.__name__}.{name}"
        for module in MODULES
        if module is not errors
        for name, obj in vars(module).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == module.__name__
    ]
    assert not strays
    for name in errors.__all__:
        obj = getattr(errors, name)
        if inspect.isclass(obj):
            assert issubclass(obj, errors.JupiterBusError), name
            assert name in jupiter_bus.__all__, f"jupiter_bus does not export {name}"
