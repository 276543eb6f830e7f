"""Hostile and malformed queue entries against a real worker on real Redis: each is set aside
with its reason (or, for a step of a finished job, skipped) and the worker goes on. The fuzz
test pushes random and mutated envelopes and then runs a normal job through the same worker."""

from __future__ import annotations

import base64
import json
import pickle
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobrunner.config import get_settings
from jobrunner.worker.broker.keys import JOB, PAUSED, SET_ASIDE_KEY, wake_key
from jobrunner.worker.broker.queues import JOB_HEADER
from jobrunner.worker.client import Client
from jobrunner.worker.store.dead_letters import DeadLetterStore
from jobrunner.worker.store.jobs import FAILURE
from jobrunner.worker.store.set_aside import SetAsideStore
from tests.conftest import Workers
from tests.support.envelopes import body, envelope, job_context
from tests.support.polling import eventually
from tests.support.sealed import unreadable_job
from tests.support.steps import STARTS

pytestmark = pytest.mark.integration

NODE = "general-hostile@test"


@pytest.fixture(scope="module")
def worker(workers: Workers) -> Iterator[subprocess.Popen[bytes]]:
    yield workers.start(
        "general",
        NODE,
        JOBRUNNER_POOLS__GENERAL__CONCURRENCY="1",
        JOBRUNNER_RELIABILITY__REAPER_INTERVAL_S="1",
    )


@pytest.fixture
def store(redis_client: redis.Redis) -> Iterator[SetAsideStore]:
    aside = SetAsideStore(redis_client)
    aside.purge(0)
    yield aside
    aside.purge(0)


def _queue() -> str:
    return get_settings().queue("low")


def _with(message: dict[str, Any], **changes: Any) -> str:
    return json.dumps({**message, **changes})


def _tags(text: str) -> set[str]:
    """The delivery tag of a queued text, if it has one (so it is no longer leased)."""
    try:
        return {json.loads(text)["properties"]["delivery_tag"]}
    except (ValueError, KeyError, TypeError):
        return set()


def _same(kept: str, queued: str) -> bool:
    """Whether a set-aside entry keeps the queued message: the text itself, or (re-encoded by
    kombu, or stamped with its enqueue time by the starvation guard) its tag and body."""
    if kept == queued:
        return True
    return _tags(kept) == _tags(queued) != set() and (
        json.loads(kept)["body"] == json.loads(queued)["body"]
    )


def _sleep_step(context: dict[str, Any], tag: str) -> dict[str, Any]:
    return envelope("step.sleep", {"job": context, "payload": {"tag": tag}})


def _job(client: Client, pipeline: str = "sleepy") -> str:
    """A job record as `submit` writes it, with no message sent (the test sends its own)."""
    job_id = uuid.uuid4().hex
    client.store.create([(job_id, {})], pipeline, "low", 600)
    return job_id


VALID = envelope("step.one", {"job": job_context(uuid.uuid4().hex, "chain3", "one")})
PICKLE = base64.b64encode(pickle.dumps(([], {}, {}))).decode()
# (queued text, what the reason says) for each way a message can fail before its step runs.
PROBES = {
    "bad_base64": (_with(VALID, body="!!!not base64!!!"), "undecodable message"),
    "unknown_body_encoding": (
        _with(VALID, properties={**VALID["properties"], "body_encoding": "rot13"}),
        "undecodable message",
    ),
    "integer_body": (
        _with(VALID, body=12345, properties={**VALID["properties"], "body_encoding": None}),
        "undecodable body",
    ),
    "cjson_only_number": (_with(VALID).replace('"priority": 0', '"priority": 0x10'), "undecodable"),
    "pickle": (
        _with(VALID, body=PICKLE, **{"content-type": "application/x-python-serialize"}),
        "is not accepted",
    ),
    "yaml": (_with(VALID, **{"content-type": "application/x-yaml"}), "is not accepted"),
    "unknown_content_type": (_with(VALID, **{"content-type": "text/whatever"}), "not accepted"),
    "no_task_header": (_with(VALID, headers={"id": "x"}), "name no task and id"),
    "body_not_a_task": (_with(VALID, body=body()[:0] or "e30="), "not [args, kwargs, options]"),
    "unknown_task": (json.dumps(envelope("no.such.task")), "is not one of jobrunner's"),
    "celery_builtin": (json.dumps(envelope("celery.accumulate")), "is not one of jobrunner's"),
    "no_job_context": (json.dumps(envelope("step.one", {"payload": {}})), "no job context"),
    "path_as_job_id": (
        json.dumps(envelope("step.one", {"job": job_context("/tmp/x", "chain3", "one")})),
        "is not a job id",
    ),
    "no_such_job": (json.dumps(VALID), "no job"),
    "not_a_kombu_message": ('{"no": "envelope"}', "not a kombu message"),
}


@pytest.mark.parametrize("name", list(PROBES))
def test_a_malformed_message_is_set_aside_and_the_worker_goes_on(
    name: str,
    worker: subprocess.Popen[bytes],
    store: SetAsideStore,
    redis_client: redis.Redis,
) -> None:
    text, reason = PROBES[name]
    redis_client.lpush(_queue(), text)
    eventually(lambda: len(store.entries()) == 1)
    [entry] = store.entries()
    assert reason in entry["reason"] and entry["queue"] == _queue()
    assert _same(entry["message"], text)
    assert _tags(text) & set(map(bytes.decode, redis_client.hkeys("unacked"))) == set()
    assert worker.poll() is None


def test_a_step_must_name_its_jobs_pipeline_and_step(
    worker: subprocess.Popen[bytes],
    store: SetAsideStore,
    client: Client,
    redis_client: redis.Redis,
) -> None:
    job_id = _job(client)
    other_pipeline = _sleep_step(job_context(job_id, "chain3", "sleep"), "other-pipeline")
    other_step = envelope("step.one", {"job": job_context(job_id, "sleepy", "sleep")})
    for message in (other_pipeline, other_step):
        redis_client.lpush(_queue(), json.dumps(message))
    eventually(lambda: len(store.entries()) == 2)
    reasons = sorted(entry["reason"] for entry in store.entries())
    assert reasons == [
        f"job {job_id} is of pipeline sleepy, not 'chain3'",
        "step.one does not run step 'sleep'",
    ]
    # The same step, naming its job truly, runs.
    redis_client.lpush(
        _queue(), json.dumps(_sleep_step(job_context(job_id, "sleepy", "sleep"), "ok"))
    )
    eventually(lambda: redis_client.lrange(STARTS, 0, -1) == [b"ok"])


def test_a_step_of_a_finished_job_is_skipped_not_set_aside(
    worker: subprocess.Popen[bytes],
    store: SetAsideStore,
    client: Client,
    redis_client: redis.Redis,
) -> None:
    job_id = _job(client)
    client.store.finish(job_id, FAILURE, error="cancelled")
    redis_client.lpush(
        _queue(), json.dumps(_sleep_step(job_context(job_id, "sleepy", "sleep"), "late"))
    )
    assert client.submit("chain3", {"start": 1}, tier="low").result(timeout=60) == 3
    assert redis_client.lrange(STARTS, 0, -1) == []  # queued before the job: taken before it
    assert store.entries() == []
    assert worker.poll() is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
PARTS = ("headers", "properties")


@st.composite
def hostile(draw: st.DrawFn) -> str:
    """A queue entry: random text, or a valid step message with one part replaced at random."""
    message = envelope("step.one", {"job": job_context(uuid.uuid4().hex, "chain3", "one")})
    how = draw(st.sampled_from(["text", "top", "part", "body"]))
    if how == "text":
        return draw(st.text(max_size=40))
    if how == "top":
        message[draw(st.sampled_from([*message, "extra"]))] = draw(JSON)
    elif how == "part":
        part = draw(st.sampled_from(PARTS))
        message[part][draw(st.sampled_from([*message[part], "eta", "expires", "timelimit"]))] = (
            draw(JSON)
        )
        message["properties"]["delivery_tag"] = str(uuid.uuid4())
    else:
        message["body"] = base64.b64encode(json.dumps(draw(JSON)).encode()).decode()
    return json.dumps(message)


def test_fuzzed_messages_never_stop_the_worker(
    worker: subprocess.Popen[bytes],
    store: SetAsideStore,
    client: Client,
    redis_client: redis.Redis,
) -> None:
    pushed: list[str] = []

    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(entry=hostile())
    def push(entry: str) -> None:
        redis_client.lpush(_queue(), entry)
        pushed.append(entry)

    push()
    assert client.submit("chain3", {"start": 5}, tier="low").result(timeout=60) == 7
    assert worker.poll() is None
    leased = set(map(bytes.decode, redis_client.hkeys("unacked")))
    assert redis_client.llen(_queue()) == 0 and not leased & set().union(*map(_tags, pushed))
    assert len(store.entries()) == len(pushed)  # every one kept, none run


# Keys any client holding the password can overwrite, each with the type the fetch needs.
TYPED_KEYS = {
    "queue": lambda: _queue(),
    "wake list": lambda: wake_key(_queue()),
    "unacked hash": lambda: "unacked",
    "unacked index": lambda: "unacked_index",
    "paused set": lambda: PAUSED,
}


def _moved_aside(redis_client: redis.Redis, key: str) -> list[bytes]:
    """The names `key` was renamed to under SET_ASIDE_KEY."""
    return [
        k for k in redis_client.scan_iter(SET_ASIDE_KEY + "*") if k.endswith(b":" + key.encode())
    ]


@pytest.mark.parametrize("kind", list(TYPED_KEYS))
def test_a_key_of_another_type_is_moved_aside(
    kind: str,
    worker: subprocess.Popen[bytes],
    workers: Workers,
    client: Client,
    redis_client: redis.Redis,
) -> None:
    """A tier queue, its wake list, kombu's unacked hash or index or the paused set overwritten
    with a string (anyone with the password can) used to stop the worker with WRONGTYPE; now it
    is renamed aside and the worker goes on."""
    bad = TYPED_KEYS[kind]()
    redis_client.set(bad, "of another type")
    eventually(lambda: len(_moved_aside(redis_client, bad)) == 1 or worker.poll() is not None, 30)
    assert worker.poll() is None, "the worker stopped"
    [renamed] = _moved_aside(redis_client, bad)
    assert redis_client.get(renamed) == b"of another type"  # kept as it was, for a person
    log = (workers.log_dir / f"{NODE}.log").read_text(errors="replace")
    assert log.count(f"{bad} has the wrong type") >= 1 and log.count(renamed.decode()) == 1
    # The same key, of its type again once written, serves a normal job.
    assert client.submit("chain3", {"start": 5}, tier="low").result(timeout=60) == 7
    assert worker.poll() is None
    redis_client.delete(renamed)


def test_a_job_record_of_another_type_refuses_its_step(
    worker: subprocess.Popen[bytes], store: SetAsideStore, redis_client: redis.Redis
) -> None:
    """The fetch looks up the job its message's header names: a record overwritten with a string
    is renamed aside and the step refused as one of no such job, where the lookup's WRONGTYPE
    stopped the worker (with the message already taken)."""
    job_id = uuid.uuid4().hex
    redis_client.set(JOB + job_id, "of another type")
    message = _sleep_step(job_context(job_id, "sleepy", "sleep"), "typed")
    message["headers"][JOB_HEADER] = job_id
    redis_client.lpush(_queue(), json.dumps(message))
    eventually(lambda: len(store.entries()) == 1 or worker.poll() is not None, 30)
    assert worker.poll() is None, "the worker stopped"
    [entry] = store.entries()
    assert entry["reason"] == f"no job {job_id!r}"
    [renamed] = _moved_aside(redis_client, JOB + job_id)
    assert redis_client.get(renamed) == b"of another type"
    redis_client.delete(renamed)


def test_a_deadline_failure_names_the_jobs_own_deadline(
    worker: subprocess.Popen[bytes], client: Client, redis_client: redis.Redis
) -> None:
    # An overdue job whose payload is sealed under a key the worker lacks once stood in the
    # reaper's way; now its record loads without the key and it fails like any other.
    with unreadable_job(redis_client, deadline_s=0.001) as sealed:
        job = client.submit("sleepy", {"sleep_ms": 2500, "tag": "slow"}, tier="low", deadline_s=1)
        record = job.wait(30)
        assert client.job(sealed).record().state == FAILURE  # reaped first: its deadline is older
    assert record.state == FAILURE
    assert record.error is not None and "not finished within 1 s of submission" in record.error


def test_a_terminated_step_fails_its_job_as_revoked(
    worker: subprocess.Popen[bytes], app: Celery, client: Client, redis_client: redis.Redis
) -> None:
    job = client.submit("sleepy", {"sleep_ms": 30_000, "tag": "revoked"}, tier="low")

    def running() -> list[dict[str, Any]]:
        active = app.control.inspect(destination=[NODE], timeout=1).active() or {}
        return [task for task in active.get(NODE, []) if job.id in str(task["kwargs"])]

    eventually(lambda: bool(running()), timeout_s=30, every_s=0.3)
    app.control.revoke(running()[0]["id"], terminate=True)
    record = job.wait(30)
    assert record.state == FAILURE
    assert record.error is not None and record.error.startswith("revoked: step sleep terminated")
    letter = DeadLetterStore(redis_client).get(job.id)
    assert letter is not None and letter["error_type"] == "Revoked"
