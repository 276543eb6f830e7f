"""Per-step metrics and anomaly alerts on a real worker, a real exporter and real Redis.

One worker process (concurrency 1) runs the steps, so consecutive runs share a process: that is
what shows each run's peak RSS is its own, not the process's lifetime peak."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from jobrunner.worker.broker.keys import STEP_HISTORIES, STEP_HISTORY
from jobrunner.worker.client import Client
from jobrunner.worker.monitoring import alerts
from jobrunner.worker.monitoring.status import job_status
from tests.conftest import Server, Workers
from tests.support import metric_steps
from tests.support.metrics import scrape, value
from tests.support.polling import eventually
from tests.support.webhook import Webhook

pytestmark = pytest.mark.integration

MB = metric_steps.MB
NODE = "general-stepmetrics@test"
WEBHOOK = Webhook()
ANOMALY_RULE = "anomaly:paced:measured:run_s"
METRICS_ENV = {
    "JOBRUNNER_ALERTS__INTERVAL_S": "0.3",
    "JOBRUNNER_ALERTS__WEBHOOK_URL": WEBHOOK.url,
    # A shared 2-core machine stretches a 100 ms step now and then: only a far-off run counts.
    "JOBRUNNER_ALERTS__ANOMALY__MIN_SPREAD": "1.0",
}
IMPORTS = "tests.support.steps,tests.support.metric_steps"


@pytest.fixture(scope="module", autouse=True)
def webhook() -> Iterator[None]:
    WEBHOOK.start()
    yield
    WEBHOOK.stop()


@pytest.fixture(scope="module")
def worker(workers: Workers, stack_env: dict[str, str]) -> None:
    histories = redis.Redis.from_url(stack_env["JOBRUNNER_BROKER_URL"])
    for series in histories.smembers(STEP_HISTORIES):  # other modules' runs of the same steps
        histories.delete(STEP_HISTORY + series.decode())
    workers.start(
        "general", NODE, JOBRUNNER_IMPORTS=IMPORTS, JOBRUNNER_POOLS__GENERAL__CONCURRENCY="1"
    )


def _run(client: Client, pipeline: str, **payload: Any) -> str:
    job = client.submit(pipeline, payload, tier="high")
    record = job.wait(60)
    assert record is not None and record.finished, record
    return job.id


def test_runs_are_measured_per_step_and_reported_figures_kept(
    metrics_server: Server, client: Client, worker: None
) -> None:
    before = scrape(metrics_server)
    big = _run(client, "measured", allocate_mb=200, write_mb=2, accuracy=0.93)
    after_big = scrape(metrics_server)
    _run(client, "measured")
    _run(client, "measured", fail=True)
    _run(client, "flaky", fail_times=1)
    after = scrape(metrics_server)
    labels = {"pipeline": "measured", "step": "measured"}

    def moved(name: str, since: dict = before, until: dict = after, **extra: str) -> float:
        return value(until, name, **labels, **extra) - value(since, name, **labels, **extra)

    assert moved("jobrunner_step_runs_succeeded_total") == 2
    assert moved("jobrunner_step_runs_failed_total") == 1
    assert moved("jobrunner_step_run_seconds_count") == 3
    assert moved("jobrunner_step_wait_seconds_count") == 3
    flaky = {"pipeline": "flaky", "step": "flaky"}
    assert (
        value(after, "jobrunner_step_runs_retried_total", **flaky)
        - value(before, "jobrunner_step_runs_retried_total", **flaky)
        == 1
    )
    assert moved("jobrunner_step_written_bytes_total", until=after_big) >= 2 * MB
    assert moved("jobrunner_step_read_bytes_total", until=after_big) >= 0
    big_peak = moved("jobrunner_step_peak_rss_bytes_sum", until=after_big)
    assert big_peak >= 200 * MB
    # The next runs in the same process allocated nothing: their peaks are their own.
    assert moved("jobrunner_step_peak_rss_bytes_count", since=after_big) == 2
    small_peaks = moved("jobrunner_step_peak_rss_bytes_sum", since=after_big)
    assert small_peaks / 2 < big_peak - 100 * MB
    reported = tuple(sorted({**labels, "name": "accuracy"}.items()))
    assert after[("jobrunner_step_metric", reported)] == 0.93
    assert job_status(big)["metrics"] == {"measured": {"accuracy": 0.93, "null_rate": 0.01}}


def test_a_run_far_slower_than_its_history_fires_then_the_next_normal_run_resolves(
    metrics_server: Server, client: Client, worker: None
) -> None:
    jobs = [client.submit("paced", {"sleep_ms": 100}, tier="high") for _ in range(30)]
    for job in jobs:
        assert job.wait(120).finished
    _run(client, "paced", sleep_ms=1000)

    def firing() -> bool:
        return (
            value(
                scrape(metrics_server),
                "jobrunner_anomaly_firing",
                pipeline="paced",
                step="measured",
                measure="run_s",
            )
            == 1
        )

    eventually(firing, timeout_s=30)
    fired = [hook for hook in WEBHOOK.received if hook["rule"] == ANOMALY_RULE]
    assert [hook["status"] for hook in fired] == ["firing"]
    low, high = fired[0]["expected"]
    assert fired[0]["value"] >= 1.0 > high > 0.1 > low
    assert "outside its recent range" in fired[0]["message"]
    client_redis = client.store.redis
    assert ANOMALY_RULE in {alert["rule"] for alert in alerts.firing(client_redis)}

    _run(client, "paced", sleep_ms=100)
    eventually(lambda: not firing(), timeout_s=30)
    eventually(
        lambda: (
            [h["status"] for h in WEBHOOK.received if h["rule"] == ANOMALY_RULE]
            == ["firing", "resolved"]
        )
    )
