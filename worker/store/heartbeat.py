"""Each worker's live state in Redis, for `jobrunner status` and monitoring: its pool, processes,
headroom and whether it admits work. Entries expire when a worker stops refreshing them."""

from __future__ import annotations

import time
from typing import Any

import psutil
import redis

from jobrunner.worker.broker.keys import ADMISSION, WORKER


def publish(client: redis.Redis, node: str, fields: dict[str, Any], ttl_s: float) -> None:
    """Refresh `node`'s entry; adds the host's CPU utilization since the previous heartbeat
    (psutil's non-blocking measure), which the exporter reports per worker."""
    cpu = psutil.cpu_percent(interval=None)
    mapping = {**fields, "node": node, "cpu_percent": cpu, "updated_at": time.time()}
    with client.pipeline() as pipe:
        pipe.hset(WORKER + node, mapping=mapping)
        pipe.pexpire(WORKER + node, int(ttl_s * 1000))
        pipe.execute()


def read_all(client: redis.Redis) -> list[dict[str, str]]:
    """Every live worker's last heartbeat, by node name."""
    keys = sorted(client.scan_iter(match=WORKER + "*", count=100))
    with client.pipeline() as pipe:
        for key in keys:
            pipe.hgetall(key)
        found = pipe.execute()
    return [{k.decode(): v.decode() for k, v in entry.items()} for entry in found if entry]


def reserve_override(client: redis.Redis) -> int | None:
    """The operator's live memory reserve (MB), if one is set."""
    raw = client.hget(ADMISSION, "memory_reserve_mb")
    return None if raw is None else int(raw)


def set_reserve_override(client: redis.Redis, reserve_mb: int | None) -> None:
    """Set (or with None, clear) the fleet-wide live memory reserve."""
    if reserve_mb is None:
        client.hdel(ADMISSION, "memory_reserve_mb")
    else:
        client.hset(ADMISSION, "memory_reserve_mb", reserve_mb)
