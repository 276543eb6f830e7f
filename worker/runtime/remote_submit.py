"""`jobrunner.submit` (and `jobrunner.cancel`): submit (or cancel) a job by sending one Celery
task, for applications that are not Python. Flower's HTTP API calls it
(`POST /api/task/async-apply/jobrunner.submit`), and any Celery client can send it by name. It
validates and enqueues the job exactly as `Client.submit` does, and its result is the new job's
id (a bad pipeline, tier or payload fails the task with one line).

Given an API `token`, the submission is held to that token's role and scope, exactly as the HTTP
API holds it (worker/store/tokens.py); a refusal fails the task and is audited. Without one,
the sender is trusted as an operator: Flower's password is an operator credential.

It is sent to the high tier's queue, whatever the job's tier: submitting is cheap, and a high job
must not wait behind a backlog before it even exists.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from celery import Celery, Task, shared_task

from jobrunner.config import JobrunnerError, get_settings
from jobrunner.worker.client import Client
from jobrunner.worker.store.audit import DENIED, FAILED, OK, audit_log
from jobrunner.worker.store.tokens import SUBMIT, AuthError, Denied, TokenStore

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
    token: str | None = None,
) -> str:
    """Enqueue a job of `pipeline` at `tier` (default: the configured default tier); its id."""
    client = _client(self.app)
    audit = audit_log(client.store.redis, client.settings)
    tier = tier or client.settings.default_tier
    who = "celery:jobrunner.submit (operator)"
    if token is not None:
        try:
            checked = TokenStore(client.store.redis).authenticate(token)
            who = checked.who
            checked.check(SUBMIT, pipeline, tier)
        except (AuthError, Denied) as error:
            audit.record(who, SUBMIT, pipeline, DENIED, "celery", str(error))
            raise
    job = client.submit(pipeline, payload, tier=tier, idempotency_key=idempotency_key)
    audit.record(who, SUBMIT, job.id, OK, "celery", f"{pipeline} at {tier}")
    return job.id


CANCEL_TASK = "jobrunner.cancel"


@shared_task(name=CANCEL_TASK, base=SubmitTask, bind=True, ignore_result=False)
def cancel(self: Task, job_id: str, terminate: bool = False, by: str | None = None) -> str:
    """Cancel a job as `Client.cancel` does (Flower: `POST /api/task/async-apply/jobrunner.cancel`
    with `{"args": [JOB_ID]}`); its final state. An unknown or finished job fails the task. The
    sender is trusted as an operator (as `jobrunner.submit` without a token); audited either way."""
    client = _client(self.app)
    audit = audit_log(client.store.redis, client.settings)
    who = "celery:jobrunner.cancel (operator)"
    try:
        record = client.cancel(job_id, terminate=terminate, by=by or "remote")
    except JobrunnerError as error:
        audit.record(who, "cancel", job_id, FAILED, "celery", str(error))
        raise
    audit.record(who, "cancel", job_id, OK, "celery", str(record.error))
    return record.state


# The tasks a client may send by name that are not steps of a job (no job context to check).
REMOTE_TASKS = frozenset({SUBMIT_TASK, CANCEL_TASK})
