"""Pauses: which tiers and pipelines the fleet runs nothing of, who paused them and when.

A tier's pause is two writes in one transaction: its queues join the set the fetch script skips
(worker/broker/lua/fetch.lua), so every worker stops taking from them at its next fetch, without a
restart, and the pause's who and when go beside it for `status` and the exporter.

A pipeline's messages share the tier queues with others', so they cannot be skipped there: a
worker that takes one of a paused pipeline parks it instead (worker/broker/lua/park.lua), on the
pipeline's parked list, where it is counted; resuming puts every parked message back at the end
of its queue (lua/unpark.lua).
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from typing import Any

import redis

from jobrunner.worker.broker import scripts
from jobrunner.worker.broker.keys import PARKED, PAUSED, PAUSED_PIPELINES, PAUSES, WAKE
from jobrunner.worker.broker.transport import TOKEN


def actor() -> str:
    """Who acts, when the caller names nobody: user@host."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


PIPELINE = "pipeline:"  # a paused pipeline's name in the pauses hash


class PauseStore:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def pause(self, tier: str, queues: list[str], by: str) -> None:
        with self.redis.pipeline() as pipe:
            pipe.sadd(PAUSED, *queues)
            pipe.hset(PAUSES, tier, json.dumps({"by": by, "at": time.time(), "queues": queues}))
            pipe.execute()

    def resume(self, tier: str) -> bool:
        """Take the tier's queues out of the skipped set; False if it was not paused."""
        entry = self.paused().get(tier)
        if entry is None:
            return False
        with self.redis.pipeline() as pipe:
            pipe.srem(PAUSED, *entry["queues"])
            pipe.hdel(PAUSES, tier)
            pipe.execute()
        return True

    def pause_pipeline(self, pipeline: str, by: str) -> None:
        with self.redis.pipeline() as pipe:
            pipe.sadd(PAUSED_PIPELINES, pipeline)
            pipe.hset(PAUSES, PIPELINE + pipeline, json.dumps({"by": by, "at": time.time()}))
            pipe.execute()

    def resume_pipeline(self, pipeline: str) -> bool:
        """Workers stop parking its steps, then the parked ones go back to their queues; False
        if it was not paused."""
        with self.redis.pipeline() as pipe:
            pipe.srem(PAUSED_PIPELINES, pipeline)
            pipe.hdel(PAUSES, PIPELINE + pipeline)
            removed, _ = pipe.execute()
        self.unpark(pipeline)
        return bool(removed)

    def unpark(self, pipeline: str) -> int:
        """Put the pipeline's parked messages back at the end of their queues; how many."""
        return int(self.redis.eval(scripts.load("unpark"), 1, PARKED + pipeline, WAKE, TOKEN))

    def paused_pipelines(self) -> set[str]:
        return {raw.decode() for raw in self.redis.smembers(PAUSED_PIPELINES)}

    def paused(self) -> dict[str, dict[str, Any]]:
        """Paused tiers -> {by, at, queues}; paused pipelines ("pipeline:NAME") -> {by, at,
        parked}, parked being how many of its messages wait on its parked list."""
        pauses = {k.decode(): json.loads(v) for k, v in self.redis.hgetall(PAUSES).items()}
        for name, entry in pauses.items():
            if name.startswith(PIPELINE):
                entry["parked"] = self.redis.llen(PARKED + name.removeprefix(PIPELINE))
        return pauses
