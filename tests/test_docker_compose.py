"""docker-compose.yml and the Dockerfile, checked structurally (no Docker engine needed): they
must stay in step with config/default.toml, which owns the pool names, port and limits."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobrunner.config.settings import DEFAULT_TOML, Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
REQUIRED = re.compile(r"^\$\{[A-Z_]+:\?[^}]+\}$")  # ${NAME:?message}: no silent empty value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return tomllib.loads(DEFAULT_TOML.read_text())


def services_running(compose: dict[str, Any], *command: str) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("command", [])[: len(command)] == list(command)
    }


def test_one_worker_service_per_configured_pool(compose: dict, config: dict) -> None:
    workers = services_running(compose, "jobrunner", "worker")
    pools = {service["command"][3] for service in workers.values()}
    assert pools == set(config["pools"])  # every pool has a service, and no service is stray
    for name, service in workers.items():
        # Exec form, jobrunner directly: Celery (exec'd by jobrunner) gets SIGTERM itself.
        assert service["command"] == ["jobrunner", "worker", "--pool", name.removeprefix("worker-")]
        assert "entrypoint" not in service


def test_warm_shutdown_has_time_for_the_longest_step(compose: dict, config: dict) -> None:
    for service in services_running(compose, "jobrunner", "worker").values():
        assert service["stop_signal"] == "SIGTERM"
        grace = int(service["stop_grace_period"].removesuffix("s"))
        assert grace > config["limits"]["step_time_limit"]


def test_redis_has_a_password_and_a_ping_healthcheck(compose: dict) -> None:
    redis = compose["services"]["redis"]
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    command = " ".join(redis["command"])
    for option in ("--requirepass", "--appendonly yes", "--maxmemory-policy noeviction"):
        assert option in command
    assert REQUIRED.match(redis["environment"]["REDIS_PASSWORD"])
    assert "ports" not in redis  # reachable from the other services only


def test_services_wait_for_a_healthy_broker(compose: dict) -> None:
    for name, service in compose["services"].items():
        if name != "redis":
            assert service["depends_on"]["redis"]["condition"] == "service_healthy", name


def test_environment_names_real_settings(compose: dict) -> None:
    """Every JOBRUNNER_* variable names a setting (the app refuses unknown ones at start, so a
    typo is caught here, not in a container), and the broker password is required."""
    known = {name.upper() for name in Settings.model_fields}
    for name, service in compose["services"].items():
        for variable in service.get("environment", {}):
            if variable.startswith("JOBRUNNER_"):
                assert variable.removeprefix("JOBRUNNER_").split("__")[0] in known, variable
        if "command" in service and service["command"][0] == "jobrunner":
            url = service["environment"]["JOBRUNNER_BROKER_URL"]
            assert url.startswith("redis://:${REDIS_PASSWORD:?"), name


MONITORS = {"flower": "flower", "metrics": "metrics"}  # command -> its config section
TOKEN_AUTH = {"api": "api"}  # bearer tokens, always (worker/api): no basic auth to check


def test_only_monitoring_is_published_and_only_with_auth(compose: dict) -> None:
    for name, service in compose["services"].items():
        if service.get("ports"):
            command = service["command"][1]
            if command in TOKEN_AUTH:
                continue
            assert command in MONITORS, f"{name} publishes a port and has no authentication"
            section = MONITORS[command].upper()
            assert REQUIRED.match(service["environment"][f"JOBRUNNER_{section}__BASIC_AUTH"])


@pytest.mark.parametrize("command", {**MONITORS, **TOKEN_AUTH})
def test_monitor_runs_once_on_its_configured_port(
    compose: dict, config: dict, command: str
) -> None:
    [(name, service)] = services_running(compose, "jobrunner", command).items()
    section = {**MONITORS, **TOKEN_AUTH}[command]
    env = service["environment"]
    port = int(env.get(f"JOBRUNNER_{section.upper()}__PORT", config[section]["port"]))
    assert port == config[section]["port"], name
    for mapping in service["ports"]:
        assert mapping.split(":")[-1] == str(port)
        assert mapping.startswith("127.0.0.1:")  # the loopback unless an operator opens it


def test_dockerfile_runs_as_a_user_and_installs_the_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\S+", dockerfile, re.MULTILINE)
    assert re.search(r"^RUN pip install \.", dockerfile, re.MULTILINE)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".jobrunner" in ignored


def test_dockerfile_copies_every_folder_the_package_is_built_from() -> None:
    """`pip install .` in the image needs each folder that pyproject's package-dir maps."""
    folders = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
            "package-dir"
        ].values()
    )
    copied = set(re.findall(r"^COPY (\S+) \./\1$", (ROOT / "Dockerfile").read_text(), re.M))
    assert folders <= copied, f"not copied into the image: {sorted(folders - copied)}"
