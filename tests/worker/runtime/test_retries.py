"""Retry policies, job deadlines, idempotency keys and the dead-letter CLI, on a fleet of one
express worker: it consumes only `high`, so a retry that left the job's tier would never run."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from jobrunner.worker.client import Client
from jobrunner.worker.store.dead_letters import DeadLetterStore
from tests.conftest import Workers
from tests.support.cli import run
from tests.support.steps import ATTEMPTS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def express(workers: Workers) -> Iterator[None]:
    workers.start("express", "express-retries@test", JOBRUNNER_RELIABILITY__REAPER_INTERVAL_S="0.3")
    yield


def _attempts(client: redis.Redis, job_id: str) -> int:
    return int(client.get(ATTEMPTS + job_id) or 0)


def test_step_policy_retries_in_tier_until_success(
    client: Client, redis_client: redis.Redis
) -> None:
    job = client.submit("flaky", {"fail_times": 2}, tier="high")
    assert job.result(timeout=60) == 3
    assert job.record().retries == 2
    assert _attempts(redis_client, job.id) == 3


def test_retries_spent_fail_the_job_into_the_dead_letter_store(
    client: Client, redis_client: redis.Redis
) -> None:
    job = client.submit("flaky", {"fail_times": 99}, tier="high")
    record = job.wait(60)
    assert record.state == "FAILURE"
    assert record.error == "step flaky failed: ConnectionError: attempt 4 failed"
    assert _attempts(redis_client, job.id) == 4  # max_retries 3: four attempts in all
    letter = DeadLetterStore(redis_client).get(job.id)
    assert letter is not None
    assert (letter["step"], letter["error_type"], letter["tier"]) == (
        "flaky",
        "ConnectionError",
        "high",
    )
    assert letter["payload"] == {"fail_times": 99, "error": "ConnectionError"}
    assert "ConnectionError: attempt 4 failed" in letter["traceback"]


def test_errors_outside_the_policy_are_not_retried(
    client: Client, redis_client: redis.Redis
) -> None:
    job = client.submit("flaky", {"fail_times": 1, "error": "ValueError"}, tier="high")
    assert job.wait(60).state == "FAILURE"
    assert _attempts(redis_client, job.id) == 1


def test_pipeline_node_declares_the_policy(client: Client, redis_client: redis.Redis) -> None:
    ok = client.submit("flaky_node", {"fail_times": 2}, tier="high")
    assert ok.result(timeout=60) == 3
    spent = client.submit("flaky_node", {"fail_times": 3}, tier="high")
    assert spent.wait(60).state == "FAILURE"
    assert _attempts(redis_client, spent.id) == 3  # the node allows 2 retries


def test_deadline_fails_a_job_that_runs_too_long(client: Client, redis_client: redis.Redis) -> None:
    job = client.submit("sleepy", {"sleep_ms": 3000}, tier="high", deadline_s=1)
    record = job.wait(30)
    assert record.state == "FAILURE"
    assert record.error is not None and record.error.startswith("deadline passed")
    assert DeadLetterStore(redis_client).get(job.id) is not None
    job.wait(0)  # the step finishing later does not revive it
    assert client.job(job.id).record().state == "FAILURE"


def test_idempotency_key_returns_the_first_job(client: Client) -> None:
    first = client.submit("chain3", {"start": 1}, tier="high", idempotency_key="nightly-42")
    again = client.submit("chain3", {"start": 1}, tier="high", idempotency_key="nightly-42")
    assert again.id == first.id
    assert first.result(timeout=60) == 3
    other = client.submit("chain3", {"start": 1}, tier="high", idempotency_key="nightly-43")
    assert other.id != first.id


def test_dead_letter_cli_lists_shows_retries_and_purges(redis_client: redis.Redis) -> None:
    failed = run("submit", "fails", "-p", "high", "--wait", "--json")
    assert failed.returncode == 1
    job_id = json.loads(failed.stdout)["job_id"]

    listed = json.loads(run("dlq", "list", "--json").stdout)
    assert job_id in [entry["job_id"] for entry in listed]
    shown = json.loads(run("dlq", "show", job_id).stdout)
    assert (shown["pipeline"], shown["step"], shown["error_type"]) == (
        "fails",
        "explode",
        "RuntimeError",
    )
    assert "RuntimeError: boom" in shown["traceback"]

    retried = run("dlq", "retry", job_id)
    assert retried.returncode == 0, retried.stderr
    old, new = retried.stdout.strip().split(" -> ")
    assert old == job_id and new != job_id
    assert DeadLetterStore(redis_client).get(job_id) is None
    missing = run("dlq", "show", job_id)
    assert missing.returncode == 1 and "no dead letter for job" in missing.stderr

    bad = run("dlq", "purge", "--older-than", "soon")
    assert bad.returncode == 1 and "is not a duration" in bad.stderr
    assert run("dlq", "purge", "--older-than", "30d").returncode == 0
    assert DeadLetterStore(redis_client).ids() != []  # nothing that young was purged
    purged = run("dlq", "purge", "--older-than", "0")
    assert purged.stdout.startswith("purged ")
    assert DeadLetterStore(redis_client).ids() == []
