"""Job tracking: mark a job started, finished with its result, or failed with every failure.

A step that fails for good (its retry policy, if any, spent) outside any parallel group fails its
job at once. Inside a group, each failure is recorded, and once all members ended the result
backend calls `fail_fan_out` (see worker/result_backend.py), which lists every failed member
rather than Celery's first one. Every failed job lands in the dead-letter store.
"""

from __future__ import annotations

from typing import Any

from config import get_settings
from tasks.middleware import Middleware, install
from worker.broker import resolve
from worker.dead_letter import DeadLetterStore, fail_job
from worker.jobs import SUCCESS, JobStore, open_store

_store: JobStore | None = None


def store() -> JobStore:
    """This process's job store, opened on first use (after the pool forked)."""
    global _store
    if _store is None:
        _store = open_store(resolve(get_settings()))
    return _store


def dead_letters() -> DeadLetterStore:
    return DeadLetterStore(store().redis)


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class JobTracking(Middleware):
    def before_task(self, job: dict[str, Any]) -> None:
        if job.get("first"):
            store().mark_started(job["id"])

    def after_success(self, job: dict[str, Any], result: Any) -> None:
        if job.get("final"):
            store().finish(job["id"], SUCCESS, result=result)

    def after_failure(self, job: dict[str, Any], error: BaseException) -> None:
        store().add_failure(job["id"], job["step"], error)
        if not job.get("in_header"):
            summary = f"step {job['step']} failed: {describe(error)}"
            fail_job(
                store(), dead_letters(), job["id"], step=job["step"], summary=summary, error=error
            )

    def after_retry(self, job: dict[str, Any], error: BaseException) -> None:
        store().add_retry(job["id"])


def fail_fan_out(job_id: str, error: BaseException | None) -> None:
    """Fail the job of a fan-out (chord) whose members ended and some failed: every recorded
    failure is listed, where Celery's own error names only the first."""
    failures = store().failures(job_id)
    if failures:
        listed = "; ".join(f"{f['step']} ({f['error']})" for f in failures)
        message = f"{len(failures)} parallel member(s) failed: {listed}"
    else:  # killed members run no hook; Celery's own error names the first one
        message = f"parallel members failed: {describe(error) if error else 'unknown error'}"
    step = failures[0]["step"] if failures else ""
    fail_job(store(), dead_letters(), job_id, step=step, summary=message, error=error)


install(JobTracking())
