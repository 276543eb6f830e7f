"""`Client.submit_many`: many jobs in two Redis round trips, on a real Redis and a real worker.
Bad input anywhere in the batch enqueues nothing; good batches all run, each its own job. With
idempotency keys, a key already used gives back its job, a key twice in a batch is one job, and
a key reused for another payload is an error naming the first job, with every key released."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from jobrunner.config import TIERS, ConfigError, get_settings
from jobrunner.tasks.errors import PayloadError, PipelineError
from jobrunner.worker.broker.keys import IDEMPOTENCY, JOBS, OPEN_JOBS, wake_key
from jobrunner.worker.client import BulkSubmitError, Client, JobError
from tests.conftest import Workers

pytestmark = pytest.mark.integration

TIMEOUT_S = 60


@pytest.fixture(scope="module", autouse=True)
def general(workers: Workers) -> Iterator[None]:
    workers.start("general", "general-bulk@test", JOBRUNNER_POOLS__GENERAL__CONCURRENCY="2")
    yield


def queued(redis_client: redis.Redis) -> int:
    settings = get_settings()
    return sum(redis_client.llen(settings.queue(tier)) for tier in TIERS)


def test_every_job_runs_with_its_own_payload(client: Client) -> None:
    jobs = client.submit_many("chain3", [{"start": n} for n in range(20)], tier="low")
    assert len({job.id for job in jobs}) == 20
    assert [job.result(timeout=TIMEOUT_S) for job in jobs] == [n + 2 for n in range(20)]
    record = jobs[0].record()
    assert record.tier == "low" and record.pipeline == "chain3"
    assert record.payload == {"start": 0}


def test_fan_out_pipelines_run_too(client: Client) -> None:
    jobs = client.submit_many("map_sum", [{"count": 3}, {"count": 4}], tier="high")
    assert [job.result(timeout=TIMEOUT_S) for job in jobs] == [6, 10]


def test_one_bad_payload_enqueues_nothing(client: Client, redis_client: redis.Redis) -> None:
    jobs_before = redis_client.zcard(JOBS)
    with pytest.raises(PayloadError, match="payload for chain3"):
        client.submit_many("chain3", [{"start": 1}, {"start": "not a number"}], tier="low")
    assert queued(redis_client) == 0
    assert redis_client.zcard(JOBS) == jobs_before


@pytest.mark.parametrize(
    ("pipeline", "tier", "error"),
    [("no_such_pipeline", "low", PipelineError), ("chain3", "urgent", ConfigError)],
)
def test_unknown_pipeline_or_tier_enqueues_nothing(
    client: Client, redis_client: redis.Redis, pipeline: str, tier: str, error: type
) -> None:
    jobs_before = redis_client.zcard(JOBS)
    with pytest.raises(error):
        client.submit_many(pipeline, [{"start": 1}], tier=tier)
    assert queued(redis_client) == 0
    assert redis_client.zcard(JOBS) == jobs_before


def test_failed_send_removes_the_records(
    client: Client, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobrunner.worker import client as client_module

    def refuse(*args: object, **kwargs: object) -> None:
        raise ConnectionError("broker went away")

    monkeypatch.setattr(client_module, "run_atomically", refuse)
    monkeypatch.setattr(client_module.time, "sleep", lambda s: None)  # no retry pauses
    open_before, jobs_before = redis_client.zcard(OPEN_JOBS), redis_client.zcard(JOBS)
    with pytest.raises(JobError, match="could not enqueue 3 jobs for chain3: broker went away"):
        client.submit_many("chain3", [{"start": n} for n in range(3)], tier="low")
    assert queued(redis_client) == 0
    assert (redis_client.zcard(OPEN_JOBS), redis_client.zcard(JOBS)) == (open_before, jobs_before)


def test_a_lost_connection_is_retried(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """As Celery's own publish does (task_publish_retry_policy): a broker restart is a pause."""
    from jobrunner.worker import client as client_module

    run, calls = client_module.run_atomically, []

    def flaky(channel: object, commands: list) -> None:
        calls.append(commands)
        if len(calls) == 1:
            raise ConnectionError("connection reset")
        run(channel, commands)

    monkeypatch.setattr(client_module, "run_atomically", flaky)
    jobs = client.submit_many("chain3", [{"start": 1}, {"start": 2}], tier="low")
    assert [job.result(timeout=TIMEOUT_S) for job in jobs] == [3, 4]
    assert len(calls) == 2
    assert calls[0] == calls[1]  # the same chunk again


def test_broker_refusing_a_producer_enqueues_nothing(
    client: Client, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise ConnectionError("broker went away")

    monkeypatch.setattr(client.app, "producer_or_acquire", refuse)
    jobs_before = redis_client.zcard(JOBS)
    with pytest.raises(JobError, match="could not enqueue 2 jobs"):
        client.submit_many("chain3", [{"start": 1}, {"start": 2}], tier="low")
    assert queued(redis_client) == 0
    assert redis_client.zcard(JOBS) == jobs_before


def test_idempotency_keys_give_each_key_one_job(client: Client, redis_client: redis.Redis) -> None:
    a, b, c = (f"bulk-{uuid.uuid4().hex}" for _ in range(3))
    earlier = client.submit("chain3", {"start": 1}, tier="low", idempotency_key=a)
    jobs_before = redis_client.zcard(JOBS)
    payloads = [{"start": 1}, {"start": 2}, {"start": 2}, {"start": 3}]
    jobs = client.submit_many("chain3", payloads, tier="low", idempotency_keys=[a, b, b, c])
    assert jobs[0].id == earlier.id  # used already: its job, not a new one
    assert jobs[1].id == jobs[2].id  # twice in the batch: one job
    assert len({job.id for job in jobs}) == 3
    assert redis_client.zcard(JOBS) == jobs_before + 2
    assert [job.result(timeout=TIMEOUT_S) for job in jobs] == [3, 4, 4, 5]
    again = client.submit_many("chain3", payloads, tier="low", idempotency_keys=[a, b, b, c])
    assert [job.id for job in again] == [job.id for job in jobs]
    assert redis_client.zcard(JOBS) == jobs_before + 2  # a re-run enqueues nothing


def test_a_key_reused_for_another_payload_enqueues_nothing(
    client: Client, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    used, fresh = f"bulk-{uuid.uuid4().hex}", f"bulk-{uuid.uuid4().hex}"
    first = client.submit("chain3", {"start": 1}, tier="low", idempotency_key=used)
    jobs_before = redis_client.zcard(JOBS)
    with pytest.raises(PayloadError, match=f"key '{used}' was used for job {first.id} \\(chain3"):
        client.submit_many(
            "chain3", [{"start": 5}, {"start": 2}], tier="low", idempotency_keys=[fresh, used]
        )
    with pytest.raises(PayloadError, match=f"key '{fresh}' is given for payloads 0 and 1"):
        client.submit_many(
            "chain3", [{"start": 5}, {"start": 6}], tier="low", idempotency_keys=[fresh, fresh]
        )
    from jobrunner.worker import client as client_module

    def refuse(*args: object, **kwargs: object) -> None:
        raise ConnectionError("broker went away")

    monkeypatch.setattr(client_module, "run_atomically", refuse)
    monkeypatch.setattr(client_module.time, "sleep", lambda s: None)  # no retry pauses
    with pytest.raises(JobError, match="could not enqueue 2 jobs"):
        client.submit_many(
            "chain3",
            [{"start": 5}, {"start": 6}],
            tier="low",
            idempotency_keys=[fresh, "x" + fresh],
        )
    assert redis_client.zcard(JOBS) == jobs_before
    assert redis_client.exists(IDEMPOTENCY + fresh, IDEMPOTENCY + "x" + fresh) == 0  # released
    assert redis_client.get(IDEMPOTENCY + used) == first.id.encode()


def test_empty_batch_is_nothing(client: Client) -> None:
    assert client.submit_many("chain3", [], tier="low") == []


def test_a_failure_part_way_leaves_whole_chunks(
    stack_env: dict[str, str],
    capped_redis_url: str,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broker that fills up part way through a batch (room for about two chunks; a chunk's
    transaction is held in memory while it is read): the chunks before are enqueued whole
    (records, messages, wake tokens), the failing one and those after not at all, its records
    removed; the error names the jobs accepted."""
    from jobrunner.worker import client as client_module

    chunk, chunks = 20, 6
    monkeypatch.setattr(client_module, "BULK_CHUNK_JOBS", chunk)
    settings = get_settings().model_copy(
        update={"broker_url": capped_redis_url, "result_url": stack_env["JOBRUNNER_BROKER_URL"]}
    )
    capped = redis.Redis.from_url(capped_redis_url)
    bulk = Client(settings)
    queue = settings.queue("low")
    payloads = [{"tag": f"{n}:" + "x" * 20_000} for n in range(chunk * chunks)]
    bulk.submit_many("sleepy", payloads[:chunk], tier="low")  # what one chunk takes
    one_chunk = capped.info("memory")["used_memory"]
    capped.delete(queue, wake_key(queue))
    base = capped.info("memory")["used_memory"]
    capped.config_set("maxmemory", base + (one_chunk - base) * 5 // 2)
    before = redis_client.zcard(JOBS), redis_client.zcard(OPEN_JOBS)
    with pytest.raises(BulkSubmitError, match=r"\d+ of them enqueued before") as failed:
        bulk.submit_many("sleepy", payloads, tier="low")
    accepted = failed.value.accepted
    assert 0 < len(accepted) < len(payloads)
    assert len(accepted) % chunk == 0
    assert capped.llen(queue) == capped.llen(wake_key(queue)) == len(accepted)
    after = redis_client.zcard(JOBS), redis_client.zcard(OPEN_JOBS)
    assert (after[0] - before[0], after[1] - before[1]) == (len(accepted), len(accepted))
    stored = [bulk.job(job_id).record().payload["tag"] for job_id in accepted]
    assert stored == [payload["tag"] for payload in payloads[: len(accepted)]]
