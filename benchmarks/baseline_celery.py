"""The baseline: a plain Celery app with Celery's default settings, on jobrunner's Redis.

Only the broker and result URLs are set (JSON is already Celery's default serializer). The
*tuned* variant adds exactly the three settings the shared FINDINGS measured for priority:
prefetch 1, acks_late and `queue_order_strategy=priority`. Workers run it with

    celery -A benchmarks.baseline_celery worker -c N -Q queues      (BENCH_CELERY_TUNED=1: tuned)

The tasks mirror benchmarks/steps.py, so both systems run the same job shapes.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

from jobrunner.config import get_settings
from jobrunner.worker.broker.connection import resolve

TUNED_VARIABLE = "BENCH_CELERY_TUNED"


def tuned_settings() -> dict[str, Any]:
    """What a Celery user would set for priority on Redis (see shared FINDINGS)."""
    return {
        "worker_prefetch_multiplier": 1,
        "task_acks_late": True,
        "broker_transport_options": {"queue_order_strategy": "priority"},
    }


def make_app(tuned: bool) -> Celery:
    url = resolve(get_settings()).broker_url
    baseline = Celery("baseline", broker=url, backend=url, set_as_current=False)
    if tuned:
        baseline.conf.update(tuned_settings())
    return baseline


app = make_app(os.environ.get(TUNED_VARIABLE) == "1")


@app.task(name="baseline.noop", ignore_result=True)
def noop() -> None:
    """A job whose result nobody reads: a Celery user would not store one."""


@app.task(name="baseline.echo")
def echo() -> int:
    return 1


@app.task(name="baseline.pause")
def pause(ms: int) -> float:
    """Holds a process for `ms` milliseconds; returns when it started, for the wait."""
    started = time.time()
    time.sleep(ms / 1000)
    return started


@app.task(name="baseline.count")
def count(upstream: int = 0) -> int:
    """A chain link or chord member that passes data on."""
    return upstream + 1


@app.task(name="baseline.gather")
def gather(results: list[int]) -> list[int]:
    """A chord body: fan-in of every member's result, as jobrunner's `collect` does."""
    return results
