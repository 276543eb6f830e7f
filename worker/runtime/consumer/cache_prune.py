"""Cached steps' upkeep: every `data.cache_prune_interval_s`, each worker does what `jobrunner
cache prune` does (worker/store/step_cache.py), so nobody has to schedule it: expired entries
leave the index, and this host's cached files and remembered input scans that nothing uses any
more leave its disk. Every worker runs it, because cached files live on each host's own disk;
two prunes at once are harmless (each removal tolerates the other's).

A prune reads every entry and walks the cache's files, which takes seconds for a large cache: it
runs in a thread, so the consumer's event loop (which takes the next high-tier job) never waits
on it; the timer only starts it, and never a second one while one runs."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.worker.consumer import Consumer

from jobrunner.worker.runtime.consumer.base import PeriodicStep, job_store
from jobrunner.worker.store.step_cache import prune

log = logging.getLogger("jobrunner.worker")


class CachePruneStep(PeriodicStep):
    def __init__(self, c: Consumer, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.jobs = job_store(c, self.settings)
        self._running: threading.Thread | None = None

    def start(self, c: Consumer) -> None:
        if self.settings.data.cache_prune_interval_s > 0:
            self.every(c, self.settings.data.cache_prune_interval_s, self.start_prune)

    def start_prune(self) -> None:
        """Start a prune in its own thread, unless the last one is still running."""
        if self._running is not None and self._running.is_alive():
            return
        self._running = threading.Thread(target=self.prune_cache, name="cache-prune", daemon=True)
        self._running.start()

    def prune_cache(self) -> None:
        try:
            pruned = prune(self.jobs.redis, self.settings.data_dir.resolve())
        except Exception:  # a Redis hiccup or a vanished dir: the next interval retries
            log.exception("cache prune failed")
            return
        if any(pruned.as_dict().values()):
            log.info("cache prune removed %s", pruned.as_dict())
