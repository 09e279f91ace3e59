"""Make sure the services the tests need are here: RabbitMQ answering, OpenSSH installed.

Run by scripts/test.sh. It uses ``JUPITER_BUS_AMQP_URL`` when set; otherwise it
expects RabbitMQ on 127.0.0.1:5672 and starts it (installing it first when absent and
running as root). It stops with a message saying exactly what to do when it cannot.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

_apt_updated = False


def say(message: str) -> None:
    print(f"== {message}", flush=True)


def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(b"AMQP\x00\x00\x09\x01")
            conn.settimeout(timeout)
            return conn.recv(8) != b""
    except OSError:
        return False


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def apt_install(packages: list[str]) -> None:
    global _apt_updated
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        _apt_updated = True
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def stop(message: str) -> None:
    print(f"\nERROR: {message}\n", file=sys.stderr, flush=True)
    sys.exit(2)


def ensure_rabbitmq() -> None:
    url = os.environ.get("JUPITER_BUS_AMQP_URL")
    parts = urlsplit(url or "amqp://127.0.0.1:5672/")
    host, port = (
        parts.hostname or "127.0.0.1",
        parts.port or (5671 if parts.scheme == "amqps" else 5672),
    )
    if answers(host, port):
        say(f"RabbitMQ answers on {host}:{port}")
        return
    if url:
        stop(
            f"JUPITER_BUS_AMQP_URL points at {host}:{port}, where no broker answers. "
            "Start that broker, or unset the variable to use a local RabbitMQ."
        )
    if shutil.which("rabbitmq-server") is None:
        if not is_root():
            stop(
                "RabbitMQ is not installed. Install it (Debian/Ubuntu: "
                "`sudo apt-get install -y rabbitmq-server`), start it with "
                "`sudo rabbitmq-server -detached`, or set JUPITER_BUS_AMQP_URL to a broker."
            )
        say("installing rabbitmq-server")
        apt_install(["rabbitmq-server"])
    say("starting RabbitMQ")
    subprocess.run(["rabbitmq-server", "-detached"], check=False)
    if shutil.which("rabbitmqctl"):
        subprocess.run(["rabbitmqctl", "await_startup", "--timeout", "120"], check=False)
    deadline = time.monotonic() + 120
    while not answers(host, port):
        if time.monotonic() > deadline:
            stop(
                "RabbitMQ was started but does not answer on 127.0.0.1:5672 after 120 s. "
                "Look at /var/log/rabbitmq/ and run `rabbitmqctl status`."
            )
        time.sleep(1)
    say("RabbitMQ answers on 127.0.0.1:5672")


TOOLS_FROM_APT = {
    "/usr/sbin/sshd": "openssh-server",
    "scp": "openssh-client",
    "sshpass": "sshpass",
    "ip": "iproute2",
    "tmux": "tmux",  # the demo's live view is checked in a real pseudo-terminal
    "docker-compose": "docker-compose",  # docker-compose.yml is validated, not run
}


def ensure_tools() -> None:
    """Install the Debian packages of the tools the tests drive, when missing."""
    missing = [tool for tool in TOOLS_FROM_APT if shutil.which(tool) is None]
    if not missing:
        return
    packages = sorted({TOOLS_FROM_APT[tool] for tool in missing})
    if is_root() and shutil.which("apt-get"):
        say(f"installing {', '.join(packages)} (missing: {', '.join(missing)})")
        apt_install(packages)
    else:
        say(
            f"missing {', '.join(missing)}: tests that need them are skipped. Install "
            f"`{' '.join(packages)}` to run them."
        )


if __name__ == "__main__":
    ensure_rabbitmq()
    ensure_tools()
