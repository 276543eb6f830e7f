"""A step held for headroom is not lost when its worker stops: the warm shutdown returns the
unacknowledged message to its queue, and the next worker runs it."""

from __future__ import annotations

import time

import pytest
import redis

from jobrunner.config import get_settings
from jobrunner.worker.client import Client
from jobrunner.worker.runtime.headroom import measure
from jobrunner.worker.store import heartbeat
from tests.conftest import Workers

pytestmark = pytest.mark.integration


def test_held_step_returns_to_its_queue_on_warm_shutdown(
    workers: Workers, client: Client, redis_client: redis.Redis
) -> None:
    queue = get_settings().queue("high")
    heartbeat.set_reserve_override(redis_client, measure().memory_available_mb - 300)
    try:
        first = workers.start(
            "general", "general-held@test", JOBRUNNER_POOLS__GENERAL__CONCURRENCY="1"
        )
        job = client.submit("hungry", tier="high")
        deadline = time.monotonic() + 15
        while not any(w.get("held") == "1" for w in heartbeat.read_all(redis_client)):
            assert time.monotonic() < deadline, "the step was never held"
            time.sleep(0.05)
        assert redis_client.llen(queue) == 0  # the worker holds it, unacknowledged

        first.terminate()  # SIGTERM: Celery's warm shutdown
        first.wait(timeout=30)
        assert redis_client.llen(queue) == 1 and job.state == "PENDING"
    finally:
        heartbeat.set_reserve_override(redis_client, None)
    workers.start("general", "general-after@test", JOBRUNNER_POOLS__GENERAL__CONCURRENCY="1")
    assert job.result(timeout=30) == "fed"
