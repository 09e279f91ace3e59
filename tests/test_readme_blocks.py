"""README.md's code runs as a newcomer pastes it (issue 10, item 7).

Each ``python`` block either runs as it stands (here, in a subprocess, against the
test broker) or is part of an example under examples/ that the example tests run,
word for word. The ``sh`` blocks name commands and flags that exist; the agent's
``toml`` block runs in tests/test_readme_agent.py.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jupiter_bus.cli import _parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLES = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "examples").glob("*.py")}


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def home_example(block: str) -> str | None:
    """The example holding every line of ``block`` (its body as one run), if any."""
    imports = [line for line in block.splitlines() if line.startswith(("import ", "from "))]
    body = "\n".join(
        line for line in block.splitlines() if line not in imports
    ).strip()  # fmt: skip
    for name, text in EXAMPLES.items():
        if body in text and all(line in text.splitlines() for line in imports):
            return name
    return None


PYTHON_BLOCKS = blocks("python")


def test_the_readme_has_its_code_blocks() -> None:
    assert len(PYTHON_BLOCKS) >= 2
    assert blocks("sh")
    assert blocks("toml")


@pytest.mark.amqp
@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_each_python_block_runs_as_pasted_or_is_an_example(index: int) -> None:
    block = PYTHON_BLOCKS[index]
    if (example := home_example(block)) is not None:
        runs = (ROOT / "tests" / "test_examples.py").read_text(encoding="utf-8")
        assert f'run_example("{example.removesuffix(".py")}"' in runs, (
            f"{example} holds README block {index} but no test runs it"
        )
        return
    result = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, f"README python block {index} failed:\n{result.stderr}"


def test_the_sh_blocks_name_commands_and_flags_that_exist() -> None:
    text = "\n".join(blocks("sh"))
    for script in re.findall(r"scripts/[\w.-]+", text):
        assert (ROOT / script).is_file(), script
    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    top = {flag for action in parser._actions for flag in action.option_strings}
    for line in text.splitlines():
        if (found := re.search(r"jupiter-bus (--?[\w-]+|\w[\w-]*)", line)) is None:
            continue
        name = found.group(1)
        code = line.split("#", 1)[0]
        if name.startswith("-"):
            assert name in top, line
            continue
        assert name in commands.choices, f"no command {name!r}: {line}"
        known = {f for action in commands.choices[name]._actions for f in action.option_strings}
        flags = set(re.findall(r"\s(--[\w-]+)", code))
        assert flags <= known, flags - known
