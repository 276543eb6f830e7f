"""Delivery counting: a message that keeps coming back (its step kills its process every time)
is stopped after `reliability.max_deliveries` instead of looping forever.

Only re-deliveries cost a Redis call: kombu flags a message `redelivered` when it returns it to
its queue (lost process, lapsed lease, warm shutdown), and the count is kept per task id.
"""

from __future__ import annotations

import redis

from jobrunner.worker.broker.keys import DELIVERIES


class DeliveryCounter:
    def __init__(self, client: redis.Redis, max_deliveries: int, ttl_s: int) -> None:
        self.redis = client
        self.max_deliveries = max_deliveries
        self.ttl_s = ttl_s

    def deliveries(self, task_id: str, redelivered: bool) -> int:
        """How many times this message has now been delivered (1 for a first delivery)."""
        if not redelivered:
            return 1
        with self.redis.pipeline() as pipe:
            pipe.incr(DELIVERIES + task_id)
            pipe.expire(DELIVERIES + task_id, self.ttl_s)
            redeliveries, _ = pipe.execute()
        return 1 + int(redeliveries)

    def exceeded(self, task_id: str, redelivered: bool) -> int | None:
        """The delivery count if it is over the limit, else None."""
        count = self.deliveries(task_id, redelivered)
        return count if count > self.max_deliveries else None
