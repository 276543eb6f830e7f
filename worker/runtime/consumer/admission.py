"""What a worker takes: every message it receives passes the delivery counter (poison is
dead-lettered), the fleet-wide limits (a step starts with a slot of each shared resource it uses,
worker/runtime/limits.py) and then the admission gate (a step starts when the host has the
headroom it declares, worker/runtime/admission.py); the consumer fetches only while the gate
admits."""

from __future__ import annotations

import logging
import signal
import time
from types import SimpleNamespace
from typing import Any

from celery.signals import task_rejected, task_revoked, task_unknown
from celery.worker import state
from celery.worker.consumer import Consumer
from celery.worker.request import Request

from jobrunner.tasks.step import needs_by_task
from jobrunner.worker.broker import connection
from jobrunner.worker.broker.keys import JOB
from jobrunner.worker.broker.queues import QUEUED_AT_HEADER
from jobrunner.worker.broker.transport import (
    fetched_job,
    gate_fetching,
    look_up_jobs,
    message_text,
    screen_tasks,
)
from jobrunner.worker.runtime import acceptance, tracking
from jobrunner.worker.runtime.admission import AdmissionGate, DoesNotFit
from jobrunner.worker.runtime.consumer.base import PeriodicStep, job_store
from jobrunner.worker.runtime.limits import FleetLimits
from jobrunner.worker.runtime.pauses import PipelinePauses
from jobrunner.worker.store import heartbeat
from jobrunner.worker.store.dead_letters import DeadLetterStore, fail_job
from jobrunner.worker.store.deliveries import DeliveryCounter
from jobrunner.worker.store.jobs import JobHead, job_head
from jobrunner.worker.store.set_aside import SetAsideStore

log = logging.getLogger("jobrunner.worker")


def _step(request: Request) -> str:
    """The pipeline step a request runs (its task name outside a job)."""
    return str(request.kwargs.get("job", {}).get("step", request.name))


class Poison(Exception):
    """A step kept being delivered without finishing: its process died every time."""


class Revoked(Exception):
    """A step was revoked or terminated before it finished."""


class AdmissionStep(PeriodicStep):
    def __init__(self, c: Consumer, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.jobs = job_store(c, self.settings)
        self.redis = self.jobs.redis
        self.dead_letters = DeadLetterStore(self.redis, self.jobs.cipher)
        self.set_aside = SetAsideStore(self.redis)
        self.deliveries = DeliveryCounter(
            self.redis,
            self.settings.reliability.max_deliveries,
            self.settings.limits.result_expires,
        )
        self.gate = AdmissionGate(
            self.settings.admission, needs_by_task(), c.on_task_request, self._reject
        )
        self.limits = FleetLimits(
            self.redis,
            self.settings.effective_result_url,
            self.settings.limits.resources,
            self.settings.reliability.lease_s,
            max_held=lambda: c.pool.num_processes,
        )
        self.pauses = PipelinePauses(connection.client(self.settings.broker_url))
        self.consumer = c
        # Before the Tasks step builds its strategies, which capture the handler.
        c.on_task_request = self.receive
        c.jobrunner_gate = self.gate  # for the autoscaler and the heartbeat
        # What Celery itself refuses (an invalid eta or expires, an unknown task), it rejects
        # with a log line only; it is set aside too.
        for refused in (task_rejected, task_unknown):
            refused.connect(self._refused_by_celery, sender=c, weak=False)
        # Sent by the task, so not filtered by sender; one consumer per worker process.
        task_revoked.connect(self._revoked, weak=False, dispatch_uid="jobrunner.revoked")
        self.hostname = c.hostname

    def start(self, c: Consumer) -> None:
        gate_fetching(c.task_consumer.channel, self.admitting)
        screen_tasks(c.task_consumer.channel, acceptance.jobrunner_tasks(c.app))
        if self.settings.effective_result_url == self.settings.broker_url:  # records beside queues
            look_up_jobs(c.task_consumer.channel, JOB)
        self.tick()
        self.every(c, self.settings.admission.check_interval_s, self.tick)

    def admitting(self) -> bool:
        """Asked before each fetch: only while the gate admits."""
        if self.gate.held:
            self.gate.retry_held()
        if self.limits.leased or self.limits.held:
            self.limits.retry_held(self.gate.submit)
        return not self.gate.paused

    def receive(self, request: Request) -> None:
        """The consumer's task handler: refuse steps of no (or another) job, skip those of a
        finished job, stop poison, then let the admission gate decide."""
        if request.name not in acceptance.REMOTE_TASKS and not self._accepted(request):
            return
        redelivered = bool(request.delivery_info.get("redelivered"))
        count = self.deliveries.exceeded(request.id, redelivered)
        if count is not None:
            reason = (
                f"step {_step(request)} was delivered {count} times without finishing "
                "(its process died each time)"
            )
            self._drop(request, reason, Poison(reason), deliveries=count)
            return
        if self.pauses.park_if_paused(self.consumer.task_consumer.channel, request):
            request.reject(requeue=False)  # parked already: nothing left to remove
            state.task_ready(request)
            return
        if self.limits.admit(request):  # else held until a fleet-wide slot frees
            self.gate.submit(request)

    def _accepted(self, request: Request) -> bool:
        """Whether the step may run for its job; if not, it leaves the queue with one line."""
        context = request.kwargs.get("job")
        job_id = acceptance.job_id(context)
        record = self._head(request, job_id) if job_id else None
        reason = acceptance.refusal(request.name, context, record)
        if reason is not None:
            self._put_aside(request.message, f"{request.name}[{request.id}]", reason)
        elif record is not None and acceptance.finished(record):
            log.info(
                "skipping %s[%s]: job %s already %s",
                request.name,
                request.id,
                record.id,
                record.state,
            )
            tracking.record_drop(
                self.jobs, context, _skipped(request, context, record.state), record.state
            )
        else:
            return True
        request.reject(requeue=False)
        state.task_ready(request)
        return False

    def _head(self, request: Request, job_id: str) -> JobHead | None:
        """The step's job, as the fetch looked it up (no round trip), else read now."""
        channel = self.consumer.task_consumer.channel
        looked_up = fetched_job(channel, request.message.delivery_tag)
        if looked_up is None or looked_up[0] != job_id:  # none, or a header naming another job
            return self.jobs.head(job_id)
        return job_head(*looked_up)

    def _refused_by_celery(self, message: Any, exc: BaseException | None = None, **_: Any) -> None:
        reason = f"refused by Celery: {type(exc).__name__}: {exc}" if exc else "refused by Celery"
        self._put_aside(message, "a message", reason)

    def _revoked(
        self,
        request: Any = None,
        terminated: bool = False,
        signum: Any = None,
        expired: bool = False,
        **_: Any,
    ) -> None:
        """A step revoked (by `celery control revoke`, Flower, an expiry) fails its job into the
        dead-letter store, unless the job finished first (a cancel, say: first writer wins)."""
        context = (getattr(request, "kwargs", None) or {}).get("job")  # a task Context
        job_id = acceptance.job_id(context)
        if job_id is None:
            return
        step = str(context.get("step"))
        how = "it expired" if expired else "before it ran"
        if terminated:
            how = f"terminated by {signal.Signals(int(signum)).name if signum else 'a signal'}"
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        summary = f"revoked: step {step} {how}, on {self.hostname} at {when}"
        fail_job(
            self.jobs,
            self.dead_letters,
            job_id,
            step=step,
            summary=summary,
            error=Revoked(summary),
        )

    def _put_aside(self, message: Any, what: str, reason: str) -> None:
        """Keep a refused message in the set-aside store, with one log line."""
        queue = message.delivery_info.get("routing_key") or ""
        entry = self.set_aside.add(message_text(message), reason, queue)
        log.error("%s set aside as entry %s: %s", what, entry, reason)

    def tick(self) -> None:
        was_paused = self.gate.paused
        try:
            self.pauses.refresh()
            self.limits.renew()
            self.gate.tick(heartbeat.reserve_override(self.redis))
        except Exception:  # never let a Redis hiccup kill the event loop; next tick retries
            log.exception("admission tick failed")
        if self.gate.paused != was_paused:
            log.info(
                "admission %s%s",
                "paused: " if self.gate.paused else "resumed",
                self.gate.reason or "",
            )

    def _reject(self, request: Request, reason: str) -> None:
        """A step that can never fit this host."""
        self._drop(request, f"step {_step(request)} rejected: {reason}", DoesNotFit(reason))

    def _drop(self, request: Request, summary: str, error: Exception, deliveries: int = 1) -> None:
        """Fail the step's job into the dead-letter store and drop the message for good."""
        job = request.kwargs.get("job", {})
        log.error("dropping %s[%s]: %s", request.name, request.id, summary)
        if "id" in job:
            self.jobs.add_failure(job["id"], _step(request), error)
            fail_job(
                self.jobs,
                self.dead_letters,
                job["id"],
                step=_step(request),
                summary=summary,
                error=error,
                deliveries=deliveries,
            )
        request.reject(requeue=False)
        state.task_ready(request)


def _skipped(request: Request, context: dict[str, Any], state: str) -> dict[str, Any]:
    """The step-tree entry of a step skipped on receipt (its job had finished), as the pool's
    entry for one dropped there (worker/runtime/tracking.py), from the request's headers."""
    headers = request.request_dict
    received = SimpleNamespace(
        id=request.id,
        task=request.name,
        hostname=request.hostname,
        retries=headers.get("retries", 0),
        **{QUEUED_AT_HEADER: headers.get(QUEUED_AT_HEADER)},
    )
    return tracking.step_entry(context, received, state, time.time())
