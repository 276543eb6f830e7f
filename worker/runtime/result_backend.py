"""Celery's Redis result backend, plus: a failed fan-out fails its job, listing every member.

Celery reports a failed chord header through the body's `link_error` callbacks, but once tasks
follow the chord (a chain, or `Task.replace`), the body becomes a chain whose own options carry no
`link_error`, and no callback runs (celery/celery#3709). Every chord failure does pass through
`chord_error_from_stack`, so the job is failed there, whatever shape the body has.
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend
from celery.canvas import maybe_signature

from jobrunner.tasks.builtin import is_chain
from jobrunner.worker.runtime.tracking import fail_fan_out


def _job_context(callback: Any, app: Any) -> dict[str, Any] | None:
    sig = maybe_signature(callback, app=app)
    while is_chain(sig) and sig.tasks:
        sig = maybe_signature(sig.tasks[0], app=app)
    kwargs = sig.get("kwargs") if isinstance(sig, dict) else None
    return kwargs.get("job") if isinstance(kwargs, dict) else None


class JobResultBackend(RedisBackend):  # type: ignore[misc]
    def chord_error_from_stack(self, callback: Any, exc: BaseException | None = None) -> Any:
        job = _job_context(callback, self.app)
        if job is not None:
            fail_fan_out(job["id"], exc)
        return super().chord_error_from_stack(callback, exc)
