"""``jupiter-bus watch`` as a script drives it: a subprocess against RabbitMQ, fed by
link-cost events published here, its ``--json`` lines parsed and its plain lines read."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import orjson
import psutil
import pytest

from jupiter_bus.cli.console import EXIT_UNREACHABLE
from jupiter_bus.messages import LinkCost, TransferProgress, encode
from jupiter_bus.topology import EVENTS_EXCHANGE, network_key, transfer_progress_key
from jupiter_bus.transport import connect

from .conftest import AMQP_URL

pytestmark = pytest.mark.amqp


def cost(src: str, dst: str, c: float) -> LinkCost:
    return LinkCost(
        src=src, dst=dst, a=1e-9, b=1e-3, c=c, samples=12, r2=0.99, min_kbit=8, max_kbit=8e4
    )


def routing_key(update: LinkCost | TransferProgress) -> str:
    if isinstance(update, TransferProgress):
        return transfer_progress_key(update.node)
    return network_key(update.src, update.dst)


async def watch(*args: str, feed: Sequence[LinkCost | TransferProgress]) -> tuple[int, str, str]:
    """Run ``watch`` and publish ``feed`` (again and again) until it ends."""
    env = {**os.environ, "JUPITER_BUS_URL": AMQP_URL}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jupiter_bus", "watch", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    bus = await connect(AMQP_URL)
    try:
        done = asyncio.create_task(child.communicate())
        while not done.done():
            for update in feed:
                await bus.publish(EVENTS_EXCHANGE, routing_key(update), encode(update))
            await asyncio.wait([done], timeout=0.2)
        out, err = await asyncio.wait_for(done, 30)
    finally:
        await bus.close()
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


async def test_watch_network_json_lines_follow_the_filter() -> None:
    a, b, c = (f"w{uuid.uuid4().hex[:6]}{i}" for i in range(3))
    status, out, err = await watch(
        "network", "--src", a, "--json", "--count", "3", "--duration", "30",
        feed=[cost(b, c, 7.0), cost(a, b, 40.0), cost(a, c, 55.0)],
    )  # fmt: skip
    assert status == 0, err
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert len(lines) == 3
    assert {line["src"] for line in lines} == {a}
    assert {line["dst"] for line in lines} <= {b, c}
    assert all(line["type"] == "network.cost" for line in lines)


async def test_watch_network_plain_lines_name_the_link_and_fit() -> None:
    a, b = (f"w{uuid.uuid4().hex[:6]}{i}" for i in range(2))
    status, out, err = await watch(
        "network", "--src", a, "--dst", b, "--count", "1", "--duration", "30",
        feed=[cost(a, b, 42.0)],
    )  # fmt: skip
    assert status == 0, err
    assert out.splitlines()[0].startswith(f"{a}->{b} cost_ms = 1e-09 x^2 + 0.001 x + 42")
    assert "r2 0.990" in out


async def test_watch_progress_prints_how_far_each_job_of_the_node_got() -> None:
    node, other = (f"w{uuid.uuid4().hex[:6]}{i}" for i in range(2))
    job = str(uuid.uuid4())
    status, out, err = await watch(
        "progress", "--node", node, "--count", "1", "--duration", "30",
        feed=[
            TransferProgress(request_id=job, node=other, bytes_done=1, bytes_total=2),
            TransferProgress(request_id=job, node=node, bytes_done=512, bytes_total=2048),
        ],
    )  # fmt: skip
    assert status == 0, err
    assert out.splitlines() == [f"{job} on {node}: 512 of 2048 bytes (25%)"]


async def test_watch_ends_after_its_duration_with_nothing_to_show() -> None:
    status, out, err = await watch(
        "network", "--src", f"nobody{uuid.uuid4().hex[:6]}", "--duration", "1.5", feed=[]
    )
    assert status == 0, err
    assert out == ""


async def test_watch_without_a_broker_is_status_69() -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jupiter_bus", "watch", "resources",
        "--broker", "amqp://127.0.0.1:1/",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == EXIT_UNREACHABLE
    assert err.decode().strip().startswith("jupiter-bus: ")


async def test_watch_network_plot_draws_the_links_seen_as_a_heatmap(tmp_path: Path) -> None:
    pyplot = pytest.importorskip("matplotlib.pyplot")
    a, b, c = (f"w{uuid.uuid4().hex[:6]}{i}" for i in range(3))
    picture = tmp_path / "links.png"
    status, _, err = await watch(
        "network", "--src", a, "--count", "2", "--duration", "30",
        "--plot", str(picture), "--size-kb", "1000",
        feed=[cost(a, b, 40.0), cost(a, c, 400.0)],
    )  # fmt: skip
    assert status == 0, err
    assert f"wrote {picture}" in err
    assert "cost of 1000 KB" in err
    pixels = pyplot.imread(picture)
    assert pixels.shape[0] > 200
    assert pixels.shape[1] > 200
    assert pixels[..., :3].std() > 0.1  # a picture, not a blank page


async def test_watch_plot_is_only_for_the_network(tmp_path: Path) -> None:
    status, _, err = await watch(
        "resources", "--duration", "1", "--plot", str(tmp_path / "x.png"), feed=[]
    )
    assert status == 2
    assert "only 'watch network'" in err


def tmux(*args: str) -> str:
    """Run a tmux command (with the broker's URL in its environment); its output."""
    env = {**os.environ, "JUPITER_BUS_URL": AMQP_URL, "TERM": "xterm-256color"}
    return subprocess.run(
        ["tmux", *args], capture_output=True, text=True, env=env, check=False
    ).stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
async def test_watch_network_on_a_terminal_is_a_live_table(tmp_path: Path) -> None:
    a, b = (f"w{uuid.uuid4().hex[:6]}{i}" for i in range(2))
    session = f"jb-watch-{os.getpid()}"
    done = tmp_path / "status"
    command = (
        f"{sys.executable} -m jupiter_bus watch network --src {a} --duration 8; "
        f"echo $? > {done}; sleep 30"
    )
    await asyncio.to_thread(
        tmux, "new-session", "-d", "-s", session, "-x", "150", "-y", "30", command
    )
    bus = await connect(AMQP_URL)
    screens = []
    try:
        for i in range(30):
            if done.exists():
                break
            # 8 Mbit/s: b = 1/8 ms per Kbit; the second link's update replaces its row
            await bus.publish(EVENTS_EXCHANGE, network_key(a, b), encode(cost(a, b, 10.0 + i)))
            await asyncio.sleep(0.5)
            screens.append(await asyncio.to_thread(tmux, "capture-pane", "-p", "-t", session))
    finally:
        await bus.close()
        await asyncio.to_thread(tmux, "kill-session", "-t", session)
    table = [s for s in screens if "cost_ms = a x^2 + b x + c" in s and a in s]
    assert table, screens[-1] if screens else "no screen"
    last = table[-1]
    assert len([line for line in last.splitlines() if a in line and b in line]) == 1  # one row
    assert "r2" in last
    assert re.search(r"network: 1 shown of what came, (\d+) updates", last)


async def test_watch_resources_follows_a_real_agent(tmp_path: Path) -> None:
    node = f"wr{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "JUPITER_BUS_URL": AMQP_URL, "XDG_STATE_HOME": str(tmp_path)}
    config = tmp_path / "agent.toml"
    config.write_text(
        f'node = "{node}"\nhost = "127.0.0.1"\n[providers.resources]\ninterval = 0.5\n',
        encoding="utf-8",
    )
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jupiter_bus", "agent", "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "jupiter_bus", "watch", "resources", "--node", node,
            "--json", "--count", "3", "--duration", "60",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        out, err = await asyncio.wait_for(child.communicate(), 90)
    finally:
        agent.terminate()
        await agent.wait()
    assert child.returncode == 0, err.decode()
    samples = [orjson.loads(line) for line in out.splitlines()]
    assert len(samples) == 3
    assert {s["node"] for s in samples} == {node}
    assert all(s["type"] == "resource" for s in samples)
    assert {s["cpu_count"] for s in samples} == {psutil.cpu_count()}
    assert all(s["host"] == "127.0.0.1" for s in samples)
