"""The dead-letter store: work that will never run, kept in Redis with its reason, never expired."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import redis

INDEX = "jobrunner:dlq"  # sorted set of entry ids by time
ENTRY = "jobrunner:dlq:"


class DeadLetterStore:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def add(self, job: dict[str, Any], *, task_id: str, reason: str, payload: Any) -> str:
        """Keep a dead letter; returns its id."""
        entry_id = uuid.uuid4().hex
        now = time.time()
        record = {
            "job_id": job.get("id", ""),
            "pipeline": job.get("pipeline", ""),
            "step": job.get("step", ""),
            "tier": job.get("tier", ""),
            "task_id": task_id,
            "payload": json.dumps(payload),
            "reason": reason,
            "time": repr(now),
        }
        with self.redis.pipeline() as pipe:
            pipe.hset(ENTRY + entry_id, mapping=record)
            pipe.zadd(INDEX, {entry_id: now})
            pipe.execute()
        return entry_id

    def entries(self) -> list[dict[str, str]]:
        ids = [raw.decode() for raw in self.redis.zrange(INDEX, 0, -1)]
        return [
            {
                "id": entry_id,
                **{k.decode(): v.decode() for k, v in self.redis.hgetall(ENTRY + entry_id).items()},
            }
            for entry_id in ids
        ]
