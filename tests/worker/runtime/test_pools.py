"""Pools: the worker command each pool gets, and the express pool keeping high jobs off the
busy general pool."""

from __future__ import annotations

import time

import pytest
import redis

from jobrunner.config import Settings
from jobrunner.worker.client import Client
from jobrunner.worker.runtime.headroom import auto_concurrency
from jobrunner.worker.runtime.pools import worker_argv
from tests.conftest import Workers
from tests.support.steps import STARTS


@pytest.mark.parametrize(
    ("cpus", "memory_mb", "expected"),
    [(2, 24_000, 2), (16, 4_096, 14), (8, 600, 1), (1, 64_000, 1)],
)
def test_auto_concurrency_follows_cpus_and_memory(cpus: int, memory_mb: int, expected: int) -> None:
    assert auto_concurrency(cpus, memory_mb, reserve_mb=512, process_mb=256) == expected


def test_worker_argv_for_an_autoscaled_resource_pool() -> None:
    settings = Settings(
        pools={
            "general": {"tiers": ["high", "medium", "low"]},
            "heavy_medium": {"tiers": ["medium"], "resources": ["heavy"]},
            "big": {
                "tiers": ["high", "low"],
                "concurrency": 4,
                "min_concurrency": 1,
                "max_memory_per_child_mb": 300,
                "resources": ["heavy"],
            },
        }
    )
    argv = worker_argv(settings, "big")
    # Per tier, highest first: the resource queue (only such pools run it), then the plain one.
    queues = "jobrunner.high.heavy,jobrunner.high,jobrunner.low.heavy,jobrunner.low"
    assert f"--queues={queues}" in argv
    assert "--autoscale=4,1" in argv and not any(a.startswith("--concurrency") for a in argv)
    assert "--max-memory-per-child=307200" in argv  # KiB
    assert "--jobrunner-pool=big" in argv and "--hostname=big@%h" in argv
    plain = worker_argv(settings, "general")
    assert "--queues=jobrunner.high,jobrunner.medium,jobrunner.low" in plain
    assert not any(a.startswith(("--autoscale", "--max-memory")) for a in plain)


@pytest.mark.integration
def test_express_pool_runs_high_job_while_general_is_saturated(
    workers: Workers, client: Client, redis_client: redis.Redis
) -> None:
    workers.start("express", "express-pools@test")
    workers.start("general", "general-pools@test", JOBRUNNER_POOLS__GENERAL__CONCURRENCY="2")
    busy = [
        client.submit("sleepy", {"sleep_ms": 3000, "tag": f"busy-{i}"}, tier="low")
        for i in range(2)
    ]
    deadline = time.monotonic() + 30
    while redis_client.llen(STARTS) < 2:  # both general processes are now busy
        assert time.monotonic() < deadline
        time.sleep(0.02)
    backlog = [client.submit("sleepy", {"tag": f"low-{i}"}, tier="low") for i in range(4)]
    high = client.submit("sleepy", {"tag": "high"}, tier="high")

    done = high.wait(30)
    assert done.state == "SUCCESS"
    assert all(job.state != "SUCCESS" for job in busy)  # no low job had to finish first
    assert done.wait_s is not None and done.wait_s < 2.0
    for job in [*busy, *backlog]:
        assert job.wait(60).state == "SUCCESS"
