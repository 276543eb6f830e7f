"""Job deadlines: a job unfinished past its deadline fails into the dead-letter store. And job
retries: a failed job of a pipeline with on_failure = "retry_job" is submitted again, as a new
job linked to it, once its delay passed (each by one worker only)."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.worker.consumer import Consumer

from jobrunner.config import JobrunnerError
from jobrunner.worker.client import Client
from jobrunner.worker.runtime.consumer.base import PeriodicStep, job_store
from jobrunner.worker.store.dead_letters import DeadLetterStore, fail_job

log = logging.getLogger("jobrunner.worker")


class DeadlineStep(PeriodicStep):
    def __init__(self, c: Consumer, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.jobs = job_store(c, self.settings)
        self.dead_letters = DeadLetterStore(self.jobs.redis, self.jobs.cipher)
        self.client = Client(self.settings, app=c.app)

    def start(self, c: Consumer) -> None:
        self.every(c, self.settings.reliability.reaper_interval_s, self.fail_overdue_jobs)
        self.every(c, self.settings.reliability.reaper_interval_s, self.retry_failed_jobs)

    def retry_failed_jobs(self) -> None:
        now = time.time()
        for job_id in self.jobs.take_due_retries(now):
            record = self.jobs.get(job_id)
            if record is None:
                continue
            try:
                payload = record.payload
            except JobrunnerError as error:
                # Sealed under a key this host lacks: the retry goes back, due, for a host that
                # holds the key (every host of a fleet should), rather than being lost.
                self.jobs.return_retry(job_id, now)
                log.error("job %s: retry left for a host with its payload key: %s", job_id, error)
                continue
            new = self.client.submit(
                record.pipeline, payload, tier=record.tier, retry_of=job_id, cache=record.cache
            )
            log.warning("job %s failed; attempt %d is job %s", job_id, record.attempt + 1, new.id)

    def fail_overdue_jobs(self) -> None:
        for job_id in self.jobs.overdue(time.time()):
            self._fail_overdue(job_id)

    def _fail_overdue(self, job_id: str) -> None:
        """Fail one overdue job. Its payload is not opened (fail_job copies it sealed), so a
        record sealed under a key this host lacks is failed like any other."""
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
