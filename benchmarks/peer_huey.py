"""The Huey peer (`jobrunner bench --peers`): the same job shapes on the same Redis.

Two instances, so each scenario gets Huey's own best fit: `plain` (a Redis list, for
throughput) and `prioritized` (a sorted set honouring per-task priority, for the priority
scenario). Consumers run them with

    python -m huey.bin.huey_consumer jobrunner.benchmarks.peer_huey.plain -w N -k process
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from huey import PriorityRedisHuey, RedisHuey
from huey.api import Huey, TaskWrapper
from huey.registry import Message
from huey.serializer import Serializer

from jobrunner.config import get_settings
from jobrunner.worker.broker.connection import resolve


class JsonSerializer(Serializer):  # type: ignore[misc]
    """JSON instead of Huey's default pickle: jobrunner never accepts pickle, nor do its peers."""

    def _serialize(self, data: Any) -> bytes:
        wrapped = {"message": list(data)} if isinstance(data, Message) else {"value": data}
        return json.dumps(wrapped).encode()

    def _deserialize(self, data: bytes) -> Any:
        wrapped = json.loads(data)
        return Message(*wrapped["message"]) if "message" in wrapped else wrapped["value"]


@dataclass(frozen=True)
class Tasks:
    """One instance's tasks, mirroring benchmarks/steps.py."""

    noop: TaskWrapper
    echo: TaskWrapper
    pause: TaskWrapper


def _noop() -> None:
    """Returns None, which Huey does not store: no result written."""


def _echo() -> int:
    return 1


def _pause(ms: int) -> float:
    """Holds a process for `ms` milliseconds; returns when it started, for the wait."""
    started = time.time()
    time.sleep(ms / 1000)
    return started


def register(instance: Huey) -> Tasks:
    def task(fn: Any) -> TaskWrapper:
        return instance.task(name=f"bench{fn.__name__}")(fn)

    return Tasks(noop=task(_noop), echo=task(_echo), pause=task(_pause))


_url = resolve(get_settings()).broker_url
plain = RedisHuey("jobrunner-bench", url=_url, serializer=JsonSerializer())
prioritized = PriorityRedisHuey("jobrunner-bench-priority", url=_url, serializer=JsonSerializer())
TASKS = {plain.name: register(plain), prioritized.name: register(prioritized)}
