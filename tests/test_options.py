"""Typed options: each bad value is refused at start, by its full path, without secrets."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from jupiter_providers.network import NetworkOptions, NetworkProvider, PeerOptions
from jupiter_providers.resources import ResourceOptions, ResourceProvider
from jupiter_providers.transfer import TransferOptions, TransferProvider

from jupiter_bus.agent import Agent, AgentOptions
from jupiter_bus.errors import ConfigError, CopyFailure, ProviderError
from jupiter_bus.messages import TransferRequest
from jupiter_bus.options import Options, convert, describe, is_host, option
from jupiter_bus.plugins import NodeContext, Provider
from jupiter_bus.transport import Transport

DEAD_BROKER = "amqp://guest:guest@127.0.0.1:9/"
"""Nothing listens there: an agent that tried to connect would fail with another error."""

OPTIONS_CLASSES: list[type[Options]] = [
    AgentOptions,
    ResourceOptions,
    TransferOptions,
    NetworkOptions,
    PeerOptions,
]


def refused(cls: type[Options], data: object, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        convert(cls, data, **kwargs)
    return str(info.value)


# -- the bad values of the issue, one by one ------------------------------------------------


def test_allow_roots_as_a_string_is_refused_not_split_into_characters(
    transport: Transport,
) -> None:
    context = NodeContext("n1", transport)
    with pytest.raises(ProviderError) as info:
        TransferProvider(context, {"allow_roots": "/data"})
    assert str(info.value) == (
        "providers.transfer.allow_roots: expected a list of paths, got a string ('/data')"
    )
    # The list form confines sources to /data: '/' (every file) is not among the roots.
    worker = TransferProvider(context, {"allow_roots": ["/data"]})
    assert worker.allow_roots == [str(Path("/data").resolve())]
    with pytest.raises(CopyFailure, match="outside this worker's allowed roots"):
        worker._check_source(
            TransferRequest(host="h", user="u", source="/etc/passwd", destination="/tmp/x")
        )


def test_concurrency_zero_is_refused(transport: Transport) -> None:
    with pytest.raises(ProviderError, match=r"^providers\.transfer\.concurrency: expected an "):
        TransferProvider(NodeContext("n1", transport), {"concurrency": 0})
    message = refused(TransferOptions, {"concurrency": 0}, path="providers.transfer")
    assert message.endswith("expected an integer from 1 to 65535, got 0")


def test_interval_as_text_is_refused(transport: Transport) -> None:
    with pytest.raises(ProviderError) as info:
        ResourceProvider(NodeContext("n1", transport), {"interval": "five"})
    assert str(info.value) == (
        "providers.resources.interval: expected a number of seconds > 0, got a string ('five')"
    )


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"ssh_port": 99999}, "ssh_port: expected an integer from 1 to 65535, got 99999"),
        ({"ssh_port": 0}, "ssh_port: expected an integer from 1 to 65535, got 0"),
        ({"node": "n" * 200}, "node: expected a node name (letters, digits, '_' and '-'; "),
        ({"host": "not a host!!"}, "host: expected a host name or IP address, got a string"),
        ({"grace": -1}, "grace: expected a number of seconds >= 0, got -1"),
        (
            {"nodee": "x"},
            "no top-level option 'nodee'; known: broker, connect_timeout, grace, host, "
            "link_metrics, metrics_host, metrics_port, node,",
        ),
    ],
)
def test_bad_agent_values_are_refused_by_name(settings: dict[str, Any], expected: str) -> None:
    assert refused(AgentOptions, {"node": "n1", **settings}).startswith(expected)


def test_a_200_character_node_name_is_refused_by_the_agent(transport: Transport) -> None:
    with pytest.raises(ConfigError, match=r"^node: .* got a string of 200 characters$"):
        Agent("n" * 200, transport, {})


def test_values_of_the_wrong_type_name_the_expected_type() -> None:
    path = {"path": "providers.transfer"}
    assert refused(TransferOptions, {"concurrency": True}, **path).endswith("got a boolean (true)")
    assert refused(TransferOptions, {"concurrency": 2.5}, **path).endswith("got 2.5")
    assert "expected true or false, got a string ('no')" in refused(
        TransferOptions, {"verify_host_keys": "no"}, **path
    )
    assert "engine: expected one of 'sftp', 'scp', 'openssh-scp', 'local'" in refused(
        TransferOptions, {"engine": "ftp"}, **path
    )
    assert refused(TransferOptions, {"client_keys": ["/k", 3]}, **path) == (
        "providers.transfer.client_keys[1]: expected a path, got 3"
    )
    assert "got inf" in refused(ResourceOptions, {"interval": float("inf")})


def test_network_options_check_their_peers_and_sizes() -> None:
    path = {"path": "providers.network"}
    peer = {"node": "n2", "host": "10.0.0.2", "user": "u"}
    assert refused(NetworkOptions, {"peers": [{**peer, "port": 70000}]}, **path) == (
        "providers.network.peers[0].port: expected an integer from 1 to 65535, got 70000"
    )
    assert refused(NetworkOptions, {"peers": [{**peer, "pasword": "x"}]}, **path).startswith(
        "providers.network.peers[0]: no option 'pasword'; known: host, node, password,"
    )
    assert refused(NetworkOptions, {"peers": [{"node": "n2", "host": "h"}]}, **path) == (
        "providers.network.peers[0].user: expected a user name (or set default_user), got none"
    )
    assert refused(NetworkOptions, {"peers": peer}, **path) == (
        "providers.network.peers: expected a list of tables, got a table"
    )
    assert refused(NetworkOptions, {"probe_sizes_kb": [16, 16, 256]}, **path) == (
        "providers.network.probe_sizes_kb: expected at least 3 distinct sizes, got [16, 256]"
    )
    assert refused(NetworkOptions, {"probe_sizes_kb": [16, -1, 256]}, **path) == (
        "providers.network.probe_sizes_kb[1]: expected an integer > 0, got -1"
    )
    assert convert(NetworkOptions, {"peers": [peer]}).peers == (
        PeerOptions("n2", "10.0.0.2", user="u"),
    )


def test_a_password_never_appears_in_an_error() -> None:
    secret = "s3cret-Pa55"
    for bad in ([secret], {"x": secret}, 12345, f"{secret}\x00", ""):
        message = refused(
            NetworkOptions,
            {"peers": [{"node": "n2", "host": "h", "user": "u", "password": bad}]},
            path="providers.network",
        )
        assert message.startswith("providers.network.peers[0].password: expected a string of ")
        assert secret not in message
        assert "12345" not in message
    message = refused(AgentOptions, {"node": "n1", "broker": f"http://u:{secret}@host/"})
    assert message == (
        "broker: expected a bus URL (memory://..., amqp://... or amqps://...), got a string"
    )


def test_unknown_provider_names_its_table() -> None:
    message = refused(AgentOptions, {"node": "n1", "providers": {"gpu": {}}})
    assert message.startswith("providers.gpu: no provider named 'gpu'; installed: ")


# -- the converter ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Inner(Options):
    name: str = option(doc="a name", min_length=1)


@dataclass(frozen=True, slots=True)
class Sample(Options):
    count: int = option(doc="how many", ge=0)
    ratio: float = option(0.5, doc="a fraction", ge=0, le=1)
    mode: Literal["a", "b"] = option("a", doc="the mode")
    label: str | None = option(None, doc="a label", max_length=5)
    tags: list[str] = option(factory=list, doc="tags")
    inners: tuple[Inner, ...] = option((), doc="nested tables")
    where: Path | None = option(None, doc="a folder")


def test_the_converter_follows_the_type_hints() -> None:
    sample = convert(
        Sample,
        {"count": 3, "ratio": 1, "mode": "b", "tags": ["x"], "inners": [{"name": "i"}]},
    )
    assert sample == Sample(count=3, ratio=1.0, mode="b", tags=["x"], inners=(Inner("i"),))
    assert type(sample.ratio) is float
    assert convert(Sample, {"count": 0, "where": Path("/x")}).where == Path("/x")
    assert convert(Sample, {"count": 0, "where": "/x"}).where == Path("/x")
    assert convert(Sample, {"count": 0, "label": None}).label is None
    assert convert(Sample, sample) is sample  # an instance is taken as it is
    assert refused(Sample, {}) == "count: required: expected an integer >= 0"
    assert refused(Sample, {"count": 1, "label": "toolong"}) == (
        "label: expected a string of 0 to 5 characters, got a string ('toolong')"
    )
    assert refused(Sample, {"count": 1, "inners": [{"name": ""}]}, path="t") == (
        "t.inners[0].name: expected a non-empty string, got a string ('')"
    )
    assert refused(Sample, {"count": 1, "tags": "x"}) == (
        "tags: expected a list of strings, got a string ('x')"
    )
    assert refused(Sample, "count = 1") == (
        "configuration: expected a table, got a string ('count = 1')"
    )


def test_limits_hold_for_options_built_in_python_too() -> None:
    with pytest.raises(ConfigError, match=r"^concurrency: expected an integer from 1 to 65535"):
        TransferOptions(concurrency=0)
    with pytest.raises(ConfigError, match=r"^peers\[0\]\.user: "):
        NetworkOptions(peers=(PeerOptions("n2", "h"),))
    assert NetworkOptions(peers=(PeerOptions("n2", "h"),), default_user="u").peers[0].port == 22


def test_every_option_is_documented_for_the_reference() -> None:
    for cls in OPTIONS_CLASSES:
        infos = list(describe(cls))
        assert infos, cls
        for info in infos:
            assert info.doc, f"{cls.__name__}.{info.path} has no doc"
            assert info.expected
            assert info.default
    rows = {info.path: info for info in describe(TransferOptions, path="providers.transfer")}
    concurrency = rows["providers.transfer.concurrency"]
    assert (concurrency.expected, concurrency.default) == ("an integer from 1 to 65535", "4")
    peers = {info.path: info for info in describe(NetworkOptions)}
    assert peers["peers[].password"].secret
    assert peers["probe_sizes_kb"].default == "[16, 256, 4096]"


def test_hosts_are_names_or_addresses() -> None:
    for good in ("10.0.0.1", "::1", "fe80::1%eth0", "node-1.lab", "n1", "jupiter_node1", "a."):
        assert is_host(good), good
    for bad in ("not a host!!", "", "-x", "x-", "a..b", "a" * 64, "host:22", "h/x"):
        assert not is_host(bad), bad


def test_providers_keep_their_attributes_and_take_instances(transport: Transport) -> None:
    context = NodeContext("n1", transport)
    worker = TransferProvider(context, TransferOptions(concurrency=2, max_attempts=3))
    assert (worker.concurrency, worker.max_attempts, worker.settings.engine) == (2, 3, "sftp")
    assert worker.options["concurrency"] == 2
    profiler = NetworkProvider(
        context, {"interval": 2, "peers": [{"node": "n2", "host": "h", "user": "u"}]}
    )
    assert profiler.interval == 2.0
    assert profiler.peers["n2"].user == "u"
    assert profiler.probe_sizes == [16_000, 256_000, 4_096_000]


class Untyped(Provider):
    name = "untyped"

    def __init__(self, context: NodeContext, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(context, options)
        self.level = self.take_options(level=1)["level"]

    async def run(self, stopping: Any) -> None:  # pragma: no cover - never started
        await stopping.wait()


def test_a_provider_without_typed_options_still_takes_a_plain_mapping(
    transport: Transport,
) -> None:
    context = NodeContext("n1", transport)
    assert Untyped(context, {"level": 3}).level == 3
    with pytest.raises(ProviderError, match="no option 'levle'"):
        Untyped(context, {"levle": 3})


async def test_a_provider_refusing_its_setup_stops_the_agent_before_it_connects(
    tmp_path: Path,
) -> None:
    agent = Agent(
        "n1",
        DEAD_BROKER,
        {"transfer": {"seal_key_file": str(tmp_path / "missing.key")}},
    )
    with pytest.raises(ProviderError, match=r"^providers\.transfer\.seal_key_file: "):
        await agent.run()


# -- the command line: one line on stderr, exit status 2, nothing started -----------------


def agent_cli(tmp_path: Path, toml: str, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "agent.toml"
    config.write_text(f'node = "n1"\nbroker = "{DEAD_BROKER}"\n{toml}')
    return subprocess.run(
        [sys.executable, "-m", "jupiter_bus.cli", "agent", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


CLI_CASES = [
    pytest.param(
        '[providers.transfer]\nallow_roots = "/data"\n',
        (),
        "providers.transfer.allow_roots: expected a list of paths, got a string ('/data')",
        id="allow_roots-string",
    ),
    pytest.param(
        "[providers.transfer]\nconcurrency = 0\n",
        (),
        "providers.transfer.concurrency: expected an integer from 1 to 65535, got 0",
        id="concurrency-0",
    ),
    pytest.param(
        '[providers.resources]\ninterval = "five"\n',
        (),
        "providers.resources.interval: expected a number of seconds > 0, got a string ('five')",
        id="interval-five",
    ),
    pytest.param(
        "ssh_port = 99999\n",
        (),
        "ssh_port: expected an integer from 1 to 65535, got 99999",
        id="ssh_port-toml",
    ),
    pytest.param(
        "",
        ("--ssh-port", "99999"),
        "ssh_port: expected an integer from 1 to 65535, got 99999",
        id="ssh_port-flag",
    ),
    pytest.param(
        "",
        ("--node", "n" * 200),
        "node: expected a node name (letters, digits, '_' and '-'; at most 100 characters), "
        "got a string of 200 characters",
        id="node-200",
    ),
    pytest.param(
        "",
        ("--host", "not a host!!"),
        "host: expected a host name or IP address, got a string ('not a host!!')",
        id="host-flag",
    ),
    pytest.param(
        'hots = "10.0.0.1"\n',
        (),
        "no top-level option 'hots'; known: broker, connect_timeout, grace, host, "
        "link_metrics, metrics_host, metrics_port, node, providers, ssh_port",
        id="unknown-top-level-key",
    ),
    pytest.param(
        "[providers.resources]\nintervall = 5\n",
        (),
        "providers.resources: no option 'intervall'; known: interval",
        id="unknown-provider-option",
    ),
    pytest.param(
        "",
        ("--providers", "resources,gpu"),
        "providers.gpu: no provider named 'gpu'; installed: ",
        id="unknown-provider",
    ),
    pytest.param(
        '[providers.network]\npeers = [{node = "n2", host = "h", user = "u", password = 7}]\n',
        (),
        "providers.network.peers[0].password: expected a string of 1 to 4096 characters, "
        "no NUL, got an integer",
        id="peer-password-type",
    ),
]


@pytest.mark.parametrize(("toml", "args", "expected"), CLI_CASES)
def test_cli_agent_refuses_a_bad_value_in_one_line_with_status_2(
    tmp_path: Path, toml: str, args: tuple[str, ...], expected: str
) -> None:
    result = agent_cli(tmp_path, toml, *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"jupiter-bus: {expected}"), lines[0]
    assert "guest:guest" not in result.stderr
    assert result.stdout == ""


def test_cli_agent_refuses_a_seal_key_it_cannot_read_before_connecting(tmp_path: Path) -> None:
    toml = f'[providers.transfer]\nseal_key_file = "{tmp_path / "missing.key"}"\n'
    result = agent_cli(tmp_path, toml)
    assert result.returncode == 2, result.stderr
    *logged, error = result.stderr.splitlines()
    assert error == (
        f"jupiter-bus: providers.transfer.seal_key_file: cannot use seal key file "
        f"{tmp_path / 'missing.key'}: FileNotFoundError"
    )
    # before it, only the agent's INFO lines (the broker, the config file's mode): no
    # connection was tried
    assert all(" INFO " in line or " WARNING " in line for line in logged), logged
    assert not any("connecting to" in line for line in logged), logged


def test_options_classes_are_frozen_and_slotted() -> None:
    required: dict[type[Options], dict[str, str]] = {
        AgentOptions: {"node": "n1"},
        PeerOptions: {"node": "n2", "host": "h"},
    }
    for cls in OPTIONS_CLASSES:
        assert "__slots__" in vars(cls), cls
        instance = convert(cls, required.get(cls, {}))
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(instance, dataclasses.fields(instance)[0].name, None)
