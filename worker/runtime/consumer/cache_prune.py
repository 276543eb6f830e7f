"""Cached steps' upkeep: every `data.cache_prune_interval_s`, each worker does what `jobrunner
cache prune` does (worker/store/step_cache.py), so nobody has to schedule it: expired entries
leave the index, and this host's cached files and remembered input scans that nothing uses any
more leave its disk. Every worker runs it, because cached files live on each host's own disk;
two prunes at once are harmless (each removal tolerates the other's)."""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer

from jobrunner.worker.runtime.consumer.base import PeriodicStep, job_store
from jobrunner.worker.store.step_cache import prune


class CachePruneStep(PeriodicStep):
    def __init__(self, c: Consumer, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.jobs = job_store(c, self.settings)

    def start(self, c: Consumer) -> None:
        if self.settings.data.cache_prune_interval_s > 0:
            self.every(c, self.settings.data.cache_prune_interval_s, self.prune_cache)

    def prune_cache(self) -> None:
        prune(self.jobs.redis, self.settings.data_dir.resolve())
