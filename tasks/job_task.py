"""`JobTask`: the Celery task base of every step and canvas task; runs the middleware hooks."""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.exceptions import Ignore, Retry

from jobrunner.tasks.middleware import installed
from jobrunner.tasks.retry import RetryPolicy


class JobTask(Task):  # type: ignore[misc]
    """A task that belongs to a job: its kwargs carry `job`, the job context."""

    def _retry_countdown(self, job: dict[str, Any], error: BaseException) -> float | None:
        policy = job.get("retry")
        if policy is None or self.request.called_directly:
            return None
        return RetryPolicy.model_validate(policy).countdown(error, self.request.retries)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        job = kwargs.get("job")
        if job is None:  # called outside a job (a unit test, a plain .delay()): no hooks
            return super().__call__(*args, **kwargs)
        hooks = installed(self.app)
        for hook in hooks:
            hook.before_task(job)
        try:
            result = super().__call__(*args, **kwargs)
        except (Ignore, Retry):  # replaced by a canvas, or retried: neither ends the task
            raise
        except BaseException as error:
            countdown = self._retry_countdown(job, error)
            if countdown is not None:
                for hook in hooks:
                    hook.after_retry(job, error)
                # Re-sent to the queue it came from (the job's tier), due after the countdown.
                raise self.retry(exc=error, countdown=countdown, max_retries=None) from error
            for hook in hooks:
                hook.after_failure(job, error)
            raise
        for hook in hooks:
            hook.after_success(job, result)
        return result
