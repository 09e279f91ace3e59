"""``jupiter-bus setup`` on a virtual host of its own: ``jupiter.dead`` made a quorum
queue, kept on a second run, never replaced while it holds letters."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from jupiter_bus.cli.console import EXIT_FAILED
from jupiter_bus.topology import DEAD_QUEUE, EVENTS_EXCHANGE
from jupiter_bus.transport import Envelope, connect

from .conftest import AMQP_URL

pytestmark = pytest.mark.amqp


def ctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


@pytest.fixture
def vhost(unique: str) -> Iterator[str]:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed: no virtual host of its own")
    name = f"jb-setup-{unique}"
    ctl("add_vhost", name)
    ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield name
    ctl("delete_vhost", name)


def url_of(vhost: str) -> str:
    return urlunsplit(urlsplit(AMQP_URL)._replace(path="/" + vhost))


def setup(vhost: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jupiter_bus", "setup", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "JUPITER_BUS_URL": url_of(vhost)},
    )


def dead_queue_type(vhost: str) -> str:
    listing = ctl("list_queues", "-p", vhost, "name", "type", "-q", "--no-table-headers")
    types = dict(line.split("\t")[:2] for line in listing.splitlines() if "\t" in line)
    return types[DEAD_QUEUE]


async def test_setup_makes_the_dead_letter_queue_quorum_and_keeps_its_letters(
    vhost: str,
) -> None:
    first = setup(vhost)
    assert first.returncode == 0, first.stderr
    assert "as a quorum queue" in first.stdout
    assert dead_queue_type(vhost) == "quorum"
    again = setup(vhost)
    assert again.returncode == 0, again.stderr
    assert ": kept as a quorum queue" in again.stdout

    bus = await connect(url_of(vhost))  # a client keeps it as it is, and letters reach it
    try:
        await bus.dead_letter(Envelope(b"{}", EVENTS_EXCHANGE, "resource.n1"), "refused")
        assert (await bus.queue_stats(DEAD_QUEUE)).messages == 1
        refused = setup(vhost, "--dead-letters", "classic")
        assert refused.returncode == EXIT_FAILED
        assert "is not replaced by a classic one" in refused.stderr
        assert dead_queue_type(vhost) == "quorum"
        assert (await bus.queue_stats(DEAD_QUEUE)).messages == 1  # nothing lost
    finally:
        await bus.close()


async def test_a_classic_dead_letter_queue_is_replaced_only_when_empty(vhost: str) -> None:
    bus = await connect(url_of(vhost))  # the first client: a classic jupiter.dead
    try:
        assert dead_queue_type(vhost) == "classic"
        await bus.dead_letter(Envelope(b"{}", EVENTS_EXCHANGE, "resource.n1"), "refused")
        refused = setup(vhost)
        assert refused.returncode == EXIT_FAILED
        assert "holds 1 dead letters" in refused.stderr
        assert dead_queue_type(vhost) == "classic"
        assert (await bus.queue_stats(DEAD_QUEUE)).messages == 1  # nothing lost
        ctl("purge_queue", "-p", vhost, DEAD_QUEUE)
        replaced = setup(vhost)
        assert replaced.returncode == 0, replaced.stderr
        assert ": replaced as a quorum queue" in replaced.stdout
        assert dead_queue_type(vhost) == "quorum"
        # the client already connected sends its letters to the new queue
        await bus.dead_letter(Envelope(b"{}", EVENTS_EXCHANGE, "resource.n1"), "refused")
        assert (await bus.queue_stats(DEAD_QUEUE)).messages == 1
    finally:
        await bus.close()
