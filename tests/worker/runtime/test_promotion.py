"""The starvation guard on real Redis: messages that waited longer than promote_after_s move up
one tier, oldest first, onto the next-taken end; young ones and high stay; the move is atomic
against a worker taking the message meanwhile; each move is recorded on the job. The last test
runs a real worker whose timer runs the guard: an aged low job overtakes a later high job."""

from __future__ import annotations

import base64
import json
import time

import pytest
import redis

from jobrunner.config import TIERS, Settings, get_settings
from jobrunner.config.settings import PoolSettings, StarvationSettings
from jobrunner.worker.broker.keys import job_keys, wake_key
from jobrunner.worker.broker.queues import QUEUED_AT_HEADER
from jobrunner.worker.client import Client, Job
from jobrunner.worker.runtime.promotion import Promoter
from jobrunner.worker.store.jobs import SUCCESS, JobStore
from tests.conftest import Workers
from tests.support.steps import STARTS

pytestmark = pytest.mark.integration

AGE_S = 5.0  # promote_after_s for the tests without a worker; `now` is passed explicitly


@pytest.fixture
def settings(redis_client: redis.Redis) -> Settings:
    """The test stack's settings with a small promotion age (no worker runs in these tests).
    The redis_client fixture has emptied every tier queue, promotion targets included."""
    return get_settings().model_copy(
        update={"starvation": StarvationSettings(promote_after_s=AGE_S, check_interval_s=1)}
    )


def _queues(*tiers: str) -> list[str]:
    return [get_settings().queue(tier) for tier in tiers]


def _messages(client: redis.Redis, queue: str) -> list[dict]:
    """The queue's messages in list order: the next one taken is last."""
    return [json.loads(raw) for raw in client.lrange(queue, 0, -1)]


def _job_ids(client: redis.Redis, queue: str) -> list[str]:
    ids = []
    for message in _messages(client, queue):
        kwargs = json.loads(base64.b64decode(message["body"]))[1]
        ids.append(kwargs["job"]["id"])
    return ids


def _queued_at(client: redis.Redis, queue: str, index: int) -> float:
    return float(_messages(client, queue)[index]["headers"][QUEUED_AT_HEADER])


def _submit_lows(client: Client, count: int, tag: str) -> list[Job]:
    return [client.submit("sleepy", {"tag": f"{tag}-{i}"}, tier="low") for i in range(count)]


def test_publish_stamps_queued_at(client: Client, redis_client: redis.Redis) -> None:
    [LOW] = _queues("low")
    before = time.time()
    client.submit("sleepy", {"tag": "stamped"}, tier="low")
    [message] = _messages(redis_client, LOW)
    assert before <= message["headers"][QUEUED_AT_HEADER] <= time.time()
    assert message["properties"]["delivery_info"] == {"exchange": "", "routing_key": LOW}


def test_aged_messages_move_up_one_tier_oldest_first_young_ones_stay(
    client: Client, redis_client: redis.Redis, settings: Settings
) -> None:
    LOW, MEDIUM, HIGH = _queues("low", "medium", "high")
    olds = _submit_lows(client, 3, "old")
    time.sleep(0.3)
    young_medium = client.submit("sleepy", {"tag": "young-medium"}, tier="medium")
    young_low = client.submit("sleepy", {"tag": "young-low"}, tier="low")
    # Just short of the age for the two young messages; the olds are 0.3 s older than that.
    now = _queued_at(redis_client, MEDIUM, -1) + AGE_S - 0.1

    promoted = Promoter(redis_client, settings).run_once(now=now)

    assert [(p.job_id, p.from_queue, p.to_queue) for p in promoted] == [
        (job.id, LOW, MEDIUM) for job in olds
    ]
    assert all(p.waited_s > AGE_S for p in promoted)
    assert _job_ids(redis_client, LOW) == [young_low.id]
    # Onto the next-taken (right) end, ahead of the young medium job, the oldest rightmost.
    assert _job_ids(redis_client, MEDIUM) == [young_medium.id, *(j.id for j in reversed(olds))]
    assert _job_ids(redis_client, HIGH) == []
    # Wake tokens moved with the messages: an idle medium worker wakes for them at once.
    assert [redis_client.llen(wake_key(q)) for q in (LOW, MEDIUM, HIGH)] == [1, 4, 0]
    for message in _messages(redis_client, MEDIUM)[1:]:
        assert message["headers"][QUEUED_AT_HEADER] == now
        assert message["properties"]["delivery_info"]["routing_key"] == MEDIUM
        assert message["properties"]["delivery_info"]["exchange"] == ""
    for job in olds:
        [entry] = job.record().promotions
        assert (entry["from"], entry["to"], entry["step"]) == (LOW, MEDIUM, "sleep")
        assert entry["waited_s"] > AGE_S
    assert young_low.record().promotions == []
    assert young_medium.record().promotions == []


def test_a_later_run_moves_medium_to_high_and_high_never_moves(
    client: Client, redis_client: redis.Redis, settings: Settings
) -> None:
    LOW, MEDIUM, HIGH = _queues("low", "medium", "high")
    olds = _submit_lows(client, 2, "old")
    promoter = Promoter(redis_client, settings)
    first = time.time() + AGE_S + 1
    assert len(promoter.run_once(now=first)) == 2
    newer = client.submit("sleepy", {"tag": "newer"}, tier="low")  # queued after the first run

    second = promoter.run_once(now=first + AGE_S + 1)

    # Medium is served first; the low message aged meanwhile moves up in the same run.
    assert [(p.job_id, p.from_queue, p.to_queue) for p in second] == [
        *((job.id, MEDIUM, HIGH) for job in olds),
        (newer.id, LOW, MEDIUM),
    ]
    assert _job_ids(redis_client, HIGH) == [j.id for j in reversed(olds)]
    assert _job_ids(redis_client, MEDIUM) == [newer.id]
    for job in olds:
        assert [(e["from"], e["to"]) for e in job.record().promotions] == [
            (LOW, MEDIUM),
            (MEDIUM, HIGH),
        ]

    third = promoter.run_once(now=first + 10 * AGE_S)
    assert [(p.job_id, p.from_queue, p.to_queue) for p in third] == [(newer.id, MEDIUM, HIGH)]
    assert _job_ids(redis_client, HIGH) == [*(j.id for j in reversed(olds)), newer.id]
    assert promoter.run_once(now=first + 100 * AGE_S) == []  # high has no tier above it
    assert len(_messages(redis_client, HIGH)) == 3


def test_promotion_off_touches_nothing(
    client: Client, redis_client: redis.Redis, settings: Settings
) -> None:
    LOW, MEDIUM = _queues("low", "medium")
    _submit_lows(client, 2, "old")
    before = redis_client.lrange(LOW, 0, -1)
    off = settings.model_copy(
        update={"starvation": StarvationSettings(promote_after_s=0, check_interval_s=1)}
    )
    assert Promoter(redis_client, off).run_once(now=time.time() + 1e6) == []
    assert redis_client.lrange(LOW, 0, -1) == before
    assert redis_client.llen(MEDIUM) == 0


def test_a_message_without_the_header_is_stamped_as_just_queued(
    client: Client, redis_client: redis.Redis, settings: Settings
) -> None:
    LOW, MEDIUM = _queues("low", "medium")
    job = client.submit("sleepy", {"tag": "unstamped"}, tier="low")
    [message] = _messages(redis_client, LOW)
    del message["headers"][QUEUED_AT_HEADER]  # as from a publisher without our publish hook
    redis_client.lset(LOW, -1, json.dumps(message))
    promoter = Promoter(redis_client, settings)
    now = time.time() + 1000

    assert promoter.run_once(now=now) == []
    assert _queued_at(redis_client, LOW, -1) == now  # stamped in place, not moved
    assert promoter.run_once(now=now + AGE_S) == []  # not older than the age yet
    [moved] = promoter.run_once(now=now + AGE_S + 1)
    assert (moved.job_id, moved.to_queue, moved.waited_s) == (job.id, MEDIUM, AGE_S + 1)


def test_the_move_loses_cleanly_to_a_worker_taking_the_message(
    client: Client, redis_client: redis.Redis, settings: Settings
) -> None:
    LOW, MEDIUM = _queues("low", "medium")
    olds = _submit_lows(client, 3, "old")
    taken: list[bytes] = []

    class TakenMeanwhile(Promoter):
        """A worker BRPOPs the oldest message between our inspection and our move."""

        def move(
            self, source: str, target: str, inspected: list[bytes], rewritten: list[str]
        ) -> int:
            if not taken:
                taken.append(redis_client.rpop(source))
            return super().move(source, target, inspected, rewritten)

    promoted = TakenMeanwhile(redis_client, settings).run_once(now=time.time() + AGE_S + 1)

    # The stale move changed nothing; the re-inspection moved the other two, and only them.
    assert [p.job_id for p in promoted] == [olds[1].id, olds[2].id]
    assert _job_ids(redis_client, MEDIUM) == [olds[2].id, olds[1].id]
    assert redis_client.llen(LOW) == 0
    assert olds[0].record().promotions == []
    assert json.loads(taken[0])["headers"]["id"] not in {
        m["headers"]["id"] for m in _messages(redis_client, MEDIUM)
    }


def test_the_move_script_refuses_a_stale_element(
    client: Client, redis_client: redis.Redis, settings: Settings
) -> None:
    LOW, MEDIUM = _queues("low", "medium")
    _submit_lows(client, 2, "old")
    before = redis_client.lrange(LOW, 0, -1)
    promoter = Promoter(redis_client, settings)

    assert promoter.move(LOW, MEDIUM, [b"stale"], ["new"]) == 0
    assert promoter.move(LOW, MEDIUM, [before[0]], ["new"]) == 0  # not at the right end
    assert promoter.move(LOW, MEDIUM, [b"stale", before[1]], ["a", "b"]) == 0
    assert redis_client.lrange(LOW, 0, -1) == before
    assert redis_client.llen(MEDIUM) == 0
    assert promoter.move(LOW, MEDIUM, before[1:], ["moved"]) == 1
    assert redis_client.lrange(LOW, 0, -1) == before[:1]
    assert redis_client.lrange(MEDIUM, 0, -1) == [b"moved"]


def test_resource_class_queues_move_within_their_class(
    client: Client, redis_client: redis.Redis, settings: Settings
) -> None:
    LOW, MEDIUM = _queues("low", "medium")
    gpu_pool = PoolSettings(tiers=list(TIERS), concurrency=1, resources=["gpu"])
    with_gpu = settings.model_copy(update={"pools": {**settings.pools, "gpu": gpu_pool}})
    low_gpu, medium_gpu = with_gpu.queue("low", "gpu"), with_gpu.queue("medium", "gpu")
    gpu_queues = [with_gpu.queue(t, "gpu") for t in TIERS]
    redis_client.delete(*gpu_queues)
    try:
        job = client.submit("sleepy", {"tag": "gpu"}, tier="low")
        redis_client.lmove(LOW, low_gpu, "RIGHT", "LEFT")  # as if its step needed a gpu

        [moved] = Promoter(redis_client, with_gpu).run_once(now=time.time() + AGE_S + 1)

        assert (moved.job_id, moved.from_queue, moved.to_queue) == (job.id, low_gpu, medium_gpu)
        assert _job_ids(redis_client, medium_gpu) == [job.id]
        assert redis_client.llen(MEDIUM) == 0
        [message] = _messages(redis_client, medium_gpu)
        assert message["properties"]["delivery_info"]["routing_key"] == medium_gpu
    finally:
        redis_client.delete(*gpu_queues)


def test_promotions_expire_with_the_job(client: Client, redis_client: redis.Redis) -> None:
    store = JobStore(redis_client, ttl_s=600)
    job = client.submit("sleepy", {"tag": "expiring"}, tier="low")
    promotions_key = job_keys(job.id).promotions
    assert store.add_promotion(job.id, {"from": "a", "to": "b", "waited_s": 1.0})
    assert redis_client.ttl(promotions_key) == -1  # kept while the job is not finished

    assert store.finish(job.id, SUCCESS, result="done")
    assert 0 < redis_client.ttl(promotions_key) <= 600  # expires with the record
    assert store.add_promotion(job.id, {"from": "b", "to": "c", "waited_s": 2.0})  # a straggler
    assert 0 < redis_client.ttl(promotions_key) <= 600
    assert [e["to"] for e in job.record().promotions] == ["b", "c"]
    assert not store.add_promotion("no-such-job", {"from": "a", "to": "b", "waited_s": 1.0})
    assert not redis_client.exists(job_keys("no-such-job").promotions)


def _wait_for_starts(client: redis.Redis, count: int, timeout_s: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        started = [tag.decode() for tag in client.lrange(STARTS, 0, -1)]
        if len(started) >= count:
            return started
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} steps started within {timeout_s} s")


def test_worker_promotes_an_aged_low_job_past_a_later_high_job(
    workers: Workers, client: Client, redis_client: redis.Redis
) -> None:
    """Runs last: its worker (module-scoped) would consume the queues of the tests above."""
    LOW, MEDIUM, HIGH = _queues("low", "medium", "high")
    workers.start(
        "general",
        "general-promo@test",
        JOBRUNNER_POOLS__GENERAL__CONCURRENCY="1",
        JOBRUNNER_STARVATION__PROMOTE_AFTER_S="1",
        JOBRUNNER_STARVATION__CHECK_INTERVAL_S="0.2",
    )
    # The one process is busy far longer than two promotions (low -> medium -> high) take.
    busy = client.submit("sleepy", {"sleep_ms": 8000, "tag": "busy"}, tier="low")
    _wait_for_starts(redis_client, 1)
    aged = client.submit("sleepy", {"tag": "aged"}, tier="low")
    time.sleep(1.5)
    high = client.submit("sleepy", {"tag": "high"}, tier="high")

    for job in (busy, aged, high):
        assert job.wait(60).state == "SUCCESS"
    moves = [(e["from"], e["to"]) for e in aged.record().promotions]
    assert high.record().promotions == []
    assert busy.record().promotions == []
    # low -> medium after 1 s, medium -> high 1 s later, while the busy step still ran; promoted
    # after the high job was queued, onto high's next-taken end, so it ran first.
    assert moves == [(LOW, MEDIUM), (MEDIUM, HIGH)]
    assert _wait_for_starts(redis_client, 3) == ["busy", "aged", "high"]
