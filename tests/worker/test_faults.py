"""Fault injection on real Redis and real worker processes: whole workers SIGKILLed mid-run, the
broker restarted under load, a poison step that kills its process, chord members failing, and a
pickle injected into a queue. Run alone with `pytest -m faults`.

Workers here use a 4 s lease, so a crashed worker's steps come back in seconds."""

from __future__ import annotations

import base64
import json
import os
import pickle
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from jobrunner.config import get_settings
from jobrunner.worker.broker.embedded import EmbeddedRedis
from jobrunner.worker.broker.keys import wake_key
from jobrunner.worker.client import Client, Job
from jobrunner.worker.store import heartbeat
from jobrunner.worker.store.dead_letters import DeadLetterStore
from jobrunner.worker.store.jobs import JobRecord
from tests.conftest import Workers
from tests.support.steps import ATTEMPTS

pytestmark = [pytest.mark.integration, pytest.mark.faults]

FAST_RECOVERY = {
    "JOBRUNNER_RELIABILITY__LEASE_S": "4",
    "JOBRUNNER_RELIABILITY__MAX_DELIVERIES": "3",
    "JOBRUNNER_RELIABILITY__REAPER_INTERVAL_S": "1",
    "JOBRUNNER_POOLS__GENERAL__CONCURRENCY": "2",
}
# A guard, not an expectation: a job a fault did lose would fail at its deadline, into the
# dead-letter store, and the assertions below name it instead of hanging.
DEADLINE_S = 60


def _all_succeeded(jobs: list[Job]) -> list[JobRecord]:
    records = [job.wait(DEADLINE_S + 20) for job in jobs]
    failed = [(r.id, r.state, r.error) for r in records if r.state != "SUCCESS"]
    assert not failed, failed[:3]
    return records


@pytest.fixture
def fleet(workers: Workers) -> Iterator[Workers]:
    """No worker of an earlier test survives into the next one."""
    yield workers
    workers.stop_all()


def _start(fleet: Workers, node: str) -> subprocess.Popen[bytes]:
    return fleet.start("general", node, **FAST_RECOVERY)


def _finished(jobs: list[Job]) -> int:
    return sum(job.record().finished for job in jobs)


@pytest.mark.timeout(240)
def test_killed_workers_lose_no_job_and_apply_no_side_effect_twice(
    fleet: Workers, client: Client, redis_client: redis.Redis, stack_env: dict[str, str]
) -> None:
    jobs = [
        client.submit("output", {"work_ms": 15}, tier="low", deadline_s=DEADLINE_S)
        for _ in range(500)
    ]
    worker = _start(fleet, "general-crash-0@test")
    recoveries = []
    for crash in range(1, 4):
        target = crash * 100
        while _finished(jobs) < target:
            time.sleep(0.05)
        in_flight = [job for job in jobs if job.record().state == "STARTED"]
        os.killpg(worker.pid, signal.SIGKILL)  # the whole worker: main process and pool
        worker.wait()
        killed_at = time.monotonic()
        worker = _start(fleet, f"general-crash-{crash}@test")
        if in_flight:
            in_flight[0].wait(60)
            recoveries.append(time.monotonic() - killed_at)

    _all_succeeded(jobs)
    outputs = Path(stack_env["JOBRUNNER_DATA_DIR"]) / "outputs"
    files = sorted(outputs.glob("*.txt"))
    assert len(files) == len(jobs)  # one output per job, none twice ...
    assert all(path.read_text() == path.stem for path in files)  # ... and none half-written
    reruns = sum(int(redis_client.get(ATTEMPTS + job.id) or 0) > 1 for job in jobs)
    print(
        "\n500 jobs: 500 succeeded, 0 dead-lettered, 0 lost; crashed-worker step re-run after "
        f"{[f'{s:.1f}' for s in recoveries]} s; "
        f"{reruns} steps ran twice (at-least-once), outputs stayed exact"
    )


@pytest.mark.timeout(240)
def test_jobs_survive_a_broker_restart_mid_run(
    fleet: Workers, client: Client, redis_server: EmbeddedRedis
) -> None:
    """200 jobs queued, the broker restarted while a worker is taking and running them: every
    job completes once the worker reconnects, none is dead-lettered."""
    node = "general-restart@test"
    _start(fleet, node)
    # Steps that do no I/O of their own: a step that talks to the restarting Redis itself would
    # (rightly) fail unless it declared a retry policy.
    jobs = [
        client.submit("chain3", {"start": i}, tier="medium", deadline_s=DEADLINE_S)
        for i in range(200)
    ]
    while _finished(jobs) < 20:
        time.sleep(0.05)
    redis_server.restart()  # SIGTERM (append-only file flushed), then the same port again
    records = _all_succeeded(jobs)
    assert [r.result for r in records] == [i + 2 for i in range(200)]
    print("\nbroker restart mid-run: 200 of 200 succeeded, 0 dead-lettered")


def _where_messages_are(redis_client: redis.Redis) -> dict[str, object]:
    """What a stalled test needs to say: workers' state, queues, wake tokens, unacked."""
    queues = get_settings().all_queues()
    return {
        "workers": heartbeat.read_all(redis_client),
        "queues": {q: redis_client.llen(q) for q in queues},
        "wake": {q: redis_client.llen(wake_key(q)) for q in queues},
        "unacked": redis_client.hgetall("unacked"),
        "unacked_index": redis_client.zrange("unacked_index", 0, -1, withscores=True),
    }


def test_poison_step_is_dead_lettered_and_the_worker_goes_on(
    fleet: Workers, client: Client, redis_client: redis.Redis
) -> None:
    poison_env = {**FAST_RECOVERY, "JOBRUNNER_RELIABILITY__MAX_DELIVERIES": "2"}
    fleet.start("general", "general-poison@test", **poison_env)
    poison = client.submit("poison", tier="high")
    record = poison.wait(90)
    assert record.finished, _where_messages_are(redis_client)
    assert record.state == "FAILURE"
    assert record.error == (
        "step suicide was delivered 3 times without finishing (its process died each time)"
    )
    letter = DeadLetterStore(redis_client).get(poison.id)
    assert letter is not None and letter["deliveries"] == 3 and letter["error_type"] == "Poison"
    after = client.submit("chain3", {"start": 1}).wait(60)
    assert after.result == 3, (after.state, _where_messages_are(redis_client))


def test_fan_out_with_three_failed_members_of_fifty_lists_all(
    fleet: Workers, client: Client
) -> None:
    _start(fleet, "general-chord@test")
    record = client.submit("map_sum", {"count": 50, "fail_on": [7, 23, 41]}).wait(90)
    assert record.state == "FAILURE"
    assert record.error is not None and record.error.startswith("3 parallel member(s) failed")
    for item in (7, 23, 41):
        assert f"item {item} is bad" in record.error


def test_pickled_message_is_refused_and_never_unpickled(
    fleet: Workers, client: Client, redis_client: redis.Redis, tmp_path: Path
) -> None:
    _start(fleet, "general-pickle@test")
    marker = tmp_path / "unpickled"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.system, (f"touch {marker}",)

    task_id = str(uuid.uuid4())
    body = pickle.dumps(((), {"job": {"id": "x"}, "payload": Exploit()}, {}))
    message = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "binary",
        "content-type": "application/x-python-serialize",
        "headers": {"lang": "py", "task": "step.one", "id": task_id, "root_id": task_id},
        "properties": {
            "correlation_id": task_id,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": get_settings().queue("low")},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    queue = get_settings().queue("low")
    redis_client.lpush(queue, json.dumps(message))
    # The worker refuses it and keeps serving jobs queued behind it.
    assert client.submit("chain3", {"start": 2}, tier="low").result(timeout=60) == 4
    assert redis_client.llen(queue) == 0
    assert not marker.exists()
