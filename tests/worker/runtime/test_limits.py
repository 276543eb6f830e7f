"""Fleet-wide limits on real Redis and two real workers: with `concurrency = 1` on a resource,
two steps using it never overlap (start/end timestamps) while other steps keep running; and a
crashed worker's slot comes back once its lease lapses."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from itertools import pairwise

import pytest
import redis

from jobrunner.worker.client import Client
from tests.conftest import Workers
from tests.support.steps import SPANS

pytestmark = pytest.mark.integration

CAPPED = {
    "JOBRUNNER_LIMITS__WAREHOUSE__CONCURRENCY": "1",
    "JOBRUNNER_POOLS__GENERAL__CONCURRENCY": "2",
    "JOBRUNNER_RELIABILITY__LEASE_S": "4",
}


@pytest.fixture(scope="module")
def fleet(workers: Workers) -> Iterator[Workers]:
    """Two workers for the module; the crash test, last, kills them."""
    workers.start("general", "general-limits-a@test", **CAPPED)
    workers.start("general", "general-limits-b@test", **CAPPED)
    yield workers
    workers.stop_all()


def _spans(client: redis.Redis) -> list[dict[str, float]]:
    return sorted(
        (json.loads(raw) for raw in client.lrange(SPANS, 0, -1)), key=lambda s: s["start"]
    )


def test_capped_steps_never_overlap_while_others_run(
    fleet: Workers, client: Client, redis_client: redis.Redis
) -> None:
    redis_client.delete(SPANS)
    capped = [
        client.submit("warehouse", {"sleep_ms": 600, "tag": f"w{i}"}, tier="medium")
        for i in range(4)
    ]
    others = [
        client.submit("sleepy", {"sleep_ms": 200, "tag": f"o{i}"}, tier="medium") for i in range(6)
    ]
    assert [job.wait(60).state for job in capped + others] == ["SUCCESS"] * 10
    spans = _spans(redis_client)
    assert len(spans) == 4
    for before, after in pairwise(spans):
        assert after["start"] >= before["end"], f"{before} overlaps {after}"
    # The other steps were not stuck behind the capped ones: all ended before the last one did.
    last_other = max(job.record().finished_at or 0 for job in others)
    assert last_other < spans[-1]["end"]


def test_a_crashed_workers_slot_comes_back(
    fleet: Workers, client: Client, redis_client: redis.Redis
) -> None:
    stuck = client.submit("warehouse", {"sleep_ms": 60_000, "tag": "stuck"}, tier="medium")
    deadline = time.monotonic() + 30
    while stuck.state != "STARTED":
        assert time.monotonic() < deadline, "the capped step never started"
        time.sleep(0.05)
    # Whichever worker runs it, both die with the slot leased. The fresh worker drops the
    # returning message as poison (max_deliveries = 1) without touching the slot, so only the
    # lapsing lease can give the slot back to the next step.
    for process in fleet.processes:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    fleet.processes.clear()
    fleet.start(
        "general", "general-limits-c@test", **CAPPED, JOBRUNNER_RELIABILITY__MAX_DELIVERIES="1"
    )
    after = client.submit("warehouse", {"sleep_ms": 10, "tag": "after"}, tier="medium")
    assert after.wait(40).state == "SUCCESS"
    # The stuck step comes back once its own lease lapses and is dropped, not run: else it would
    # outlive this module and sleep its minute in a later module's worker.
    dropped = stuck.wait(60)
    assert (dropped.state, dropped.error) == (
        "FAILURE",
        "step load_warehouse was delivered 2 times without finishing (its process died each time)",
    )
