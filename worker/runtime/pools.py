"""Worker pools: how many processes a pool gets on this host, and the Celery worker command."""

from __future__ import annotations

from jobrunner.config import Settings
from jobrunner.config.settings import PoolSettings
from jobrunner.worker.app import CELERY_APP
from jobrunner.worker.runtime.headroom import auto_concurrency, host_cpus, measure


def concurrency(settings: Settings, pool: PoolSettings) -> int:
    """The pool's process count (its maximum when autoscaling); `auto` follows this host."""
    if pool.concurrency != "auto":
        return pool.concurrency
    process_mb = pool.max_memory_per_child_mb or settings.admission.process_memory_mb
    return auto_concurrency(
        host_cpus(), measure().memory_total_mb, settings.admission.memory_reserve_mb, process_mb
    )


def worker_argv(settings: Settings, pool_name: str, node_name: str | None = None) -> list[str]:
    """Arguments for `celery -A jobrunner` that run `pool_name` (queues in priority order)."""
    pool = settings.pool(pool_name)
    most = concurrency(settings, pool)
    argv = [
        "-A",
        CELERY_APP,
        "worker",
        f"--hostname={node_name or pool_name + '@%h'}",
        f"--queues={','.join(settings.pool_queues(pool_name))}",
        f"--jobrunner-pool={pool_name}",
        "--pool=prefork",
        "--loglevel=INFO",
    ]
    if pool.min_concurrency is not None and pool.min_concurrency < most:
        argv.append(f"--autoscale={most},{pool.min_concurrency}")
    else:
        argv.append(f"--concurrency={most}")
    if pool.max_memory_per_child_mb:
        argv.append(f"--max-memory-per-child={pool.max_memory_per_child_mb * 1024}")  # KiB
    return argv
