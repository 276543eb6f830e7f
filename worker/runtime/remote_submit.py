"""`jobrunner.submit` (and `jobrunner.cancel`): submit (or cancel) a job by sending one Celery
task, for applications that are not Python. Flower's HTTP API calls it
(`POST /api/task/async-apply/jobrunner.submit`), and any Celery client can send it by name. It
validates and enqueues the job exactly as `Client.submit` does, and its result is the new job's
id (a bad pipeline, tier or payload fails the task with one line).

It is sent to the high tier's queue, whatever the job's tier: submitting is cheap, and a high job
must not wait behind a backlog before it even exists.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from celery import Celery, Task, shared_task

from jobrunner.config import get_settings
from jobrunner.worker.client import Client

SUBMIT_TASK = "jobrunner.submit"


@cache
def _client(app: Celery) -> Client:
    """One client per process (and app): pipelines are loaded once, not per submission."""
    return Client(app=app)


class SubmitTask(Task):  # type: ignore[misc]
    """Sent to the high queue unless the sender names another."""

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        options.setdefault("queue", get_settings().queue("high"))
        return super().apply_async(args, kwargs, **options)


@shared_task(name=SUBMIT_TASK, base=SubmitTask, bind=True, ignore_result=False)
def submit(
    self: Task,
    pipeline: str,
    payload: dict[str, Any] | None = None,
    tier: str | None = None,
    idempotency_key: str | None = None,
) -> str:
    """Enqueue a job of `pipeline` at `tier` (default: the configured default tier); its id."""
    job = _client(self.app).submit(pipeline, payload, tier=tier, idempotency_key=idempotency_key)
    return job.id


CANCEL_TASK = "jobrunner.cancel"


@shared_task(name=CANCEL_TASK, base=SubmitTask, bind=True, ignore_result=False)
def cancel(self: Task, job_id: str, terminate: bool = False, by: str | None = None) -> str:
    """Cancel a job as `Client.cancel` does (Flower: `POST /api/task/async-apply/jobrunner.cancel`
    with `{"args": [JOB_ID]}`); its final state. An unknown or finished job fails the task."""
    return _client(self.app).cancel(job_id, terminate=terminate, by=by or "remote").state
