"""What jobrunner's consumer bootsteps share: the settings, and periodic work on the consumer's
timer that a failure never stops."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import bootsteps
from celery.worker.consumer import Consumer

from jobrunner.config import Settings, get_settings
from jobrunner.worker.broker import connection
from jobrunner.worker.store.jobs import JobStore, open_store

log = logging.getLogger("jobrunner.worker")
# Each step starts after Celery's Tasks step, which owns the task consumer and its channel.
AFTER_TASKS = "celery.worker.consumer.tasks:Tasks"


def worker_pool(c: Consumer, jobrunner_pool: str | None) -> str:
    """The jobrunner pool this worker runs: its --jobrunner-pool, else its node name's prefix."""
    return jobrunner_pool or c.hostname.split("@", 1)[0]


def job_store(c: Consumer, settings: Settings) -> JobStore:
    """The worker's job store on the result Redis, made once per worker and shared by its
    bootsteps, so they share one connection pool (the heartbeat and dead letters use its
    client too)."""
    store: JobStore | None = getattr(c, "jobrunner_store", None)
    if store is None:
        store = c.jobrunner_store = open_store(settings)
    return store


class PeriodicStep(bootsteps.StartStopStep):
    """A consumer bootstep whose work runs every so often on the consumer's timer."""

    requires = (AFTER_TASKS,)

    def __init__(self, c: Consumer, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.settings = connection.resolve(get_settings())
        self._timers: list[Any] = []

    def stop(self, c: Consumer) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers = []

    def every(self, c: Consumer, interval_s: float, work: Callable[[], object]) -> None:
        """Run `work` every `interval_s`; a failure (a Redis hiccup) is logged and the next run
        retries, so it never kills the event loop."""

        def guarded() -> None:
            try:
                work()
            except Exception:
                log.exception("periodic %s failed", getattr(work, "__name__", "work"))

        self._timers.append(c.timer.call_repeatedly(interval_s, guarded))
