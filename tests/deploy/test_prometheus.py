"""The files operators drop in (deploy/): the Prometheus rules pass Debian's promtool (syntax and
their unit tests, which catch a changed threshold), mirror the built-in alert thresholds, and
work on a real Prometheus server scraping a real exporter: the metrics arrive and a rule fires.
Every query of the Grafana dashboard parses on that server and names metrics the exporter
serves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from jobrunner.config import get_settings
from jobrunner.config.settings import DEFAULT_TOML
from jobrunner.worker.broker import connection
from jobrunner.worker.broker.keys import STEP_HISTORIES, STEP_HISTORY
from jobrunner.worker.monitoring.metrics import JobrunnerCollector
from jobrunner.worker.store import step_stats
from tests.conftest import ROOT, Server
from tests.fixtures.prometheus import Prometheus, debian_tool
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

RULES_DIR = ROOT / "deploy" / "prometheus"
RULES = RULES_DIR / "jobrunner.rules.yml"
RULE_TESTS = RULES_DIR / "jobrunner.rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "jobrunner.json"
METRICS_ENV = {"JOBRUNNER_ALERTS__INTERVAL_S": "0.3"}
SEEDED = ("promtest", "slow")  # the {pipeline, step} whose history this module writes
METRIC_NAME = re.compile(r"\bjobrunner_[a-z_]+")
SUFFIXES = re.compile(r"_(bucket|sum|count|total)$")


def _promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [debian_tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_rules_pass_promtool_check_and_their_unit_tests() -> None:
    checked = _promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool("test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.mark.parametrize(
    ("shipped", "changed"),
    [("> 0.5", "> 0.6"), ("> 60", "> 90"), ("< 128 * 1024 * 1024", "< 64 * 1024 * 1024")],
)
def test_the_unit_tests_catch_a_changed_threshold(
    tmp_path: Path, shipped: str, changed: str
) -> None:
    text = RULES.read_text()
    assert shipped in text
    (tmp_path / RULES.name).write_text(text.replace(shipped, changed))
    shutil.copy(RULE_TESTS, tmp_path)
    assert _promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path).returncode != 0


def test_alerting_rules_use_the_built_in_thresholds() -> None:
    """The shipped rules mirror config/default.toml's [[alerts.rules]]: same numbers."""
    built_in = {
        rule["name"]: rule for rule in tomllib.loads(DEFAULT_TOML.read_text())["alerts"]["rules"]
    }
    exprs = {
        rule["alert"]: " ".join(rule["expr"].split())
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    failure = built_in["failure_rate"]
    assert f"[{int(failure['window_s'] // 60)}m]" in exprs["JobrunnerFailureRate"]
    assert f"> {failure['threshold']:g}" in exprs["JobrunnerFailureRate"]
    assert f">= {failure['min_jobs']}" in exprs["JobrunnerFailureRate"]
    assert exprs["JobrunnerHighTierWaiting"].endswith(f"> {built_in['high_waiting']['threshold']}")
    assert exprs["JobrunnerLowTierWaiting"].endswith(f"> {built_in['low_waiting']['threshold']}")
    headroom = built_in["memory_headroom"]["threshold"]
    assert exprs["JobrunnerMemoryHeadroomLow"].endswith(f"< {headroom} * 1024 * 1024")


@pytest.fixture(scope="module")
def seeded_anomaly(stack_env: dict[str, str]) -> Iterator[None]:
    """30 ordinary runs of one step and then one ten times slower, written by the store code
    the workers use; removed afterwards so no other module's exporter sees them."""
    client = redis.Redis.from_url(stack_env["JOBRUNNER_BROKER_URL"])
    settings = get_settings()
    series = [f"{SEEDED[0]}|{SEEDED[1]}|{measure}" for measure in ("run_s",)]
    for run_s in [1.0] * 30 + [10.0]:
        step_stats.record(
            client,
            "promtest-job",
            step_stats.StepRun(*SEEDED, outcome="succeeded", run_s=run_s),
            run_bounds=settings.metrics.run_buckets_s,
            wait_bounds=settings.metrics.wait_buckets_s,
            history=settings.alerts.anomaly.history,
        )
    yield
    client.srem(STEP_HISTORIES, *series)
    client.delete(*(STEP_HISTORY + name for name in series))
    client.close()


@pytest.fixture(scope="module")
def server(
    metrics_server: Server,
    seeded_anomaly: None,
    prometheus: Callable[[dict[str, Any], list[Path]], Prometheus],
) -> Prometheus:
    scrape = {
        "job_name": "jobrunner",
        "metrics_path": "/metrics",
        "basic_auth": {"username": metrics_server.user, "password": metrics_server.password},
        "static_configs": [{"targets": [f"127.0.0.1:{metrics_server.port}"]}],
    }
    return prometheus(scrape, [RULES])


def _firing(server: Prometheus) -> list[dict[str, Any]]:
    status, reply = server.request("/api/v1/alerts")
    assert status == 200, reply
    return [a for a in reply["data"]["alerts"] if a["state"] == "firing"]


def test_prometheus_scrapes_the_exporter_and_a_shipped_rule_fires(server: Prometheus) -> None:
    assert server.request("/api/v1/alerts", auth=False)[0] == 401

    def depth_series() -> list[dict[str, Any]]:
        status, reply = server.query("jobrunner_queue_depth")
        assert status == 200, reply
        return reply["data"]["result"]

    eventually(lambda: len(depth_series()) == 3, timeout_s=60, every_s=0.5)
    assert {series["metric"]["tier"] for series in depth_series()} == {"high", "medium", "low"}
    up = server.query('up{job="jobrunner"}')[1]["data"]["result"]
    assert [series["value"][1] for series in up] == ["1"]

    def anomaly_firing() -> list[dict[str, Any]]:
        """The seeded step's anomaly alerts (other modules' step runs may fire their own)."""
        return [
            a
            for a in _firing(server)
            if a["labels"]["alertname"] == "JobrunnerStepAnomaly"
            and (a["labels"].get("pipeline"), a["labels"].get("step")) == SEEDED
        ]

    eventually(lambda: bool(anomaly_firing()), timeout_s=60, every_s=0.5)
    (alert,) = anomaly_firing()
    assert alert["labels"]["measure"] == "run_s"


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    exprs += [var["definition"] for var in dashboard["templating"]["list"] if "definition" in var]
    return exprs


def test_every_dashboard_query_parses_and_names_served_metrics(server: Prometheus) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and len(ids) > 10
    settings = connection.resolve(get_settings())
    results = connection.client(settings.effective_result_url)
    families = JobrunnerCollector(settings, results, results).collect()
    served = {family.name for family in families}  # every family, also those with no sample yet
    rules = RULES.read_text()
    for expr in _dashboard_exprs():
        if expr.startswith("label_values("):  # Grafana's own function: check its metric only
            expr = expr.split("(", 1)[1].split(",", 1)[0]
        query = expr.replace("$__rate_interval", "1m").replace("$pipeline", ".*")
        status, reply = server.query(query)
        assert status == 200, f"{expr}: {reply}"
        for name in METRIC_NAME.findall(expr) + METRIC_NAME.findall(rules):
            assert SUFFIXES.sub("", name) in served, f"{name} is not exported"
