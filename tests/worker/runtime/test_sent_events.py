"""Task-sent events: a client always sends them; a worker's pool processes send theirs (a
chain's next links) only while the worker's task events are on, as Flower turns them on."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from jobrunner.worker.client import Client
from tests.conftest import Workers
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

NODE = "general-sent@test"


@pytest.fixture(scope="module", autouse=True)
def general(workers: Workers) -> Iterator[None]:
    workers.start("general", NODE)
    yield


class SentEvents:
    """Every task-sent event published on the broker while it listens: the task ids.

    Redis delivers a pattern subscriber's messages in the order it ran the PUBLISHes, so once
    a marker published after a job's result has arrived, so has every event of that job."""

    MARKER = "jobrunner-test.celeryev.marker"  # matches the pattern; no event is named so

    def __init__(self, client: redis.Redis) -> None:
        self.ids: list[str] = []
        self.markers: set[str] = set()
        self.client = client
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(**{"*celeryev*": self._received})
        self._thread = self.pubsub.run_in_thread(sleep_time=0.05, daemon=True)

    def _received(self, message: dict[str, Any]) -> None:
        if message["channel"] == self.MARKER.encode():
            self.markers.add(message["data"].decode())
            return
        envelope = json.loads(message["data"])
        body = json.loads(base64.b64decode(envelope["body"]))
        for event in body if isinstance(body, list) else [body]:  # a worker sends batches
            if event.get("type") == "task-sent":
                self.ids.append(event["uuid"])

    def caught_up(self, name: str) -> None:
        """Wait until every event published before now has been received."""
        self.client.publish(self.MARKER, name)
        eventually(lambda: name in self.markers)

    def close(self) -> None:
        self._thread.stop()
        self._thread.join(timeout=5)
        self.pubsub.close()


def _sent_for(events: SentEvents, client: Client) -> int:
    """Run a three-step chain; how many of its tasks had a task-sent event."""
    job = client.submit("chain3", tier="medium")
    assert job.result(timeout=60) == 2  # 0, then +1 twice
    tasks = {entry["task_id"] for entry in client.store.steps(job.id)}
    assert len(tasks) == 3
    events.caught_up(job.id)  # the links' events were published before the last step ran
    return len(tasks & set(events.ids))


def test_pool_processes_send_task_sent_events_only_while_watched(
    app: Celery, client: Client, redis_client: redis.Redis
) -> None:
    events = SentEvents(redis_client)
    try:
        assert _sent_for(events, client) == 1  # the client's, for the first step
        app.control.enable_events(destination=[NODE])
        watched = 0
        deadline = time.monotonic() + 30  # the worker's timer copies the switch each heartbeat
        while watched != 3 and time.monotonic() < deadline:
            watched = _sent_for(events, client)
        assert watched == 3
    finally:
        app.control.disable_events(destination=[NODE])
        events.close()
