"""Pauses: which tiers the fleet takes nothing from, who paused them and when.

A pause is two writes in one transaction: the tier's queues join the set the fetch script skips
(worker/broker/lua/fetch.lua), so every worker stops taking from them at its next fetch, without a
restart, and the pause's who and when go beside it for `status` and the exporter.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from typing import Any

import redis

from jobrunner.worker.broker.keys import PAUSED, PAUSES


def actor() -> str:
    """Who acts, when the caller names nobody: user@host."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


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

    def paused(self) -> dict[str, dict[str, Any]]:
        """Paused tiers -> {by, at, queues}."""
        return {k.decode(): json.loads(v) for k, v in self.redis.hgetall(PAUSES).items()}
