"""Paused pipelines, in a worker: a step of a paused pipeline is parked as the worker receives
it, not run (worker/store/control.py says why parking, not skipping, and how resuming works).

Each worker reads the paused pipelines on its admission tick, so a pause takes effect within
one tick; a step it parks just after a resume (its list a tick old) is put back by its own next
tick, which sees that pipeline resumed.
"""

from __future__ import annotations

import logging

import redis
from celery.worker.request import Request

from jobrunner.worker.broker.keys import PARKED
from jobrunner.worker.broker.transport import park
from jobrunner.worker.store.control import PauseStore

log = logging.getLogger("jobrunner.worker")


class PipelinePauses:
    def __init__(self, broker: redis.Redis) -> None:
        self.store = PauseStore(broker)
        self.paused: set[str] = set()
        self.parked: set[str] = set()  # pipelines this worker parked steps of

    def refresh(self) -> None:
        """Read the paused pipelines; put back what this worker parked of resumed ones."""
        self.paused = self.store.paused_pipelines()
        for pipeline in self.parked - self.paused:
            self.store.unpark(pipeline)
        self.parked &= self.paused

    def park_if_paused(self, channel: object, request: Request) -> bool:
        """Park `request` if its pipeline is paused (the caller then lets go of it)."""
        job = request.kwargs.get("job", {}) if isinstance(request.kwargs, dict) else {}
        pipeline = job.get("pipeline")
        if pipeline not in self.paused:
            return False
        if park(channel, request.message.delivery_tag, PARKED + pipeline):
            self.parked.add(pipeline)
            log.info("parked %s[%s]: pipeline %s is paused", request.name, request.id, pipeline)
        return True
