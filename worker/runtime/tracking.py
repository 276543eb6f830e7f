"""Job tracking: mark a job started, finished with its result, or failed with every failure.

A step that fails for good (its retry policy, if any, spent) outside any parallel group fails its
job at once. Inside a group, each failure is recorded, and once all members ended the result
backend calls `fail_fan_out` (see worker/runtime/result_backend.py), which lists every failed member
rather than Celery's first one. Every failed job lands in the dead-letter store.
"""

from __future__ import annotations

import time
from typing import Any

from celery import current_task
from celery.exceptions import Ignore

from jobrunner.config import get_settings
from jobrunner.tasks.cache import CACHED
from jobrunner.tasks.middleware import Middleware
from jobrunner.worker.broker import scripts
from jobrunner.worker.broker.connection import resolve
from jobrunner.worker.broker.queues import QUEUED_AT_HEADER, expand_link
from jobrunner.worker.runtime import sent_events
from jobrunner.worker.store import step_stats
from jobrunner.worker.store.dead_letters import DeadLetterStore, fail_job
from jobrunner.worker.store.jobs import (
    CANCELLED,
    FAILURE,
    FINAL_STATES,
    SUCCESS,
    JobStore,
    open_store,
)

_store: JobStore | None = None


def store() -> JobStore:
    """This process's job store, opened on first use (after the pool forked)."""
    global _store
    if _store is None:
        _store = open_store(resolve(get_settings()))
    return _store


def dead_letters() -> DeadLetterStore:
    return DeadLetterStore(store().redis, store().cipher)


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


_started: dict[str, float] = {}  # task id -> when this process started running it


def _request() -> Any | None:
    """The running task's request (hooks run inside the task call), if there is one."""
    request = current_task.request if current_task else None
    return request if request is not None and request.id else None


def step_entry(
    job: dict[str, Any], request: Any, state: str, started_at: float, error: str | None = None
) -> dict[str, Any]:
    """What `status JOB_ID` shows of one task run: which step, where, its outcome, and when it
    was queued, started and ended. Written once, when the run ends (one round trip per step)."""
    queued_at = getattr(request, QUEUED_AT_HEADER, None)
    entry = {
        "task_id": request.id,
        "step": job["step"],
        "task": getattr(request, "task", None),
        "state": state,
        "worker": getattr(request, "hostname", None),
        "retries": getattr(request, "retries", 0),
        "queued_at": float(queued_at) if queued_at is not None else None,
        "started_at": started_at,
        "finished_at": time.time(),
    }
    if error:
        entry["error"] = error
    if job.get(CACHED):  # reused an earlier run's output (tasks/cache.py)
        entry["cached"] = True
    return entry


def _ended_run(job: dict[str, Any], state: str, error: str | None = None) -> dict[str, Any] | None:
    """The step-tree entry of the task run that just ended (None outside a task)."""
    request = _request()
    if request is None:
        return None
    return step_entry(job, request, state, _started.pop(request.id, time.time()), error)


_riders: dict[str, list[scripts.Call]] = {}  # task id -> writes sent with the run's end


def ride_with_run_end(call: scripts.Call) -> None:
    """Send `call` with the running task's own end write (its step-tree entry, or its job's
    outcome), in one round trip; outside a task, now. For middleware named before this one
    (their after-hooks run first)."""
    request = _request()
    if request is None:
        call.run()
    else:
        _riders.setdefault(request.id, []).append(call)


def _take_riders() -> list[scripts.Call]:
    request = _request()
    return _riders.pop(request.id, []) if request is not None else []


def _record_step(job: dict[str, Any], state: str, error: str | None = None) -> None:
    entry = _ended_run(job, state, error)
    if entry is not None:
        store().add_step(job["id"], entry, _take_riders())


def record_drop(
    jobs: JobStore, job: dict[str, Any], entry: dict[str, Any] | None, state: str
) -> None:
    """A step not run because its job had finished (`state`): shown in the step tree in that
    state and, for a cancelled job, counted as a cancelled run of its step (the step metrics
    middleware never sees it: it never started)."""
    if entry is not None:
        jobs.add_step(job["id"], entry)
    if state == CANCELLED:
        step_stats.count(jobs.redis, job["pipeline"], job["step"], "cancelled")


def start_or_drop(job: dict[str, Any]) -> None:
    """Start a step, unless its job has finished: then the step is not run. The admission
    bootstep skips one whose job had finished when the worker received it
    (`acceptance.finished`); this catches a job that finished while its step waited in the
    worker (admission, a fleet-wide limit, the pool). `Client.cancel` finishes the job CANCELLED
    before revoking anything, so each of its steps still waiting (chord members included) is
    dropped here: recorded in the step tree, then ended IGNORED (Celery's outcome for a task that
    chose not to run: acknowledged, never dead-lettered). The check and the job's start stamp
    are one round trip."""
    state = store().start_step(job["id"], first=bool(job.get("first")))
    if state in FINAL_STATES:
        record_drop(store(), job, _ended_run(job, state), state)
        raise Ignore(f"job {job['id']} already {state}")


class JobTracking(Middleware):
    def before_task(self, job: dict[str, Any]) -> None:
        start_or_drop(job)
        request = _request()
        if request is not None:
            _started[request.id] = time.time()
            sent_events.follow(current_task.app)

    def after_success(self, job: dict[str, Any], result: Any) -> None:
        request = _request()
        if request is not None and request.chain:  # Celery sends the next link after this
            expand_link(request.chain[-1], job)
        if job.get("final"):  # the last run, its figures and the outcome in one round trip
            entry = _ended_run(job, SUCCESS)
            store().finish(job["id"], SUCCESS, result=result, step=entry, riders=_take_riders())
        else:
            _record_step(job, SUCCESS)

    def after_failure(self, job: dict[str, Any], error: BaseException) -> None:
        _record_step(job, FAILURE, describe(error))
        store().add_failure(job["id"], job["step"], error)
        if not job.get("in_header"):
            summary = f"step {job['step']} failed: {describe(error)}"
            fail_job(
                store(), dead_letters(), job["id"], step=job["step"], summary=summary, error=error
            )

    def after_retry(self, job: dict[str, Any], error: BaseException) -> None:
        _record_step(job, "RETRY", describe(error))
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
