"""`submit_many` stamps one template per batch with each job's ids and payload. For any payload
(long strings past Celery's 1,024-character repr limit, unicode, nesting, numbers) and several
pipeline shapes, the messages it sends for a job are those Celery sends for the same job with
`apply_async`, ids aside; and such jobs run on a real worker with the right results."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jobrunner.worker import client as internals
from jobrunner.worker.broker.queues import QUEUED_AT_HEADER
from jobrunner.worker.broker.transport import publish_commands
from jobrunner.worker.client import Client
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


def celerys(client: Client, pipeline: str, job_id: str, payload: dict[str, Any]) -> list[Any]:
    """The Redis commands kombu runs when Celery sends the job itself (`apply_async`)."""
    job = client._compile(client.pipeline(pipeline), "low", job_id, payload)
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
    stamped = template(bulk_client, pipeline)
    job_id, other_id = uuid.uuid4().hex, uuid.uuid4().hex
    ours, other = stamp(stamped, job_id, payload), stamp(stamped, other_id, payload)
    theirs = celerys(bulk_client, pipeline, job_id, payload)
    assert canonical(ours) == canonical(theirs)
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
