"""Encryption at rest: with a payload key, job records and dead letters hold no plaintext
payload or result, workers and the client read them, and `jobrunner keys rotate` re-seals old
values under a new key while they stay readable."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from jobrunner.config import JobrunnerError, get_settings
from jobrunner.worker.broker.keys import DEAD_LETTER, job_keys
from jobrunner.worker.client import Client
from jobrunner.worker.store.crypto import CLEAR, Cipher, new_key
from jobrunner.worker.store.dead_letters import DeadLetterStore, fail_job
from jobrunner.worker.store.jobs import FAILURE, SUCCESS, JobStore, open_store
from tests.conftest import Workers
from tests.support.cli import run
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

OLD, NEW = new_key(), new_key()
VARIABLE = "JOBRUNNER_SECURITY__PAYLOAD_KEY"


@pytest.fixture(scope="module")
def keyed(stack_env: dict[str, str]) -> Iterator[None]:
    """This process (the client) holds OLD, as the worker started below does."""
    os.environ[VARIABLE] = OLD
    get_settings.cache_clear()
    yield
    os.environ.pop(VARIABLE)
    get_settings.cache_clear()


@pytest.fixture(scope="module", autouse=True)
def general(keyed: None, workers: Workers) -> Iterator[None]:
    workers.start("general", "general-crypto@test", **{VARIABLE: OLD})
    yield


def _stored(redis_client: redis.Redis, job_id: str) -> bytes:
    """Every value Redis keeps for the job: its record, lists and dead letter."""
    keys = job_keys(job_id)
    values = [*redis_client.hgetall(keys.record).values()]
    values += [*redis_client.hgetall(DEAD_LETTER + job_id).values()]
    for key in (keys.done, keys.failures, keys.promotions, keys.steps):
        values += redis_client.lrange(key, 0, -1)
    return b"\n".join(values)


def test_records_and_dead_letters_hold_no_plaintext(redis_client: redis.Redis) -> None:
    client = Client()
    assert client.store.cipher.enabled
    job = client.submit("sleepy", {"tag": "secret-tag-31337"}, tier="high")
    assert job.result(30) == "secret-tag-31337"  # the worker sealed it, the client opens it
    assert b"secret-tag-31337" not in _stored(redis_client, job.id)
    assert b"fernet:" in redis_client.hget(job_keys(job.id).record, "payload")

    failed = client.submit("fails", {"start": 424242}, tier="high")
    eventually(lambda: failed.state == "FAILURE")
    letters = DeadLetterStore(redis_client, client.store.cipher)
    assert letters.get(failed.id)["payload"] == {"start": 424242}
    assert b"424242" not in _stored(redis_client, failed.id)
    assert "payloads: encrypted at rest" in run("status").stdout


def test_rotation_re_seals_old_values_and_keeps_them_readable(redis_client: redis.Redis) -> None:
    old_store = open_store(get_settings())
    clear = JobStore(redis_client, 3600, cipher=CLEAR)  # written before any key was set
    old_store.create([("rot-old", {"v": 1})], "sleepy", "low", 60)
    old_store.finish("rot-old", SUCCESS, result={"r": 1})
    clear.create([("rot-clear", {"v": 2})], "sleepy", "low", 60)

    rotated = run("keys", "rotate", **{VARIABLE: f"{NEW},{OLD}"})
    assert rotated.returncode == 0, rotated.stderr
    new_only = JobStore(redis_client, 3600, cipher=Cipher([NEW]))
    assert (new_only.get("rot-old").payload, new_only.get("rot-old").result) == ({"v": 1}, {"r": 1})
    assert new_only.get("rot-clear").payload == {"v": 2}
    assert b'"v": 2' not in redis_client.hget(job_keys("rot-clear").record, "payload")
    with pytest.raises(JobrunnerError, match="no configured payload key opens"):
        _ = old_store.get("rot-old").payload  # nothing is left under the old key alone
    without_key = JobStore(redis_client, 3600)
    with pytest.raises(JobrunnerError, match=r"set security\.payload_key"):
        _ = without_key.get("rot-old").result
    assert run("keys", "rotate", **{VARIABLE: ""}).returncode == 1


def test_a_host_without_the_key_fails_a_sealed_job_and_its_dead_letter_stays_sealed(
    redis_client: redis.Redis,
) -> None:
    sealed = open_store(get_settings())
    sealed.create([("sealed-late", {"v": 3})], "sleepy", "low", 60)
    keyless = JobStore(redis_client, 3600)
    record = keyless.get("sealed-late")
    assert record is not None and (record.pipeline, record.state) == ("sleepy", "PENDING")
    with pytest.raises(JobrunnerError, match=r"set security\.payload_key"):
        _ = record.payload  # only reading the payload needs the key
    assert fail_job(keyless, DeadLetterStore(redis_client), "sealed-late", step="", summary="late")
    assert keyless.get("sealed-late").state == FAILURE
    assert b'"v": 3' not in redis_client.hget(DEAD_LETTER + "sealed-late", "payload")
    assert DeadLetterStore(redis_client, sealed.cipher).get("sealed-late")["payload"] == {"v": 3}
