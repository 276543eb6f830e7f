"""Lease renewal on a real redis-server, beside a consumer that is waiting for messages."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Message, Producer, Queue

from jobrunner.worker.app import TRANSPORT
from jobrunner.worker.broker import leases
from jobrunner.worker.broker.keys import wake_key

pytestmark = pytest.mark.integration


def test_renewal_while_the_consumer_waits_leaves_its_connection_alone(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """The consumer's client is pinned to the connection its BRPOP waits on; a renewal sent
    there would read the BRPOP's reply as its own and stall the consumer."""
    name = f"test-lease-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, routing_key=name)
    held: list[Message] = []
    received: list[Any] = []

    def on_message(body: Any, message: Message) -> None:
        (held if body == "held" else received).append(message if body == "held" else body)

    with Connection(redis_url, transport=TRANSPORT) as connection:
        with Producer(connection) as producer:
            producer.publish("held", routing_key=name, declare=[queue], serializer="json")
        with Consumer(connection, [queue], callbacks=[on_message], accept=["json"]) as consumer:
            connection.drain_events(timeout=5)
            assert len(held) == 1  # delivered, not acked: a message this worker holds
            with pytest.raises(socket.timeout):
                connection.drain_events(timeout=0.2)  # leaves a BRPOP waiting
            channel = consumer.channel
            assert channel._in_poll
            before = redis_client.zscore("unacked_index", held[0].delivery_tag)
            assert leases.renew(channel) == 1
            assert redis_client.zscore("unacked_index", held[0].delivery_tag) > before
            with Producer(connection) as producer:
                producer.publish("next", routing_key=name, serializer="json")
            connection.drain_events(timeout=5)
            assert received == ["next"]
            held[0].ack()
    redis_client.delete(name, wake_key(name))
