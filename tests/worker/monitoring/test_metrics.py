"""The Prometheus exporter (`jobrunner metrics`) on real Redis and a real worker: it refuses
scrapes without credentials, reports each tier's backlog exactly while nothing consumes it, and
its job counters, histograms and worker gauges move once jobs run."""

from __future__ import annotations

import time

import pytest
import redis

from jobrunner.config import TIERS, get_settings
from jobrunner.worker.broker.keys import wake_key
from jobrunner.worker.client import Client
from jobrunner.worker.monitoring.metrics import counter_families
from tests.conftest import Server, Workers
from tests.support.metrics import scrape, value

pytestmark = pytest.mark.integration

BACKLOG = {"high": 2, "medium": 3, "low": 4}
NODE = "general-metrics@test"


def test_refuses_without_or_with_wrong_credentials(metrics_server: Server) -> None:
    assert metrics_server.get("/metrics", auth=False).status == 401
    wrong = Server.__new__(Server)
    wrong.url, wrong.user, wrong.password = metrics_server.url, "tester", "not-the-password"
    assert wrong.get("/metrics").status == 401
    assert metrics_server.get("/metrics").status == 200


def test_depth_and_oldest_age_per_tier_for_a_known_backlog(
    metrics_server: Server, client: Client, redis_client: redis.Redis
) -> None:
    """No worker runs yet in this module, so the submitted jobs stay queued."""
    for tier, count in BACKLOG.items():
        for _ in range(count):
            client.submit("sleepy", {"tag": tier}, tier=tier)
    time.sleep(1.1)
    samples = scrape(metrics_server)
    settings = get_settings()
    for tier in TIERS:
        labels = {"tier": tier, "queue": settings.queue(tier)}
        assert value(samples, "jobrunner_queue_depth", **labels) == BACKLOG[tier]
        assert 1.0 <= value(samples, "jobrunner_queue_oldest_age_seconds", **labels) < 60
    queues = [settings.queue(tier) for tier in TIERS]
    redis_client.delete(*queues, *map(wake_key, queues))  # nobody runs the backlog
    samples = scrape(metrics_server)
    assert value(samples, "jobrunner_queue_depth", tier="low", queue=settings.queue("low")) == 0


def test_counters_histograms_and_workers_move_after_jobs_run(
    metrics_server: Server, client: Client, redis_client: redis.Redis, workers: Workers
) -> None:
    before = scrape(metrics_server)
    workers.start("general", NODE, JOBRUNNER_POOLS__GENERAL__CONCURRENCY="2")
    ok = [client.submit("chain3", {"start": 1}, tier="high") for _ in range(3)]
    bad = client.submit("fails", tier="low")
    for job in [*ok, bad]:
        job.wait(60)
    after = scrape(metrics_server)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("jobrunner_jobs_submitted_total", pipeline="chain3", tier="high") == 3
    assert moved("jobrunner_jobs_succeeded_total", pipeline="chain3", tier="high") == 3
    assert moved("jobrunner_jobs_failed_total", pipeline="fails", tier="low") == 1
    assert moved("jobrunner_job_wait_seconds_count", tier="high") == 3
    assert moved("jobrunner_job_run_seconds_count", tier="high") == 3
    assert moved("jobrunner_job_run_seconds_bucket", tier="high", le="+Inf") == 3
    assert moved("jobrunner_job_run_seconds_sum", tier="high") > 0
    assert moved("jobrunner_dead_letters") >= 1

    worker = {"node": NODE, "pool": "general"}
    assert value(after, "jobrunner_worker_processes", **worker) == 2
    assert value(after, "jobrunner_worker_admitting", **worker) == 1
    assert value(after, "jobrunner_worker_memory_available_bytes", **worker) > 0
    assert value(after, "jobrunner_worker_cpus", **worker) >= 1
    assert (
        "jobrunner_worker_memory_headroom_bytes",
        tuple(sorted(worker.items())),
    ) in after


def test_counters_read_the_metrics_hash_fields() -> None:
    """`<head>|<label>|<label>` fields become samples of the head's family; others are skipped."""
    fields = {"rows_in|features|ingest": 1600, "rows_out|features|ingest": 1520, "rows_in|x": 1}
    names = {f"rows_{k}": (f"jobrunner_step_rows_{k}", k) for k in ("in", "out", "quarantined")}
    families = {f.name: f for f in counter_families(fields, names, ["pipeline", "step"])}
    assert [(s.labels, s.value) for s in families["jobrunner_step_rows_in"].samples] == [
        ({"pipeline": "features", "step": "ingest"}, 1600)
    ]
    assert [s.value for s in families["jobrunner_step_rows_out"].samples] == [1520]
    assert families["jobrunner_step_rows_quarantined"].samples == []
