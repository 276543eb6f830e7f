"""The reliable fetch on a real redis-server: a message is always in its queue or recorded unacked,
never only in a consumer's memory; the highest-priority queue is taken first; tokens do not leak."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Message, Producer, Queue

from jobrunner.worker.app import TRANSPORT
from jobrunner.worker.broker.keys import JOB, SET_ASIDE, SET_ASIDE_KEY, wake_key
from jobrunner.worker.broker.queues import JOB_HEADER
from jobrunner.worker.broker.transport import (
    fetched_job,
    look_up_jobs,
    run_atomically,
    screen_tasks,
)
from jobrunner.worker.store.set_aside import SetAsideStore

pytestmark = pytest.mark.integration

OPTIONS = {"queue_order_strategy": "priority", "priority_steps": [0], "sep": ":"}


@pytest.fixture
def queues(redis_url: str) -> Iterator[list[Queue]]:
    """Three fresh queues, highest priority first, deleted afterwards with their wake lists."""
    names = [f"test-{tier}-{uuid.uuid4().hex[:8]}" for tier in ("high", "medium", "low")]
    yield [Queue(name, routing_key=name) for name in names]
    client = redis.Redis.from_url(redis_url)
    client.delete(*names, *map(wake_key, names))


@pytest.fixture
def connection(redis_url: str) -> Iterator[Connection]:
    with Connection(redis_url, transport=TRANSPORT, transport_options=OPTIONS) as conn:
        yield conn


def _publish(connection: Connection, queue: Queue, body: Any) -> None:
    with Producer(connection) as producer:
        producer.publish(body, routing_key=queue.name, declare=[queue], serializer="json")


def _take_one(connection: Connection, queue: Queue) -> tuple[Any, Message]:
    """Publish one message and take it without acking: a message a consumer now holds."""
    _publish(connection, queue, {"n": 1})
    channel = connection.channel()
    message = channel.basic_get(queue.name)
    assert message is not None
    return channel, message


def _consume_all(connection: Connection, queues: list[Queue], count: int) -> list[Any]:
    """Consume and ack `count` messages; each ack must clear what the fetch recorded."""
    received: list[Any] = []
    client = connection.default_channel.client

    def on_message(body: Any, message: Message) -> None:
        received.append(body)
        message.ack()
        assert not client.hexists("unacked", message.delivery_tag)

    with Consumer(connection, queues, callbacks=[on_message], accept=["json"]):
        while len(received) < count:
            connection.drain_events(timeout=5)
    return received


def test_publish_puts_a_wake_token_beside_each_message(
    connection: Connection, queues: list[Queue], redis_client: redis.Redis
) -> None:
    low = queues[2]
    for n in range(3):
        _publish(connection, low, {"n": n})
    assert redis_client.llen(low.name) == 3
    assert redis_client.llen(wake_key(low.name)) == 3


@pytest.mark.parametrize("expires_s", [None, 30])
def test_a_wake_list_expires_unless_pushed_to(
    connection: Connection, redis_client: redis.Redis, expires_s: int | None
) -> None:
    """Tokens only save waiting for the BRPOP's timeout, so a wake list may expire: it lasts a
    day after its last push (or as long as its queue, a control reply queue per client
    process, where that expires sooner), where those of reply queues used to stay for good."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    _publish(connection, Queue(name, routing_key=name, expires=expires_s), {"n": 1})
    bound = (expires_s or 24 * 3600) * 1000
    assert max(0, bound - 60_000) < redis_client.pttl(wake_key(name)) <= bound
    redis_client.delete(name, wake_key(name))


def test_a_taken_message_is_recorded_unacked_in_the_same_step(
    connection: Connection, queues: list[Queue], redis_client: redis.Redis
) -> None:
    """What a consumer killed right after the fetch leaves behind: the message, unacked, which a
    lapsed lease returns to its queue, flagged redelivered and with a wake token."""
    low = queues[2]
    channel, message = _take_one(connection, low)
    assert message.payload == {"n": 1}
    tag = message.delivery_tag
    assert redis_client.llen(low.name) == 0
    assert redis_client.hexists("unacked", tag)
    assert redis_client.zscore("unacked_index", tag) is not None
    # The "dead" consumer never acks; its lease lapses (visibility timeout 0 here).
    channel.qos.visibility_timeout = 0
    channel.qos.restore_visible(num=100, interval=1)
    assert not redis_client.hexists("unacked", tag)
    restored = json.loads(redis_client.rpop(low.name))
    assert restored["properties"]["delivery_tag"] == tag
    assert restored["properties"]["delivery_info"]["redelivered"] is True
    assert redis_client.llen(wake_key(low.name)) >= 1


def test_highest_priority_queue_is_taken_first_and_tokens_balance(
    connection: Connection, queues: list[Queue], redis_client: redis.Redis
) -> None:
    high, medium, low = queues
    for n in range(3):
        _publish(connection, low, {"tier": "low", "n": n})
    _publish(connection, medium, {"tier": "medium", "n": 0})
    _publish(connection, high, {"tier": "high", "n": 0})
    received = _consume_all(connection, queues, 5)
    assert [body["tier"] for body in received] == ["high", "medium", "low", "low", "low"]
    assert [body["n"] for body in received[2:]] == [0, 1, 2]  # FIFO within a queue
    for queue in queues:  # every token spent with its message: nothing accumulates
        assert redis_client.llen(wake_key(queue.name)) == 0


def test_a_message_pushed_without_a_token_is_still_taken(
    connection: Connection, queues: list[Queue], redis_client: redis.Redis
) -> None:
    """Pushed by hand (or moved by the starvation guard): found when the wait times out."""
    medium = queues[1]
    _publish(connection, medium, {"n": 7})
    redis_client.delete(wake_key(medium.name))
    assert _consume_all(connection, queues, 1) == [{"n": 7}]


def test_an_unreadable_entry_is_set_aside_and_the_next_message_taken(
    connection: Connection, queues: list[Queue], redis_client: redis.Redis
) -> None:
    low = queues[2]
    store = SetAsideStore(redis_client)
    redis_client.delete(SET_ASIDE)
    redis_client.lpush(low.name, "not json", json.dumps({"no": "envelope"}))
    _publish(connection, low, {"n": 1})  # pushed after: taken after the two bad entries
    assert _consume_all(connection, queues, 1) == [{"n": 1}]
    assert [(e["message"], e["reason"], e["queue"]) for e in store.entries()] == [
        ("not json", "not a kombu message", low.name),
        ('{"no": "envelope"}', "not a kombu message", low.name),
    ]
    redis_client.delete(SET_ASIDE)


def test_the_fetch_moves_aside_a_queue_or_wake_list_of_another_type(
    connection: Connection, queues: list[Queue], redis_client: redis.Redis
) -> None:
    """The fetch script's own path (the BRPOP's is tested on a worker, tests/worker/
    test_hostile_input.py): the wrong-typed queue is skipped, the message beside a wrong-typed
    wake list still taken, and both keys kept, renamed, as they were."""
    high, medium = queues[0], queues[1]
    _publish(connection, medium, {"n": 2})
    redis_client.set(high.name, "not a list")
    redis_client.set(wake_key(medium.name), "no tokens")
    channel = connection.channel()
    assert channel.basic_get(high.name) is None
    message = channel.basic_get(medium.name)
    assert message is not None and message.decode() == {"n": 2}
    message.ack()
    names = {high.name, wake_key(medium.name)}
    moved = {
        key.decode().removeprefix(SET_ASIDE_KEY).split(":", 1)[1]: key
        for key in redis_client.scan_iter(SET_ASIDE_KEY + "*")
    }
    kept = {name: redis_client.get(moved[name]) for name in names & moved.keys()}
    redis_client.delete(*(moved[name] for name in kept))
    assert kept == {high.name: b"not a list", wake_key(medium.name): b"no tokens"}


def test_a_channel_closed_after_its_transport_was_torn_down_returns_what_it_held(
    redis_url: str, queues: list[Queue], redis_client: redis.Redis
) -> None:
    """A broker restart can close the consumer's channel after kombu has already detached its
    transport (celery/kombu#582); returning held messages then raised inside kombu and stopped
    the worker. The message goes back to its queue instead."""
    low = queues[2]
    connection = Connection(redis_url, transport=TRANSPORT, transport_options=OPTIONS)
    channel, message = _take_one(connection, low)
    connection.transport.client = None  # what kombu's Connection._do_close_transport leaves
    channel.close()  # no exception
    assert not redis_client.hexists("unacked", message.delivery_tag)
    returned = json.loads(redis_client.rpop(low.name))
    assert returned["properties"]["delivery_tag"] == message.delivery_tag


def test_a_step_that_outlived_its_connection_still_acks(
    redis_url: str, queues: list[Queue], redis_client: redis.Redis
) -> None:
    """The consumer reconnected (its old channel closed and detached) while a step ran; the
    step's ack goes through the old channel and must still clear the message from Redis."""
    low = queues[2]
    connection = Connection(redis_url, transport=TRANSPORT, transport_options=OPTIONS)
    channel, message = _take_one(connection, low)
    channel.qos.restore_at_shutdown = False  # returning it failed: the broker was down
    connection.close()
    message.ack()  # no exception
    assert not redis_client.hexists("unacked", message.delivery_tag)
    assert redis_client.zscore("unacked_index", message.delivery_tag) is None
    assert redis_client.llen(low.name) == 0  # acked, not returned


def test_a_backlog_is_fetched_without_waiting_and_survives_a_script_flush(
    connection: Connection, queues: list[Queue], redis_client: redis.Redis
) -> None:
    """While messages keep coming, the next fetch goes out without a wake-token round trip; a
    Redis that lost its scripts (a restart) answers it NOSCRIPT, and the fetch recovers."""
    low = queues[2]
    for n in range(4):
        _publish(connection, low, {"n": n})
    received = _consume_all(connection, queues, 1)
    assert connection.default_channel._backlog
    redis_client.script_flush()
    received += _consume_all(connection, queues, 3)
    assert received == [{"n": n} for n in range(4)]
    assert redis_client.llen(wake_key(low.name)) == 0


def test_taking_the_last_message_is_followed_by_a_wait_not_a_fetch(
    redis_url: str, queues: list[Queue], redis_client: redis.Redis
) -> None:
    """A fetch that leaves messages queued is followed by another at once; one that took the
    last is followed by the wait on the wake lists, not by a fetch sure to find nothing (a
    chain's next step is sent only once the step ends: each step would pay a round trip).
    Counted in scripts Redis runs while the consumer waits; kombu's restore of lapsed messages
    (which runs one) is held to its first time."""
    options = {**OPTIONS, "unacked_restore_throttle": 10**9}

    def scripts_run() -> int:
        return int(redis_client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))

    def wait(connection: Connection) -> int:
        before = scripts_run()
        with Consumer(connection, queues, accept=["json"]), pytest.raises(TimeoutError):
            connection.drain_events(timeout=0.3)  # under the 1 s wait, whose time-out fetches
        return scripts_run() - before

    with Connection(redis_url, transport=TRANSPORT, transport_options=options) as connection:
        wait(connection)  # kombu's restore runs here, once
        for n in range(2):
            _publish(connection, queues[2], {"n": n})
        received = _consume_all(connection, queues, 1)
        assert connection.default_channel._backlog
        received += _consume_all(connection, queues, 1)
        assert received == [{"n": 0}, {"n": 1}]
        assert wait(connection) == 0


@pytest.mark.parametrize("end", ["ack", "requeue", "close"])
def test_a_fenced_message_is_forgotten_here_and_left_to_redis(
    connection: Connection, queues: list[Queue], redis_client: redis.Redis, end: str
) -> None:
    """A worker cut from Redis for most of a lease fences the messages it runs
    (worker/runtime/consumer/leases.py): another worker may hold them by now under the same
    delivery tag, so ending them here (after the cut heals) must touch nothing in Redis."""
    low = queues[2]
    channel, message = _take_one(connection, low)
    tag = message.delivery_tag
    channel.qos.fence(tag)
    assert tag not in channel.qos.held()  # its lease is no longer renewed from here
    if end == "ack":
        message.ack()
    elif end == "requeue":
        message.reject(requeue=True)
    else:
        channel.close()
    assert redis_client.hexists("unacked", tag)  # what the other worker's delivery relies on
    assert redis_client.zscore("unacked_index", tag) is not None
    assert redis_client.llen(low.name) == 0  # and no second copy in the queue
    redis_client.hdel("unacked", tag)
    redis_client.zrem("unacked_index", tag)


def test_the_fetch_looks_up_the_job_its_header_names(
    connection: Connection, queues: list[Queue], redis_client: redis.Redis
) -> None:
    """A step's job is read in the fetch's own round trip (the consumer checks it from there):
    exists or not, its pipeline and final state; a header that is no job id is not looked up."""
    low = queues[2]
    known, missing = uuid.uuid4().hex, uuid.uuid4().hex
    redis_client.hset(JOB + known, mapping={"pipeline": "p", "state": "CANCELLED"})
    channel = connection.channel()
    look_up_jobs(channel, JOB)
    found = []
    for header in (known, missing, "../../etc", None):
        with Producer(connection) as producer:
            headers = {JOB_HEADER: header} if header else {}
            producer.publish({}, routing_key=low.name, declare=[low], headers=headers)
        message = channel.basic_get(low.name)
        found.append(fetched_job(channel, message.delivery_tag))
        message.ack()
    redis_client.delete(JOB + known)
    assert found == [(known, "p", "CANCELLED"), (missing, "", ""), None, None]


def test_the_consumer_receives_the_screens_decode_of_a_task_body(
    connection: Connection, queues: list[Queue]
) -> None:
    """A chain link's body embeds every later link: the screen's decode is the one the consumer
    reads (`payload`, as Celery's strategy does), not a second one. Shown by changing each
    delivered body after the screen: its payload is still what was sent."""
    low = queues[2]
    channel = connection.channel()
    screen_tasks(channel, lambda name: name == "t")
    sent = [[[i], {"n": i}, {"chain": [{"task": "t"}] * i}] for i in range(3)]
    with Producer(channel) as producer:
        for i, body in enumerate(sent):
            headers = {"task": "t", "id": f"id-{i}"}
            producer.publish(body, routing_key=low.name, declare=[low], headers=headers)
    received: list[Any] = []

    def on_message(message: Message) -> None:  # as Celery's consumer: kombu decodes nothing
        message.body = b"not the body the screen decoded"
        received.append(message.payload)
        message.ack()

    with Consumer(channel, [low], on_message=on_message, accept=["json"]):
        while len(received) < len(sent):
            connection.drain_events(timeout=5)
    assert received == sent


def test_atomic_runs_share_one_kept_client_across_threads(
    connection: Connection, redis_url: str
) -> None:
    """`run_atomically` keeps one client per channel (kombu would build one per call) and
    gives each call its own pipeline: threads sharing the channel lose no command, and every
    transaction stays whole."""
    channel = connection.default_channel
    counter, pairs = f"test-atomic-{uuid.uuid4().hex[:8]}", f"test-atomic-{uuid.uuid4().hex[:8]}"

    def run(_: int) -> None:
        for _ in range(50):
            run_atomically(channel, [("incr", (counter,)), ("rpush", (pairs, "a", "b"))])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(run, range(8)))
    client = redis.Redis.from_url(redis_url)
    try:
        assert channel.atomic_client is channel.atomic_client
        assert int(client.get(counter) or 0) == 400
        items = client.lrange(pairs, 0, -1)
        assert items == [b"a", b"b"] * 400  # no other call's push between a call's two
    finally:
        client.delete(counter, pairs)
