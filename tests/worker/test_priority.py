"""Tiers hold on Redis: with every worker process busy and a low backlog queued, a high job
submitted last starts before any further low job, and medium jobs start before low ones."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from jobrunner.worker.client import Client
from tests.conftest import Workers
from tests.support.steps import STARTS

pytestmark = pytest.mark.integration

CONCURRENCY = 2
# The first busy step ends long before the other, so one process alone drains the backlog and the
# order in which steps start is exactly the order in which the worker took them.
BUSY_MS = (1000, 5000)


@pytest.fixture(scope="module", autouse=True)
def general(workers: Workers) -> Iterator[None]:
    workers.start(
        "general", "general-priority@test", JOBRUNNER_POOLS__GENERAL__CONCURRENCY=str(CONCURRENCY)
    )
    yield


def _started(client: redis.Redis) -> list[str]:
    return [tag.decode() for tag in client.lrange(STARTS, 0, -1)]


def _wait_for_starts(client: redis.Redis, count: int, timeout_s: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        started = _started(client)
        if len(started) >= count:
            return started
        time.sleep(0.02)
    raise AssertionError(f"only {_started(client)} started within {timeout_s} s")


def test_high_job_starts_before_queued_low_backlog(
    client: Client, redis_client: redis.Redis
) -> None:
    busy = [
        client.submit("sleepy", {"sleep_ms": ms, "tag": f"busy-{i}"}, tier="low")
        for i, ms in enumerate(BUSY_MS)
    ]
    _wait_for_starts(redis_client, CONCURRENCY)  # every worker process is now busy
    lows = [client.submit("sleepy", {"tag": f"low-{i}"}, tier="low") for i in range(6)]
    mediums = [client.submit("sleepy", {"tag": f"medium-{i}"}, tier="medium") for i in range(3)]
    high = client.submit("sleepy", {"tag": "high"}, tier="high")
    for job in [*busy, *lows, *mediums, high]:
        assert job.wait(60).state == "SUCCESS"

    order = _started(redis_client)
    assert sorted(order[:CONCURRENCY]) == ["busy-0", "busy-1"]
    after_busy = order[CONCURRENCY:]
    # The high job, queued last, is the next to start; then every medium; then the lows in order.
    expected = ["high", *(f"medium-{i}" for i in range(3)), *(f"low-{i}" for i in range(6))]
    assert after_busy == expected
    assert high.record().wait_s is not None
