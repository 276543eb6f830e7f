"""Admission control on a real worker: a step whose declared memory does not fit the live headroom
is held (and the worker takes nothing else) until headroom returns; a step that can never fit
goes to the dead-letter store; the worker publishes its state throughout."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis

from jobrunner.worker.client import Client
from jobrunner.worker.runtime.headroom import measure
from jobrunner.worker.store import heartbeat
from jobrunner.worker.store.dead_letters import DeadLetterStore
from tests.conftest import Workers
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

NODE = "general-admission@test"


@pytest.fixture(scope="module", autouse=True)
def general(workers: Workers) -> Iterator[None]:
    workers.start(
        "general",
        NODE,
        JOBRUNNER_POOLS__GENERAL__CONCURRENCY="2",
        JOBRUNNER_ADMISSION__CHECK_INTERVAL_S="0.2",
    )
    yield


@pytest.fixture
def reserve(redis_client: redis.Redis) -> Iterator[Callable[[int | None], None]]:
    """Set the fleet's live memory reserve (MB); cleared after the test."""
    yield lambda mb: heartbeat.set_reserve_override(redis_client, mb)
    heartbeat.set_reserve_override(redis_client, None)


def _worker_state(client: redis.Redis) -> dict[str, str]:
    return next(w for w in heartbeat.read_all(client) if w["node"] == NODE)


def test_heavy_step_waits_for_headroom_then_runs(
    client: Client, redis_client: redis.Redis, reserve: Callable[[int | None], None]
) -> None:
    # Leave ~300 MB free above the reserve: less than the 4000 MB `hog` declares.
    reserve(measure().memory_available_mb - 300)
    eventually(lambda: _worker_state(redis_client)["memory_reserve_mb"] != "512")
    hungry = client.submit("hungry", tier="high")
    eventually(lambda: _worker_state(redis_client)["held"] == "1")
    state = _worker_state(redis_client)
    assert state["state"].startswith("paused: memory: needs 4000 MB")
    small = client.submit("chain3", {"start": 1}, tier="high")  # the worker takes nothing new
    time.sleep(1.0)
    assert hungry.state == "PENDING" and small.state == "PENDING"

    reserve(None)  # headroom returns: the configured 512 MB reserve
    assert hungry.result(timeout=30) == "fed"
    assert small.result(timeout=30) == 3
    eventually(lambda: _worker_state(redis_client)["state"] == "admitting")


def test_step_that_never_fits_is_dead_lettered(client: Client, redis_client: redis.Redis) -> None:
    job = client.submit("too_big", tier="low")
    record = job.wait(30)
    assert record.state == "FAILURE"
    assert record.error is not None
    assert record.error.startswith("step mammoth rejected: needs 1000000000 MB of memory")
    letter = DeadLetterStore(redis_client).get(job.id)
    assert letter is not None
    assert (letter["step"], letter["error_type"], letter["pipeline"]) == (
        "mammoth",
        "DoesNotFit",
        "too_big",
    )
    assert "this host has" in letter["error"]
    # The worker goes on serving.
    assert client.submit("chain3", {"start": 5}).result(timeout=30) == 7


def test_heartbeat_reports_headroom(redis_client: redis.Redis) -> None:
    state = _worker_state(redis_client)
    assert state["pool"] == "general"
    assert state["processes"] == "2"
    assert int(state["memory_total_mb"]) >= int(state["memory_available_mb"]) > 0
    assert int(state["cpus"]) >= 1
