"""Worker pools: how many processes a pool gets here, and the Celery worker command for it."""

from __future__ import annotations

import psutil

from config import Settings
from config.settings import PoolSettings


def concurrency(pool: PoolSettings) -> int:
    """A number as configured; `auto` is one process per logical CPU of this host."""
    if pool.concurrency == "auto":
        return psutil.cpu_count(logical=True) or 1
    return pool.concurrency


def worker_argv(settings: Settings, pool_name: str, node_name: str | None = None) -> list[str]:
    """Arguments for `celery -A worker.app` that run `pool_name` (queues in priority order)."""
    pool = settings.pool(pool_name)
    queues = ",".join(settings.queue(tier) for tier in pool.tiers)
    return [
        "-A",
        "worker.app",
        "worker",
        f"--hostname={node_name or pool_name + '@%h'}",
        f"--queues={queues}",
        f"--concurrency={concurrency(pool)}",
        "--pool=prefork",
        "--loglevel=INFO",
    ]
