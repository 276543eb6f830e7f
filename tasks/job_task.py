"""`JobTask`: the Celery task base of every step and canvas task; runs the middleware hooks."""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.exceptions import Ignore, Retry

from tasks.middleware import installed


class JobTask(Task):  # type: ignore[misc]
    """A task that belongs to a job: its kwargs carry `job`, the job context."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        job = kwargs.get("job")
        if job is None:  # called outside a job (a unit test, a plain .delay()): no hooks
            return super().__call__(*args, **kwargs)
        hooks = installed()
        for hook in hooks:
            hook.before_task(job)
        try:
            result = super().__call__(*args, **kwargs)
        except (Ignore, Retry):  # replaced by a canvas, or retried: neither ends the task
            raise
        except BaseException as error:
            for hook in hooks:
                hook.after_failure(job, error)
            raise
        for hook in hooks:
            hook.after_success(job, result)
        return result
