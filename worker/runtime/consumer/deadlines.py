"""Job deadlines: a job unfinished past its deadline fails into the dead-letter store."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.worker.consumer import Consumer

from jobrunner.worker.runtime.consumer.base import PeriodicStep, job_store
from jobrunner.worker.store.dead_letters import DeadLetterStore, fail_job

log = logging.getLogger("jobrunner.worker")


class DeadlineStep(PeriodicStep):
    def __init__(self, c: Consumer, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.jobs = job_store(c, self.settings)
        self.dead_letters = DeadLetterStore(self.jobs.redis)

    def start(self, c: Consumer) -> None:
        self.every(c, self.settings.reliability.reaper_interval_s, self.fail_overdue_jobs)

    def fail_overdue_jobs(self) -> None:
        for job_id in self.jobs.overdue(time.time()):
            record = self.jobs.get(job_id)
            state_now = record.state if record else "unknown"
            deadline_s = self.settings.reliability.job_deadline_s
            if record is not None and record.deadline_at is not None:  # the job's own deadline
                deadline_s = record.deadline_at - record.submitted_at
            summary = (
                f"deadline passed: not finished within {deadline_s:g}"
                f" s of submission (it was {state_now})"
            )
            if fail_job(self.jobs, self.dead_letters, job_id, step="", summary=summary):
                log.error("job %s: %s", job_id, summary)
