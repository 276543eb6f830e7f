"""The headroom autoscaler on a real worker: it grows under backlog only as far as free memory
budgets new processes (Celery's own would grow to the maximum), and sheds processes when the
host is under memory pressure."""

from __future__ import annotations

import time

import pytest
import redis

from jobrunner.worker.client import Client
from jobrunner.worker.runtime.headroom import measure
from jobrunner.worker.store import heartbeat
from tests.conftest import Workers
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

NODE = "general-autoscale@test"


def _state(client: redis.Redis) -> dict[str, str]:
    states = [w for w in heartbeat.read_all(client) if w["node"] == NODE]
    return states[0] if states else {}


def _processes(client: redis.Redis) -> int:
    return int(_state(client).get("processes", 0))


def test_grows_under_backlog_and_shrinks_under_pressure(
    workers: Workers, client: Client, redis_client: redis.Redis
) -> None:
    workers.start(
        "general",
        NODE,
        JOBRUNNER_POOLS__GENERAL__CONCURRENCY="3",
        JOBRUNNER_POOLS__GENERAL__MIN_CONCURRENCY="1",
        JOBRUNNER_AUTOSCALE__KEEPALIVE_S="0.5",
        JOBRUNNER_ADMISSION__CHECK_INTERVAL_S="0.2",
        JOBRUNNER_ADMISSION__PROCESS_MEMORY_MB="2000",
    )
    eventually(lambda: _processes(redis_client) == 1)
    try:
        # ~4500 MB above the reserve (plus the pool's own few MB) budgets two 2000 MB processes.
        reserve = measure().memory_available_mb - 4500
        heartbeat.set_reserve_override(redis_client, reserve)
        eventually(lambda: _state(redis_client)["memory_reserve_mb"] == str(reserve))
        jobs = [client.submit("sleepy", {"sleep_ms": 1000}, tier="low") for _ in range(12)]
        eventually(lambda: _processes(redis_client) == 2)
        time.sleep(1.5)  # several scaling periods with backlog left
        assert _processes(redis_client) == 2
    finally:
        heartbeat.set_reserve_override(redis_client, None)
    eventually(lambda: _processes(redis_client) == 3)  # the memory is back: up to the max

    try:  # memory pressure: the whole host is below the reserve
        heartbeat.set_reserve_override(redis_client, measure().memory_total_mb)
        eventually(lambda: _processes(redis_client) == 1)
        assert any(job.state == "PENDING" for job in jobs)  # paused: work is left waiting
    finally:
        heartbeat.set_reserve_override(redis_client, None)
    for job in jobs:
        assert job.wait(60).state == "SUCCESS"
