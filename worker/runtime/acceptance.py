"""Which messages a worker runs: only jobrunner's own tasks, and a step only for a job that
exists, names the same pipeline and step, and has not finished.

A queue is writable by anyone holding the broker password, and Flower's HTTP API can apply any
registered task: without these checks a forged job context would run a step for a job nobody
submitted (reading and writing wherever its context points). The admission bootstep
(worker/runtime/consumer/admission.py) asks `refusal` for every step it receives; the transport
asks `jobrunner_task` for every message it fetches (worker/broker/transport.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery

from jobrunner.tasks.builtin import COLLECT_TASK, FAN_OUT_TASK, START_TASK
from jobrunner.tasks.job_task import JobTask
from jobrunner.tasks.step import STEP_TASK_PREFIX
from jobrunner.worker.runtime.remote_submit import REMOTE_TASKS
from jobrunner.worker.store.jobs import JobHead
from jobrunner.worker.validation import is_job_id

# The canvas tasks the compiler inserts, by the step name their job context carries.
CANVAS_TASKS = {"start": START_TASK, "collect": COLLECT_TASK, "map": FAN_OUT_TASK}


def jobrunner_tasks(app: Celery) -> Callable[[str], bool]:
    """Whether a task name is one a worker runs: a step or canvas task (a JobTask), or the
    submission and cancel tasks. Celery's built-ins (celery.map, celery.accumulate, ...) are
    not."""

    def allowed(name: str) -> bool:
        task = app.tasks.get(name)
        return name in REMOTE_TASKS or isinstance(task, JobTask)

    return allowed


def job_id(context: Any) -> str | None:
    """The id of the job a step's context names, if it is one (never a path, never a key)."""
    found = context.get("id") if isinstance(context, dict) else None
    return found if is_job_id(found) else None


def refusal(task: str, context: Any, record: JobHead | None) -> str | None:
    """Why a step message (task `task`, job context `context`) must not run for the job whose
    record is `record` (None: no such job); None if it may."""
    if not isinstance(context, dict) or not isinstance(context.get("id"), str):
        return f"{task} carries no job context"
    if not is_job_id(context["id"]):
        return f"job id {context['id'][:100]!r} is not a job id"
    step = context.get("step")
    if task not in (f"{STEP_TASK_PREFIX}{step}", CANVAS_TASKS.get(str(step))):
        return f"{task} does not run step {str(step)[:100]!r}"
    if record is None:
        return f"no job {context['id'][:100]!r}"
    if context.get("pipeline") != record.pipeline:
        return f"job {record.id} is of pipeline {record.pipeline}, not {context.get('pipeline')!r}"
    return None


def finished(record: JobHead) -> bool:
    """A step of a finished job (failed, cancelled, past its deadline) is not run: dropped with
    one log line, not set aside (its job's own members, not a stranger's)."""
    return record.finished
