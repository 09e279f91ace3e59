"""The copy engines' modules: each lists exactly what it defines, and the
``copy_engines`` facade still offers every name the worker, tests and bench import."""

from __future__ import annotations

import asyncio
import inspect
import types

import jupiter_providers.asyncssh_engines
import jupiter_providers.copy_engines
import jupiter_providers.copy_job
import jupiter_providers.local_copy
import jupiter_providers.openssh_scp
import jupiter_providers.sftp_small
import pytest

LAYERS = [
    jupiter_providers.copy_job,
    jupiter_providers.sftp_small,
    jupiter_providers.asyncssh_engines,
    jupiter_providers.openssh_scp,
    jupiter_providers.local_copy,
]


def defined_public_names(module: types.ModuleType) -> set[str]:
    names = set()
    for name, obj in vars(module).items():
        if name.startswith("_") or inspect.ismodule(obj):
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if obj.__module__ == module.__name__:
                names.add(name)
        elif name.isupper():  # a constant
            names.add(name)
    return names


@pytest.mark.parametrize("module", LAYERS, ids=lambda m: m.__name__)
def test_all_is_exactly_what_the_module_defines_and_each_is_documented(
    module: types.ModuleType,
) -> None:
    assert set(module.__all__) == defined_public_names(module)
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{module.__name__}.{name} has no docstring"


def test_facade_offers_every_name_used_from_it() -> None:
    facade = jupiter_providers.copy_engines
    used = {
        "CopyFailure", "CopyJob", "Engine", "LocalEngine", "OpenSshOptions",
        "OpenSshScpEngine", "ScpEngine", "SftpEngine", "SmallFileChannel", "TEMP_MARK",
        "local_file_size", "_has_posix_rename",
    }  # fmt: skip
    assert all(hasattr(facade, name) for name in used)
    for name in facade.__all__:
        home = next((m for m in LAYERS if name in m.__all__), None)
        if home is not None:
            assert getattr(facade, name) is getattr(home, name)


async def test_leftovers_are_kept_per_endpoint_claimed_by_their_run_and_bounded() -> None:
    from jupiter_providers.copy_engines import CopyJob, Leftovers

    def job(host: str, key: str) -> CopyJob:
        address = "10.0.0.1" if host == "a" else "10.0.0.2"
        return CopyJob(
            host=address, port=22, user="u", source="/s", destination="/d", idempotency_key=key
        )

    leftovers = Leftovers(limit=3)
    for i in range(5):
        leftovers.add(job("a", "k"), f"/d.{i}")
    leftovers.add(job("b", "k"), "/other")
    assert len(leftovers) == 4  # the two oldest of endpoint a forgotten
    await leftovers.claim(job("a", "k"), "/d.3")  # a run of that job writes it again
    taken = leftovers.take(job("a", "x"))
    assert taken == ["/d.2", "/d.4"]
    assert leftovers.take(job("a", "x")) == []
    # a run claiming a name being removed waits until the removal is over
    claiming = asyncio.create_task(leftovers.claim(job("a", "k2"), "/d.4"))
    await asyncio.sleep(0.01)
    assert not claiming.done()
    leftovers.settle(job("a", "x"), taken, kept=["/d.4"])  # its removal failed
    await asyncio.wait_for(claiming, 1)
    assert leftovers.take(job("a", "x")) == []  # claimed: not a leftover any more
    assert leftovers.take(job("b", "x")) == ["/other"]
