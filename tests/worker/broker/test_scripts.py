"""Several writers' script calls in one round trip (scripts.call_all), on a real redis-server:
in order, each failure kept to its own call, and a script Redis lost run again alone."""

from __future__ import annotations

import uuid

import pytest
import redis

from jobrunner.worker.broker.scripts import Call, call_all

pytestmark = pytest.mark.integration

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
FAIL = "return redis.error_reply('refused')"


def test_calls_run_in_order_and_a_failure_stays_with_its_call(redis_client: redis.Redis) -> None:
    key = f"test:calls:{uuid.uuid4().hex}"
    incr, fail = redis_client.register_script(INCR), redis_client.register_script(FAIL)
    replies = call_all(
        redis_client, [Call(incr, [key], [1]), Call(fail, [], []), Call(incr, [key], [10])]
    )
    assert replies[0] == 1 and replies[2] == 11
    assert isinstance(replies[1], redis.ResponseError)
    redis_client.delete(key)


def test_a_script_redis_lost_is_loaded_and_nothing_runs_twice(redis_client: redis.Redis) -> None:
    """After SCRIPT FLUSH (a Redis restart), the first call that had run already is not run
    again; only the lost script's call is, once loaded."""
    key = f"test:calls:{uuid.uuid4().hex}"
    loaded = redis_client.register_script(INCR)
    loaded(keys=[key], args=[0])  # in Redis's cache
    redis_client.script_flush()
    fresh = redis_client.register_script(INCR + " -- another source, another sha")
    fresh(keys=[key], args=[0])  # loaded after the flush
    replies = call_all(redis_client, [Call(fresh, [key], [1]), Call(loaded, [key], [100])])
    assert replies == [1, 101]
    assert int(redis_client.get(key)) == 101
    redis_client.delete(key)
