"""deploy/docker-compose.observability.yml, checked without a Docker engine: the rules and the
dashboard are mounted where the configs it provisions look for them, Prometheus' configs pass
promtool, and the only published port (Grafana's) is on the loopback behind a password."""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from jobrunner.config import get_settings
from tests.conftest import ROOT
from tests.fixtures.prometheus import debian_tool

COMPOSE = ROOT / "deploy" / "docker-compose.observability.yml"
VARIABLE = re.compile(r"\$\{([A-Z_]+)(:\?[^}]+)?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _config(compose: dict[str, Any], name: str, **values: str) -> dict[str, Any]:
    """An inline config with its ${VARIABLES} filled in as compose would."""
    text = VARIABLE.sub(lambda m: values.get(m.group(1), "x"), compose["configs"][name]["content"])
    return yaml.safe_load(text)


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> the repository file mounted there (named volumes left out)."""
    found = {}
    for volume in service["volumes"]:
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            found[target] = ROOT / source
    return found


def test_every_variable_is_required_never_silently_empty() -> None:
    for match in VARIABLE.finditer(COMPOSE.read_text()):
        assert match.group(2), f"${{{match.group(1)}}} has no :? message"


def test_rules_are_mounted_where_the_prometheus_config_reads_them(
    compose: dict, tmp_path: Path
) -> None:
    mounts = _mounts(compose["services"]["prometheus"])
    config = _config(compose, "prometheus-config")
    (rule_glob,) = config["rule_files"]
    (target,) = [t for t in mounts if fnmatch.fnmatch(t, rule_glob)]
    assert mounts[target] == ROOT / "deploy" / "prometheus" / "jobrunner.rules.yml"
    (scrape,) = config["scrape_configs"]
    assert scrape["job_name"] == "jobrunner"  # the job the rules' ExporterDown alert names
    assert scrape["static_configs"][0]["targets"] == [f"metrics:{get_settings().metrics.port}"]
    # promtool checks the config with its rule files (here: the shipped one) and the web config.
    config["rule_files"] = [str(mounts[target])]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    checked = subprocess.run(
        [debian_tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()
    web = _config(compose, "prometheus-web", PROMETHEUS_PASSWORD_BCRYPT=hashed)
    (tmp_path / "web.yml").write_text(yaml.safe_dump(web))
    checked = subprocess.run(
        [debian_tool("promtool"), "check", "web-config", str(tmp_path / "web.yml")],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_is_mounted_where_the_provisioned_provider_reads(compose: dict) -> None:
    grafana = compose["services"]["grafana"]
    mounts = _mounts(grafana)
    (provider,) = _config(compose, "grafana-dashboards")["providers"]
    (target,) = [t for t in mounts if Path(t).parent == Path(provider["options"]["path"])]
    assert mounts[target] == ROOT / "deploy" / "grafana" / "jobrunner.json"
    (source,) = _config(compose, "grafana-datasource")["datasources"]
    assert source["type"] == "prometheus" and source["basicAuth"] is True
    assert [p.split(":")[0] for p in grafana["ports"]] == ["127.0.0.1"]
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "ports" not in compose["services"]["prometheus"]
