"""The ``jupiter-bus`` command as a user runs it: broker URL kept off argv, waiting for
the broker, connection errors in words, logs that tell what the agent does, Ctrl-C.

Each test drives ``python -m jupiter_bus.cli`` (or an example) as a subprocess.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .conftest import AMQP_URL
from .proxy import TcpProxy

pytestmark = pytest.mark.amqp

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PASSWORD = urlsplit(AMQP_URL).password or "guest"
BROKER = urlsplit(AMQP_URL)
NO_BROKER_ENV = {k: v for k, v in os.environ.items() if k != "JUPITER_BUS_URL"}


class Run:
    """A running command whose stdout and stderr are read line by line as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._new = asyncio.Condition()
        self._readers = [
            asyncio.create_task(self._read(stream))
            for stream in (process.stdout, process.stderr)
            if stream is not None
        ]

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            async with self._new:
                self.lines.append(line.decode(errors="replace").rstrip("\n"))
                self._new.notify_all()

    async def wait_for(self, text: str, timeout: float = 60) -> str:
        """The first line holding ``text``, waiting up to ``timeout`` seconds for it."""

        def found() -> str | None:
            return next((line for line in self.lines if text in line), None)

        async with self._new:
            try:
                await asyncio.wait_for(self._new.wait_for(lambda: found() is not None), timeout)
            except TimeoutError:
                pytest.fail(f"no line with {text!r} in {timeout} s:\n" + self.output)
        line = found()
        assert line is not None
        return line

    async def finish(self, timeout: float = 60) -> int:
        """Wait for the exit status (and every line of output)."""
        code = await asyncio.wait_for(self.process.wait(), timeout)
        await asyncio.gather(*self._readers)
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


@asynccontextmanager
async def command(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[Run]:
    """Start ``args`` (stdout and stderr apart); kill it if the test leaves it running."""
    process = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**(NO_BROKER_ENV if env is None else env), "PYTHONUNBUFFERED": "1"},
    )
    run = Run(process)
    try:
        yield run
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for reader in run._readers:
            reader.cancel()


def agent(*args: str) -> Sequence[str]:
    return (sys.executable, "-m", "jupiter_bus.cli", "agent", *args)


def with_env(**values: str) -> dict[str, str]:
    return {**NO_BROKER_ENV, **values}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def stop(run: Run, sig: signal.Signals = signal.SIGTERM) -> int:
    run.process.send_signal(sig)
    return await run.finish()


# -- item 2: the broker URL off argv, the wait, errors in words ------------------------------


async def test_agent_takes_the_broker_from_the_environment_not_argv(unique: str) -> None:
    env = with_env(JUPITER_BUS_URL=AMQP_URL)
    async with command(*agent("--node", f"env-{unique}"), env=env) as run:
        await run.wait_for("running providers")
        cmdline = Path(f"/proc/{run.process.pid}/cmdline").read_bytes()
        assert b"--broker" not in cmdline
        assert f":{PASSWORD}@".encode() not in cmdline
        assert await stop(run) == 0
    assert "(from JUPITER_BUS_URL)" in run.output
    assert PASSWORD not in run.output.replace("guest:", "") or PASSWORD == "guest"
    assert f":{PASSWORD}@" not in run.output


async def test_agent_reads_the_broker_file_and_warns_when_others_may_read_it(
    tmp_path: Path, unique: str
) -> None:
    secret = tmp_path / "broker.url"
    secret.write_text(AMQP_URL + "\n")
    secret.chmod(0o644)
    args = agent("--node", f"file-{unique}", "--broker-file", str(secret))
    async with command(*args) as run:
        await run.wait_for("running providers")
        assert await stop(run) == 0
    assert "other users may read it (mode 644); chmod 600" in run.output
    assert f":{PASSWORD}@" not in run.output

    secret.chmod(0o600)
    async with command(*args) as run:
        await run.wait_for("running providers")
        assert await stop(run) == 0
    assert "chmod 600" not in run.output
    assert f"(from --broker-file {secret})" in run.output


async def test_a_password_on_the_command_line_works_but_warns(unique: str) -> None:
    async with command(*agent("--node", f"argv-{unique}", "--broker", AMQP_URL)) as run:
        await run.wait_for("running providers")
        assert await stop(run) == 0
    warning = next(line for line in run.lines if "on the command line" in line)
    assert "WARNING" in warning
    assert "JUPITER_BUS_URL" in warning
    assert "--broker-file" in warning
    assert f":{PASSWORD}@" not in run.output


async def test_agent_waits_for_a_broker_that_comes_up_later(unique: str) -> None:
    port = free_port()
    url = f"amqp://{BROKER.username}:{PASSWORD}@127.0.0.1:{port}{BROKER.path or '/'}"
    env = with_env(JUPITER_BUS_URL=url)
    async with command(*agent("--node", f"wait-{unique}", "--wait", "60"), env=env) as run:
        line = await run.wait_for("broker not reachable (attempt 2)")
        assert "connection refused" in line
        assert "WARNING" in line
        proxy = TcpProxy(BROKER.hostname or "127.0.0.1", BROKER.port or 5672)
        await proxy.start(port)
        try:
            await run.wait_for(f"connected to amqp://127.0.0.1:{port}/")
            await run.wait_for("running providers")
            assert await stop(run) == 0
        finally:
            await proxy.close()
    assert f":{PASSWORD}@" not in run.output


def _broker_with(*, host: str | None = None, password: str | None = None, path: str = "/") -> str:
    netloc = f"{BROKER.username}:{password or PASSWORD}@{host or BROKER.netloc.split('@')[-1]}"
    return f"amqp://{netloc}{path}"


ERRORS = [
    pytest.param(
        _broker_with(host="rabbit-nowhere.invalid:5672"),
        "host name not found (DNS): 'rabbit-nowhere.invalid'",
        69,
        id="unknown-host",
    ),
    pytest.param(
        _broker_with(host=f"127.0.0.1:{free_port()}"), "connection refused by", 69, id="refused"
    ),
    pytest.param(
        _broker_with(password="wrong-Pa55word"),
        "bad credentials (ACCESS_REFUSED) for user",
        77,
        id="wrong-password",
    ),
    pytest.param(
        _broker_with(path="/nosuchvhost"),
        "no virtual host 'nosuchvhost'",
        77,
        id="unknown-vhost",
    ),
]


@pytest.mark.parametrize(("url", "words", "code"), ERRORS)
async def test_each_connection_error_is_one_line_in_words(
    url: str, words: str, code: int, unique: str
) -> None:
    env = with_env(JUPITER_BUS_URL=url)
    async with command(*agent("--node", f"err-{unique}", "--wait", "1.5"), env=env) as run:
        assert await run.finish() == code
    errors = [line for line in run.lines if line.startswith("jupiter-bus: ")]
    assert len(errors) == 1, run.output
    assert errors[0].startswith("jupiter-bus: cannot connect to amqp://"), errors[0]
    assert words in errors[0]
    assert run.lines[-1] == errors[0]
    password = urlsplit(url).password or ""
    assert password not in run.output
    for noise in ("AMQPConnectionError", "InvalidFrameError", "Traceback"):
        assert noise not in run.output


# -- item 3: logs that tell the story -----------------------------------------------------


async def test_info_log_names_the_broker_and_the_providers_settings_not_secrets(
    tmp_path: Path, unique: str
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'node = "log-{unique}"\nbroker = "{AMQP_URL}"\n'
        "[providers.resources]\ninterval = 0.5\n"
        "[providers.network]\ninterval = 600\n"
        '[[providers.network.peers]]\nnode = "peer1"\nhost = "127.0.0.1"\n'
        'user = "jupiter"\npassword = "peer-Secret-42"\n'
    )
    config.chmod(0o600)
    async with command(*agent("--config", str(config))) as run:
        await run.wait_for("running providers")
        assert await stop(run) == 0
    out = run.output
    where = BROKER.netloc.split("@")[-1]
    assert f"connecting to amqp://{where}/" in out
    assert f"connected to amqp://{where}/" in out
    assert f"agent log-{unique}: provider resources: interval=0.5" in out
    network = next(line for line in run.lines if "provider network:" in line)
    assert "interval=600.0" in network
    assert "node='peer1'" in network
    assert "password=(set)" in network
    assert "peer-Secret-42" not in out
    assert f":{PASSWORD}@" not in out
    for library in ("aiormq", "aio_pika", "asyncssh"):
        assert f" INFO {library}" not in out
        assert f" DEBUG {library}" not in out


async def test_lost_and_restored_connections_are_logged(unique: str) -> None:
    proxy = TcpProxy(BROKER.hostname or "127.0.0.1", BROKER.port or 5672)
    await proxy.start()
    url = f"amqp://{BROKER.username}:{PASSWORD}@127.0.0.1:{proxy.port}{BROKER.path or '/'}"
    try:
        async with command(
            *agent("--node", f"cut-{unique}"), env=with_env(JUPITER_BUS_URL=url)
        ) as run:
            await run.wait_for("running providers")
            assert proxy.cut() >= 1
            lost = await run.wait_for("lost")
            assert "WARNING" in lost
            assert f"connection to amqp://127.0.0.1:{proxy.port}/" in lost
            await run.wait_for("restored")
            assert await stop(run) == 0
    finally:
        await proxy.close()
    assert f":{PASSWORD}@" not in run.output


# -- item 6: Ctrl-C -------------------------------------------------------------------------


def _no_traceback(run: Run) -> None:
    assert "Traceback" not in run.output, run.output
    assert "never retrieved" not in run.output, run.output


@pytest.mark.parametrize("broker", ["memory://ctrl-c", AMQP_URL], ids=["memory", "amqp"])
async def test_ctrl_c_stops_the_demo_with_130(broker: str) -> None:
    cmd = (sys.executable, "-m", "jupiter_bus.cli", "demo", "--broker", broker)
    async with command(*cmd) as run:
        await run.wait_for("jupiter-bus demo on")
        assert await stop(run, signal.SIGINT) == 130
    _no_traceback(run)
    assert "jupiter-bus: interrupted" in run.lines


async def test_ctrl_c_stops_an_example_with_130() -> None:
    script = EXAMPLES / "watch_network.py"
    async with command(
        sys.executable, str(script), "--duration", "120", "--count", "1000000"
    ) as run:
        await run.wait_for(" -> ")  # live updates are arriving
        assert await stop(run, signal.SIGINT) == 130
    _no_traceback(run)


async def test_ctrl_c_stops_the_agent_gracefully_with_130(unique: str) -> None:
    env = with_env(JUPITER_BUS_URL=AMQP_URL)
    async with command(*agent("--node", f"int-{unique}"), env=env) as run:
        await run.wait_for("running providers")
        assert await stop(run, signal.SIGINT) == 130
    _no_traceback(run)
    assert f"agent int-{unique} stopped" in run.output


async def test_ctrl_c_while_waiting_for_the_broker_stops_at_once(unique: str) -> None:
    env = with_env(JUPITER_BUS_URL=_broker_with(host=f"127.0.0.1:{free_port()}"))
    async with command(*agent("--node", f"intw-{unique}", "--wait", "120"), env=env) as run:
        await run.wait_for("broker not reachable (attempt 1)")
        assert await stop(run, signal.SIGINT) == 130
    _no_traceback(run)


async def test_the_facade_says_what_failed_in_the_same_words() -> None:
    from jupiter_bus import BrokerRefused, BrokerUnreachable, JupiterInterface

    with pytest.raises(BrokerRefused, match=r"bad credentials \(ACCESS_REFUSED\)") as refused:
        async with JupiterInterface(_broker_with(password="wrong-Pa55word")):
            pass
    assert "wrong-Pa55word" not in str(refused.value)
    with pytest.raises(BrokerUnreachable, match=r"connection refused by 127\.0\.0\.1"):
        async with JupiterInterface(_broker_with(host=f"127.0.0.1:{free_port()}")):
            pass
