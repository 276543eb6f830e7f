"""Reprocessing on error, with a real worker: a failed job of a pipeline with
on_failure = "retry_job" is submitted again as a new job linked to it, up to its limit; `dlq
retry` links the same way; status shows the chain."""

from __future__ import annotations

import json
import time

import pytest
import redis

from jobrunner.worker.broker.keys import RETRY_JOBS
from jobrunner.worker.client import Client
from jobrunner.worker.store.jobs import JobRecord
from tests.conftest import Workers
from tests.support.cli import run
from tests.support.sealed import unreadable_job

pytestmark = pytest.mark.integration


def _next(client: Client, record: JobRecord, timeout_s: float = 30) -> JobRecord:
    """The finished job that retries `record`."""
    deadline = time.monotonic() + timeout_s
    while (current := client.job(record.id).record()).retried_as is None:
        assert time.monotonic() < deadline, f"job {record.id} was not retried"
        time.sleep(0.1)
    return client.job(current.retried_as).wait(30)


def test_a_failed_job_is_retried_as_linked_jobs_up_to_its_limit(
    workers: Workers, client: Client, redis_client: redis.Redis
) -> None:
    # A due retry whose payload is sealed under a key this worker lacks must not be lost (taken
    # from the retry set, then failing to submit): it is left, due, for a host with the key.
    with unreadable_job(redis_client) as sealed:
        redis_client.zadd(RETRY_JOBS, {sealed: time.time()})
        workers.start(
            "general", "general-retry@test", JOBRUNNER_RELIABILITY__REAPER_INTERVAL_S="0.5"
        )
        try:
            first = client.submit("fails_retried", tier="high").wait(30)
            second = _next(client, first)
            third = _next(client, second)
            chain = [first, second, third]
            assert [r.state for r in chain] == ["FAILURE"] * 3
            assert [r.attempt for r in chain] == [1, 2, 3]
            assert [r.retry_of for r in chain] == [None, first.id, second.id]
            time.sleep(2)  # several reaper rounds: max_job_retries = 2, so no fourth attempt
            assert client.job(third.id).record().retried_as is None
            assert redis_client.zscore(RETRY_JOBS, sealed) is not None
            log = (workers.log_dir / "general-retry@test.log").read_text()
            assert f"job {sealed}: retry left for a host with its payload key" in log

            # `dlq retry` links the new job to the failed one too.
            retried = run("dlq", "retry", third.id)
            assert retried.returncode == 0, retried.stderr
            fourth_id = retried.stdout.split(" -> ")[1].strip()
            status = run("status", fourth_id, "--json")
            shown = json.loads(status.stdout)
            assert (shown["retry_of"], shown["attempt"]) == (third.id, 4)
            assert client.job(third.id).record().retried_as == fourth_id
        finally:
            workers.stop_all()
            redis_client.zrem(RETRY_JOBS, sealed)
