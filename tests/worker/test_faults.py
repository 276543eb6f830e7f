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

from config import get_settings
from tests.conftest import Workers
from tests.support.polling import eventually
from tests.support.steps import ATTEMPTS
from worker import heartbeat
from worker.app import app
from worker.client import Client, Job
from worker.dead_letter import DeadLetterStore
from worker.embedded_redis import EmbeddedRedis
from worker.headroom import measure
from worker.jobs import JobRecord

pytestmark = [pytest.mark.integration, pytest.mark.faults]

FAST_RECOVERY = {
    "JOBRUNNER_RELIABILITY__LEASE_S": "4",
    "JOBRUNNER_RELIABILITY__MAX_DELIVERIES": "3",
    "JOBRUNNER_RELIABILITY__REAPER_INTERVAL_S": "1",
    "JOBRUNNER_POOLS__GENERAL__CONCURRENCY": "2",
}
# Until a reliable fetch closes it, kombu's Redis transport can lose a message popped by a BRPOP
# whose worker dies (or whose connection drops) before recording it unacked (celery/kombu#1733,
# #305). Such a job is not lost silently: its deadline fails it into the dead-letter store.
DEADLINE_S = 40


def _nothing_lost(records: list[JobRecord], letters: DeadLetterStore) -> tuple[int, int]:
    """Every job finished: succeeded, or dead-lettered at its deadline. Returns both counts."""
    assert all(r.finished for r in records), [r.id for r in records if not r.finished][:3]
    failed = [r for r in records if r.state != "SUCCESS"]
    for record in failed:
        assert record.error is not None and record.error.startswith("deadline passed"), record.error
        assert letters.get(record.id) is not None
    return len(records) - len(failed), len(failed)


@pytest.fixture
def fleet(workers: Workers) -> Iterator[Workers]:
    """No worker of an earlier test survives into the next one."""
    yield workers
    workers.stop_all()


def _start(fleet: Workers, node: str) -> subprocess.Popen[bytes]:
    return fleet.start("general", node, **FAST_RECOVERY)


def _answers(node: str) -> bool:
    try:
        return bool(app.control.ping(destination=[node], timeout=0.5))
    except (redis.ConnectionError, OSError):  # our own pooled connection from before a restart
        return False


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

    records = [job.wait(DEADLINE_S + 20) for job in jobs]
    succeeded, dead_lettered = _nothing_lost(records, DeadLetterStore(redis_client))
    assert dead_lettered <= 3  # at most the one message each kill can catch mid-fetch
    outputs = Path(stack_env["JOBRUNNER_DATA_DIR"]) / "outputs"
    files = sorted(outputs.glob("*.txt"))
    assert len(files) == succeeded  # one output per finished job, none twice ...
    assert all(path.read_text() == path.stem for path in files)  # ... and none half-written
    reruns = sum(int(redis_client.get(ATTEMPTS + job.id) or 0) > 1 for job in jobs)
    print(
        f"\n500 jobs: {succeeded} succeeded, {dead_lettered} dead-lettered at their deadline, "
        f"0 lost; crashed-worker step re-run after {[f'{s:.1f}' for s in recoveries]} s; "
        f"{reruns} steps ran twice (at-least-once), outputs stayed exact"
    )


@pytest.mark.timeout(240)
def test_queued_jobs_survive_a_broker_restart(
    fleet: Workers, client: Client, redis_server: EmbeddedRedis, redis_client: redis.Redis
) -> None:
    """200 jobs queued, the broker restarted, every job completes once the worker reconnects.

    The worker is kept from polling while the broker goes down (the whole host "short" of
    memory), and resumes only once it answers a ping again, i.e. has reconnected: a BRPOP cut
    off by the shutdown, or by the consumer's reconnect, loses the message it popped, a known gap
    of kombu's Redis transport (celery/kombu#1733, #305) that only a reliable fetch closes; the
    job deadline then fails such a job into the dead-letter store rather than losing it.
    """
    node = "general-restart@test"
    _start(fleet, node)
    heartbeat.set_reserve_override(redis_client, measure().memory_total_mb)
    eventually(
        lambda: any(w["state"].startswith("paused") for w in heartbeat.read_all(redis_client))
    )
    time.sleep(1.5)  # a poll issued before the pause times out (kombu's BRPOP waits 1 s)
    # Steps that do no I/O of their own: a step that talks to the restarting Redis itself would
    # (rightly) fail unless it declared a retry policy.
    jobs = [
        client.submit("chain3", {"start": i}, tier="medium", deadline_s=DEADLINE_S)
        for i in range(200)
    ]
    redis_server.restart()  # SIGTERM (append-only file flushed), then the same port again
    eventually(lambda: _answers(node), timeout_s=60)  # the worker has reconnected
    heartbeat.set_reserve_override(redis_client, None)  # ... and only now resumes polling
    records = [job.wait(DEADLINE_S + 20) for job in jobs]
    succeeded, dead_lettered = _nothing_lost(records, DeadLetterStore(redis_client))
    assert dead_lettered <= 1  # at most the one message the reconnect can catch mid-fetch
    assert all(r.result == i + 2 for i, r in enumerate(records) if r.state == "SUCCESS")
    print(f"\nbroker restart: {succeeded} of 200 succeeded, {dead_lettered} dead-lettered")


def test_poison_step_is_dead_lettered_and_the_worker_goes_on(
    fleet: Workers, client: Client, redis_client: redis.Redis
) -> None:
    poison_env = {**FAST_RECOVERY, "JOBRUNNER_RELIABILITY__MAX_DELIVERIES": "2"}
    fleet.start("general", "general-poison@test", **poison_env)
    poison = client.submit("poison", tier="high")
    record = poison.wait(90)
    assert record.finished, (  # if not, say where the message is
        heartbeat.read_all(redis_client),
        {q: redis_client.llen(q) for q in get_settings().all_queues()},
        redis_client.hgetall("unacked"),
        redis_client.zrange("unacked_index", 0, -1, withscores=True),
    )
    assert record.state == "FAILURE"
    assert record.error == (
        "step suicide was delivered 3 times without finishing (its process died each time)"
    )
    letter = DeadLetterStore(redis_client).get(poison.id)
    assert letter is not None and letter["deliveries"] == 3 and letter["error_type"] == "Poison"
    assert client.submit("chain3", {"start": 1}).result(timeout=60) == 3


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
