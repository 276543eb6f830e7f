"""The set-aside store: messages refused before their step ran, each with its reason and queue,
kept until a person purges them (`jobrunner set-aside list|show|purge`).

Unlike dead letters (failed jobs), these are messages that never belonged to a job jobrunner
knows: undecodable, not JSON, a task outside jobrunner's registry, a step for a job that does not
exist or names another pipeline or step. They are written by worker/broker/set_aside.py.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from jobrunner.worker.broker.keys import SET_ASIDE, SET_ASIDE_ENTRY
from jobrunner.worker.broker.set_aside import set_aside


class SetAsideStore:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def add(self, message: str, reason: str, queue: str) -> int:
        """Keep a delivered `message` (its queued text) with `reason`; the entry id."""
        return set_aside(self.redis, message, reason, queue)

    def get(self, entry_id: str) -> dict[str, Any] | None:
        raw = self.redis.hgetall(SET_ASIDE_ENTRY + entry_id)
        if not raw:
            return None
        entry: dict[str, Any] = {
            k.decode(): v.decode("utf-8", "backslashreplace") for k, v in raw.items()
        }
        return {**entry, "id": entry_id, "time": float(entry["time"])}

    def ids(self) -> list[str]:
        return [raw.decode() for raw in self.redis.zrange(SET_ASIDE, 0, -1)]

    def entries(self) -> list[dict[str, Any]]:
        return [entry for entry_id in self.ids() if (entry := self.get(entry_id)) is not None]

    def remove(self, entry_id: str) -> bool:
        with self.redis.pipeline() as pipe:
            pipe.delete(SET_ASIDE_ENTRY + entry_id)
            pipe.zrem(SET_ASIDE, entry_id)
            deleted, _ = pipe.execute()
        return bool(deleted)

    def purge(self, older_than_s: float) -> int:
        """Remove entries older than `older_than_s`; how many went."""
        cutoff = time.time() - older_than_s
        old = [raw.decode() for raw in self.redis.zrangebyscore(SET_ASIDE, "-inf", cutoff)]
        return sum(self.remove(entry_id) for entry_id in old)
