"""Lease renewal: a live worker keeps the messages it holds from being re-delivered.

Redis acks are emulated: a delivered message waits in kombu's unacked index, scored by delivery
time, and any worker returns it to its queue once the score is older than the visibility timeout.
Every worker re-scores all it holds (running, held for headroom, or waiting for a retry's ETA)
several times per lease, so only a dead worker's messages lapse and come back.
"""

from __future__ import annotations

import time

from jobrunner.worker.broker.transport import Channel


def renew(channel: Channel) -> int:
    """Re-score every message `channel` holds unacknowledged; returns how many."""
    tags = channel.qos.held()
    if not tags:
        return 0
    now = time.time()
    # A pooled connection: `channel.client` is pinned to the connection the consumer's BRPOP
    # is waiting on, and a command sent there meanwhile would read the BRPOP's reply as its own
    # and leave its own reply for the consumer, stalling it.
    with channel.conn_or_acquire() as client:
        # XX: never re-add a message that was acked or restored meanwhile.
        client.zadd(channel.unacked_index_key, dict.fromkeys(tags, now), xx=True)
    return len(tags)
