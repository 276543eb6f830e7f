"""Alerts, evaluated by a real exporter process against real Redis and a real worker: a burst of
failing jobs fires the failure-rate rule (logged, exported, in `status`, POSTed to the webhook)
and it clears once the window holds no failures."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from jobrunner.config.settings import AnomalySettings
from jobrunner.worker.client import Client
from jobrunner.worker.monitoring.alerts import anomalies, expected_range
from tests.conftest import Server, Workers
from tests.support.cli import run
from tests.support.metrics import scrape, value
from tests.support.webhook import Webhook

pytestmark = pytest.mark.integration

WINDOW_S = 10  # long enough that `status` (a fresh CLI process) still sees it on a loaded host
WEBHOOK = Webhook()
METRICS_ENV = {
    "JOBRUNNER_ALERTS__INTERVAL_S": "0.3",
    "JOBRUNNER_ALERTS__ANOMALY__ENABLED": "false",  # other modules' step runs must not fire here
    "JOBRUNNER_ALERTS__WEBHOOK_URL": WEBHOOK.url,
    "JOBRUNNER_ALERTS__RULES": json.dumps(
        [
            {
                "name": "burst",
                "kind": "failure_rate",
                "threshold": 0.5,
                "window_s": WINDOW_S,
                "min_jobs": 3,
                "pipeline": "fails",
            }
        ]
    ),
}


@pytest.fixture(scope="module", autouse=True)
def webhook() -> Iterator[None]:
    WEBHOOK.start()
    yield
    WEBHOOK.stop()


def _wait_for(check: Any, what: str, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} not seen within {timeout_s} s")


def _firing(server: Server) -> float:
    return value(scrape(server), "jobrunner_alert_firing", rule="burst")


def test_failure_burst_fires_then_clears(
    metrics_server: Server, workers: Workers, client: Client
) -> None:
    workers.start("general", "general-alerts@test", JOBRUNNER_POOLS__GENERAL__CONCURRENCY="2")
    assert _firing(metrics_server) == 0
    for job in [client.submit("fails", tier="high") for _ in range(4)]:
        assert job.wait(60).state == "FAILURE"

    _wait_for(lambda: _firing(metrics_server) == 1, "the alert firing")
    overview = json.loads(run("status", "--json").stdout)
    (alert,) = [a for a in overview["alerts"] if a["rule"] == "burst"]
    assert alert["value"] == 1.0 and f"failed in the last {WINDOW_S} s" in alert["message"]
    assert "burst" in run("status").stdout
    hooks = WEBHOOK.received
    fired = _wait_for(lambda: [r for r in hooks if r["status"] == "firing"], "the webhook")
    assert fired[0]["rule"] == "burst"

    _wait_for(lambda: _firing(metrics_server) == 0, "the alert clearing", timeout_s=WINDOW_S + 20)
    assert not [a for a in json.loads(run("status", "--json").stdout)["alerts"]]
    _wait_for(lambda: [r for r in hooks if r["status"] == "resolved"], "the resolved webhook")
    assert "alert burst firing" in metrics_server.log.read_text()


ANOMALY = AnomalySettings(enabled=True, history=30, min_runs=10, tolerance=3.0, min_spread=0.25)


def test_expected_range_is_median_plus_minus_scaled_mads_with_a_floor() -> None:
    """Pure arithmetic of the anomaly rule (the end-to-end case is in test_step_metrics.py)."""
    spread_out = [10.0, 12, 8, 11, 9, 10, 13, 7, 10, 10]  # median 10, MAD 1
    low, high = expected_range(spread_out, ANOMALY)
    assert (low, high) == pytest.approx((10 - 3 * 2.5, 10 + 3 * 2.5))  # floor 0.25 x 10 wins
    wide = [10.0, 20, 0, 30, 10, 10, 40, 10, 5, 15]  # median 10, MAD 5
    assert expected_range(wide, ANOMALY) == pytest.approx(
        (10 - 3 * 1.4826 * 5, 10 + 3 * 1.4826 * 5)
    )
    assert expected_range(spread_out[:9], ANOMALY) is None  # fewer than min_runs


def test_only_a_latest_run_outside_the_range_of_the_runs_before_it_is_an_anomaly() -> None:
    normal = [1.0] * 30
    series = {
        ("p", "slow", "run_s"): [10.0, *normal],
        ("p", "fine", "run_s"): [1.1, *normal],
        ("p", "after", "run_s"): [1.0, 10.0, *normal],  # the odd run is history now
        ("p", "young", "run_s"): [10.0, 1.0, 1.0],
        ("p", "empty", "rows_out"): [0.0, *[1000.0] * 30],  # a drop counts too
    }
    found = anomalies(series, ANOMALY)
    assert sorted(found) == ["anomaly:p:empty:rows_out", "anomaly:p:slow:run_s"]
    labels, value, (low, high) = found["anomaly:p:slow:run_s"]
    assert labels == {"pipeline": "p", "step": "slow", "measure": "run_s"}
    assert value == 10.0 and low < 1.0 < high < 10.0
