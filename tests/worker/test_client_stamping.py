"""`submit_many` stamps one template per batch with each job's ids and payload, and `submit` one
template it keeps per kind of job. For any payload (long strings past Celery's 1,024-character
repr limit, unicode, nesting, numbers), several pipeline shapes, tiers and cache flags, the
messages either sends for a job are those Celery sends for the same job with `apply_async`, ids
and clock readings aside (those are the job's own, read as it is sent); and such jobs run on a
real worker with the right results."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jobrunner.config import TIERS, get_settings
from jobrunner.worker import client as internals
from jobrunner.worker.broker.embedded import EmbeddedRedis
from jobrunner.worker.broker.keys import JOBS, wake_key
from jobrunner.worker.broker.queues import QUEUED_AT_HEADER, tier_queues
from jobrunner.worker.broker.transport import publish_commands
from jobrunner.worker.client import Client, JobError
from tests.conftest import Workers

pytestmark = pytest.mark.integration

TIMEOUT_S = 60
# A chain, a chain around a map (fan-out), a chain around a group (a chord), a flow that opens
# with a chord (a start task first), and chords nested in chains.
SHAPES = ["chain3", "map_sum", "group_sum", "chord_first", "nested"]
UUID = re.compile(r"[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}")
EVENT_CLOCKS = re.compile(r'"(clock|timestamp)": [0-9.e+-]+')
LONG = "ünïcödé ☃ " * 150  # 1,500 characters: its repr is cut at 1,024

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.text(min_size=1025, max_size=2500),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
payloads = st.dictionaries(st.text(max_size=12), values, max_size=5)


@pytest.fixture(scope="module")
def bulk_client(stack_env: dict[str, str]) -> Client:
    return Client()


@pytest.fixture(scope="module", autouse=True)
def drained(stack_env: dict[str, str]) -> Iterator[None]:
    """The jobs submitted here are there for their messages: the ones no worker took are
    removed at the end, so the next module's workers do not run them."""
    yield
    broker = redis.Redis.from_url(stack_env["JOBRUNNER_BROKER_URL"])
    queues = [queue for _, queue in tier_queues(get_settings())]
    broker.delete(*queues, *map(wake_key, queues))
    broker.close()


def celerys(
    client: Client,
    pipeline: str,
    job_id: str,
    payload: dict[str, Any],
    tier: str = "low",
    cache: bool = True,
) -> list[Any]:
    """The Redis commands kombu runs when Celery sends the job itself (`apply_async`)."""
    job = client._compile(client.pipeline(pipeline), tier, job_id, payload, cache)
    with client.app.producer_or_acquire() as producer:
        return [
            command
            for sent in internals._record(client.app, job.canvas, producer)
            for command in publish_commands(
                producer.channel, sent.message, sent.exchange, sent.routing_key
            )
        ]


def template(client: Client, pipeline: str, *, events: bool = True) -> internals._Template:
    """The template `submit_many` builds for a batch of `pipeline` (with task-sent events, or
    without: `flower.bulk_sent_events`)."""
    job = client._compile(
        client.pipeline(pipeline), "low", uuid.uuid4().hex, dict(internals._SENTINEL)
    )
    with client.app.producer_or_acquire() as producer:
        return internals._Template(client.app, job, producer, sent_events=events)


def stamp(stamped: internals._Template, job_id: str, payload: dict[str, Any]) -> list[Any]:
    return stamped.stamp(job_id, payload, json.dumps(payload))


def decoded(argument: Any) -> Any:
    """A message's text as a dict, its body decoded; any other argument as it is."""
    if not (isinstance(argument, str) and argument.startswith('{"body"')):
        return argument
    message = json.loads(argument)
    message["body"] = base64.b64decode(message["body"]).decode()
    return message


def canonical(commands: list[Any]) -> str:
    """The commands as text, messages decoded, each id replaced by a placeholder numbered in
    order of first appearance, and what a clock says (an event's clock and timestamp, the
    queued-at stamp) by <n>."""
    shown = []
    for name, args in commands:
        shown.append([name])
        for message in map(decoded, args):
            if isinstance(message, dict):
                message["body"] = EVENT_CLOCKS.sub(r'"\1": <n>', message["body"])
                if QUEUED_AT_HEADER in message["headers"]:
                    message["headers"][QUEUED_AT_HEADER] = "<n>"
            shown[-1].append(message)
    ids: dict[str, str] = {}
    return UUID.sub(lambda m: ids.setdefault(m.group(), f"<id{len(ids)}>"), repr(shown))


@pytest.mark.parametrize("pipeline", SHAPES)
@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(payload=payloads)
@example(payload={"text": LONG, "nested": [{"deep": [LONG, -0.0, 10**30]}], "n": 1.5})
def test_a_stamped_job_is_what_celery_sends(
    bulk_client: Client, pipeline: str, payload: dict[str, Any]
) -> None:
    """A payload's first job is stamped message by message, later ones from its rendering."""
    stamped = template(bulk_client, pipeline)
    job_id, other_id = uuid.uuid4().hex, uuid.uuid4().hex
    ours, other = stamp(stamped, job_id, payload), stamp(stamped, other_id, payload)
    assert canonical(ours) == canonical(celerys(bulk_client, pipeline, job_id, payload))
    assert canonical(other) == canonical(celerys(bulk_client, pipeline, other_id, payload))
    # Fresh task ids and delivery tags per job: two jobs share only the app's reply-to address.
    reply_to = decoded(ours[0][1][1])["properties"]["reply_to"]
    shared = set(UUID.findall(repr(ours))) & set(UUID.findall(repr(other)))
    assert shared == {reply_to}


@pytest.mark.parametrize("pipeline", ["chain3", "nested"])
def test_a_payload_holding_a_template_id_is_built_by_celery(
    bulk_client: Client, pipeline: str
) -> None:
    """Swapping ids in the text would change the payload too: that job's messages are built
    by Celery and kombu instead, and are still what Celery sends."""
    stamped = template(bulk_client, pipeline)
    payload = {"text": stamped._own_ids[0], "more": stamped._own_ids[1:]}
    stamp(stamped, uuid.uuid4().hex, payload)  # its first job: not rendered yet
    job_id = uuid.uuid4().hex
    ours = stamp(stamped, job_id, payload)
    assert stamped._rendered[json.dumps(payload)] is None
    assert canonical(ours) == canonical(celerys(bulk_client, pipeline, job_id, payload))


def test_without_sent_events_a_job_is_celerys_task_messages_alone(bulk_client: Client) -> None:
    stamped = template(bulk_client, "group_sum", events=False)
    job_id, payload = uuid.uuid4().hex, {"start": 3}
    theirs = celerys(bulk_client, "group_sum", job_id, payload)
    assert any(name == "publish" for name, _ in theirs)
    tasks = [(name, args) for name, args in theirs if name != "publish"]
    assert canonical(stamp(stamped, job_id, payload)) == canonical(tasks)


@pytest.fixture(scope="module")
def general(workers: Workers) -> Iterator[None]:
    workers.start("general", "general-stamping@test", JOBRUNNER_POOLS__GENERAL__CONCURRENCY="2")
    yield


@pytest.mark.usefixtures("general")
def test_long_payloads_run_with_the_right_results(bulk_client: Client) -> None:
    """Payloads whose kwargs repr Celery truncates: each job still gets its own whole payload."""
    tags = [f"{n}:{LONG}" for n in range(4)]
    sleepy = bulk_client.submit_many("sleepy", [{"tag": tag} for tag in tags], tier="high")
    fail_on = list(range(100, 400))  # never hit: the items are 0..count-1
    summed = bulk_client.submit_many(
        "map_sum", [{"count": n, "fail_on": fail_on} for n in (3, 5)], tier="low"
    )
    assert [job.result(timeout=TIMEOUT_S) for job in sleepy] == tags
    assert [job.result(timeout=TIMEOUT_S) for job in summed] == [6, 15]
    assert sleepy[0].record().payload == {"tag": tags[0], "sleep_ms": 0}


@contextmanager
def sending() -> Iterator[list[list[Any]]]:
    """The messages' commands of each transaction clients run meanwhile (run for real too)."""
    run, sent = internals.run_atomically, []

    def recording(channel: Any, commands: list[Any]) -> None:
        sent.append([c for c in commands if c[0] not in ("hset", "zadd", "hincrby")])
        run(channel, commands)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(internals, "run_atomically", recording)
        yield sent


def readings(commands: list[Any]) -> tuple[list[float], list[int]]:
    """What the job's messages read off clocks: the enqueue stamp and event timestamps, and
    the events' Lamport clocks."""
    times, clocks = [], []
    for message in (decoded(a) for _, args in commands for a in args):
        if not isinstance(message, dict):
            continue
        if QUEUED_AT_HEADER in message["headers"]:
            times.append(message["headers"][QUEUED_AT_HEADER])
        if "task" not in message["headers"]:
            event = json.loads(message["body"])
            times.append(event["timestamp"])
            clocks.append(event["clock"])
    return times, clocks


def submitted(
    client: Client, pipeline: str, payload: dict[str, Any], tier: str, cache: bool
) -> list[Any]:
    """Submit the job; the commands that sent it, checked against what Celery sends for it and
    for clock readings taken as it was sent."""
    with sending() as sent:
        before = time.time()
        job = client.submit(pipeline, payload, tier=tier, cache=cache)
        after = time.time()
    (ours,) = sent
    normalized = client._validate(client.pipeline(pipeline), payload)
    assert canonical(ours) == canonical(celerys(client, pipeline, job.id, normalized, tier, cache))
    times, _ = readings(ours)
    assert times and all(before <= t <= after for t in times)
    return ours


def template_kept(client: Client) -> bool:
    """Whether the client's single submits so far were stamped from templates it keeps."""
    return bool(client._templates) and all(t for _, t in client._templates.values())


# Pipelines of several shapes, each with payloads its payload model accepts.
SUBMITTED = {
    "sleepy": st.fixed_dictionaries(
        {},
        optional={
            "tag": st.one_of(st.text(max_size=20), st.text(min_size=1025, max_size=2500)),
            "sleep_ms": st.integers(0, 5),
        },
    ),
    "chain3": st.fixed_dictionaries({}, optional={"start": st.integers()}),
    "nested": st.fixed_dictionaries({}, optional={"start": st.integers()}),
    "map_sum": st.fixed_dictionaries(
        {}, optional={"count": st.integers(0, 9), "fail_on": st.lists(st.integers(), max_size=4)}
    ),
}


@pytest.mark.parametrize("pipeline", list(SUBMITTED))
@settings(max_examples=10, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_a_submitted_job_is_what_celery_sends(
    bulk_client: Client, pipeline: str, data: st.DataObject
) -> None:
    """Three submits of a kind of job (a payload twice: its second job is stamped from its
    rendering; then another) and one of another kind (tier, cache flag): every one, stamped
    from a kept template, is what Celery sends, and reads the clocks as it goes (the Lamport
    clock of its event moves on)."""
    kind = (data.draw(st.sampled_from(TIERS)), data.draw(st.booleans()))
    other = data.draw(st.sampled_from([(t, c) for t in TIERS for c in (True, False)]))
    payload = data.draw(SUBMITTED[pipeline])
    jobs = [(payload, kind), (payload, kind), (data.draw(SUBMITTED[pipeline]), kind)]
    jobs.append((data.draw(SUBMITTED[pipeline]), other))
    clocks = []
    for drawn, (tier, cache) in jobs:
        clocks += readings(submitted(bulk_client, pipeline, drawn, tier, cache))[1]
    assert clocks == sorted(set(clocks))
    assert template_kept(bulk_client)


def test_a_kept_template_is_one_kind_of_job_only(stack_env: dict[str, str]) -> None:
    """Each tier and cache flag gets its own: one kept for the high tier does not send a low job
    (its queue, its job context), nor one kept with the cache on a job that skips it."""
    client = Client()
    for tier, cache in [("high", True), ("low", True), ("low", False), ("high", True)]:
        submitted(client, "chain3", {"start": 1}, tier, cache)
    assert len(client._templates) == 3
    assert template_kept(client)
    # The high job's payload came twice: the second was filled into its rendering.
    ((_, high),) = [kept for key, kept in client._templates.items() if key[1:3] == ("high", True)]
    assert high is not None and high._rendered['{"start": 1}'].texts


def test_a_long_chain_is_stamped_from_a_kept_template(stack_env: dict[str, str]) -> None:
    """A 200-step chain, whose first message embeds every later link (some 200 ids to find in
    its text), is kept as a template like any job, and each job stamped from it, the second
    from its payload's rendering, is what Celery sends."""
    client = Client()
    for _ in range(2):
        submitted(client, "chain200", {"start": 1}, "high", True)
    assert template_kept(client)
    ((_, kept),) = client._templates.values()
    assert kept is not None and len(kept._own_ids) == 201  # the job's id and its 200 tasks'
    assert kept._rendered['{"start": 1}'].texts


def test_each_thread_sends_with_its_own_reply_to_address(stack_env: dict[str, str]) -> None:
    """Celery's reply-to address is per thread (`app.thread_oid`, in the properties and in the
    options of the signatures a message embeds): threads share a kept template, and each
    job carries its own thread's. (The threads live at once, so their ids, and addresses,
    differ; they submit one after the other.)"""
    client = Client()
    sent: dict[str, list[Any]] = {}
    done, both = threading.Event(), threading.Barrier(2)

    def submit(name: str) -> None:
        oid = client.app.thread_oid
        sent[name] = [oid, submitted(client, "nested", {}, "low", True)]
        done.set()
        both.wait(timeout=TIMEOUT_S)

    threads = [threading.Thread(target=submit, args=(name,)) for name in ("one", "two")]
    for thread in threads:
        done.clear()
        thread.start()
        assert done.wait(timeout=TIMEOUT_S)
    for thread in threads:
        thread.join()
    assert sent["one"][0] != sent["two"][0]
    for oid, commands in sent.values():
        message = decoded(commands[0][1][1])
        assert message["properties"]["reply_to"] == oid
        assert message["body"].count(oid) > 1  # embedded signatures' options too
    assert len(client._templates) == 1 and template_kept(client)


def test_a_foreign_publish_hook_sees_every_job(bulk_client: Client) -> None:
    """A hook of another library (a tracer's, say) is called for each job's message, and what
    it writes into one is that message's own: such jobs are built by Celery, not stamped."""
    from celery.signals import before_task_publish

    count = iter(range(10**6))

    def number(headers: dict[str, Any] | None = None, **_: Any) -> None:
        if headers is not None:
            headers["x-traced"] = next(count)

    before_task_publish.connect(number, weak=False)
    try:
        with sending() as sent:
            for _ in range(2):
                bulk_client.submit("chain3", {"start": 1}, tier="low")
    finally:
        before_task_publish.disconnect(number)
    assert [decoded(s[0][1][1])["headers"]["x-traced"] for s in sent] == [0, 1]


def test_a_kept_template_sends_across_a_broker_restart(
    stack_env: dict[str, str], redis_server: EmbeddedRedis
) -> None:
    """Its channel's connections are gone with the old server: the next job is sent (retried
    as a lost connection is, `_send`), recorded with its messages, still from the template."""
    client = Client()
    first = client.submit("chain3", {"start": 1}, tier="low")
    redis_server.restart()  # SIGTERM (append-only file flushed), then the same port again
    with sending() as sent:
        second = client.submit("chain3", {"start": 1}, tier="low")
    assert template_kept(client)
    assert canonical(sent[-1]) == canonical(
        celerys(client, "chain3", second.id, {"start": 1}, "low")
    )
    assert first.state == second.state == "PENDING"  # both recorded
    broker = redis.Redis.from_url(stack_env["JOBRUNNER_BROKER_URL"])
    queued = broker.lrange(get_settings().queue("low"), 0, -1)
    assert sum(second.id.encode() in base64.b64decode(json.loads(m)["body"]) for m in queued) == 1
    broker.close()


def test_a_failed_send_enqueues_nothing_and_drops_the_templates(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Client()
    client.submit("chain3", {"start": 1}, tier="low")

    def refuse(*args: object, **kwargs: object) -> None:
        raise ConnectionError("broker went away")

    monkeypatch.setattr(internals, "run_atomically", refuse)
    monkeypatch.setattr(internals.time, "sleep", lambda s: None)  # no retry pauses
    broker = redis.Redis.from_url(stack_env["JOBRUNNER_BROKER_URL"])
    jobs_before = broker.zcard(JOBS)
    with pytest.raises(JobError, match="could not enqueue job for chain3: broker went away"):
        client.submit("chain3", {"start": 2}, tier="low")
    assert broker.zcard(JOBS) == jobs_before
    assert not client._templates  # the next job builds a template on a fresh producer
    broker.close()
