"""What a worker takes: every message it receives passes the delivery counter (poison is
dead-lettered), the fleet-wide limits (a step starts with a slot of each shared resource it uses,
worker/runtime/limits.py) and then the admission gate (a step starts when the host has the
headroom it declares, worker/runtime/admission.py); the consumer fetches only while the gate
admits."""

from __future__ import annotations

import logging
from typing import Any

from celery.worker import state
from celery.worker.consumer import Consumer
from celery.worker.request import Request

from jobrunner.tasks.step import needs_by_task
from jobrunner.worker.broker import connection
from jobrunner.worker.broker.transport import gate_fetching
from jobrunner.worker.runtime.admission import AdmissionGate, DoesNotFit
from jobrunner.worker.runtime.consumer.base import PeriodicStep, job_store
from jobrunner.worker.runtime.limits import FleetLimits
from jobrunner.worker.runtime.pauses import PipelinePauses
from jobrunner.worker.store import heartbeat
from jobrunner.worker.store.dead_letters import DeadLetterStore, fail_job
from jobrunner.worker.store.deliveries import DeliveryCounter

log = logging.getLogger("jobrunner.worker")


def _step(request: Request) -> str:
    """The pipeline step a request runs (its task name outside a job)."""
    return str(request.kwargs.get("job", {}).get("step", request.name))


class Poison(Exception):
    """A step kept being delivered without finishing: its process died every time."""


class AdmissionStep(PeriodicStep):
    def __init__(self, c: Consumer, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.jobs = job_store(c, self.settings)
        self.redis = self.jobs.redis
        self.dead_letters = DeadLetterStore(self.redis, self.jobs.cipher)
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

    def start(self, c: Consumer) -> None:
        gate_fetching(c.task_consumer.channel, self.admitting)
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
        """The consumer's task handler: stop poison, then let the admission gate decide."""
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
