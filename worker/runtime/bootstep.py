"""The worker's jobrunner bootstep: every message a worker receives passes the delivery counter
(poison is dead-lettered) and the admission gate (it starts when the host has the headroom); on
the consumer's timer the worker renews the leases of what it holds, publishes its heartbeat,
fails jobs past their deadline, and, in pools consuming low or medium, runs the starvation guard.

It runs in each worker's main process, in Celery's event loop. Several workers doing the same
periodic work is safe: lease renewal is per worker, and failing a job or promoting a message is
atomic in Redis.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from celery import bootsteps
from celery.worker import state
from celery.worker.consumer import Consumer
from celery.worker.request import Request

from jobrunner.config import TIERS, get_settings
from jobrunner.tasks.step import needs_by_task
from jobrunner.worker.broker import connection, leases
from jobrunner.worker.runtime.admission import AdmissionGate, DoesNotFit
from jobrunner.worker.runtime.promotion import Promoter
from jobrunner.worker.store import heartbeat
from jobrunner.worker.store.dead_letters import DeadLetterStore, fail_job
from jobrunner.worker.store.deliveries import DeliveryCounter
from jobrunner.worker.store.jobs import open_store

log = logging.getLogger("jobrunner.worker")


def _step(request: Request) -> str:
    """The pipeline step a request runs (its task name outside a job)."""
    return str(request.kwargs.get("job", {}).get("step", request.name))


class Poison(Exception):
    """A step kept being delivered without finishing: its process died every time."""


class JobrunnerStep(bootsteps.StartStopStep):
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Consumer, jobrunner_pool: str | None = None, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.settings = connection.resolve(get_settings())
        self.pool = jobrunner_pool or c.hostname.split("@", 1)[0]
        self.redis = connection.client(self.settings.effective_result_url)
        self.jobs = open_store(self.settings)
        self.dead_letters = DeadLetterStore(self.redis)
        self.deliveries = DeliveryCounter(
            self.redis,
            self.settings.reliability.max_deliveries,
            self.settings.limits.result_expires,
        )
        self.gate = AdmissionGate(
            self.settings.admission, needs_by_task(), c.on_task_request, self._reject
        )
        # Before the Tasks step builds its strategies, which capture the handler.
        c.on_task_request = self.receive
        c.jobrunner_gate = self.gate  # for the autoscaler
        self._timers: list[Any] = []

    def start(self, c: Consumer) -> None:
        qos = c.task_consumer.channel.qos
        can_consume = qos.can_consume

        def admitting() -> bool:
            """kombu asks before each poll whether to fetch: only while the gate admits."""
            if self.gate.held:
                self.gate.retry_held()
            return not self.gate.paused and can_consume()

        qos.can_consume = admitting
        self.consumer = c
        self.tick()
        reliability = self.settings.reliability
        self._every(self.settings.admission.check_interval_s, self.tick)
        self._every(reliability.lease_s / 4, lambda: leases.renew(c.task_consumer.channel))
        self._every(reliability.reaper_interval_s, self.fail_overdue_jobs)
        starvation = self.settings.starvation
        tiers = self.settings.pool(self.pool).tiers if self.pool in self.settings.pools else []
        if starvation.promote_after_s > 0 and any(tier in tiers for tier in TIERS[1:]):
            promoter = Promoter(connection.client(self.settings.broker_url), self.settings)
            self._every(starvation.check_interval_s, promoter.run_once)

    def stop(self, c: Consumer) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers = []

    def _every(self, interval_s: float, work: Callable[[], object]) -> None:
        """Run `work` on the consumer's timer; a failure (a Redis hiccup) is logged and the next
        run retries, so it never kills the event loop."""

        def guarded() -> None:
            try:
                work()
            except Exception:
                log.exception("periodic %s failed", getattr(work, "__name__", "work"))

        self._timers.append(self.consumer.timer.call_repeatedly(interval_s, guarded))

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
        self.gate.submit(request)

    def tick(self) -> None:
        was_paused = self.gate.paused
        try:
            self.gate.tick(heartbeat.reserve_override(self.redis))
            self._publish()
        except Exception:  # never let a Redis hiccup kill the event loop; next tick retries
            log.exception("admission tick failed")
        if self.gate.paused != was_paused:
            log.info(
                "admission %s%s",
                "paused: " if self.gate.paused else "resumed",
                self.gate.reason or "",
            )

    def fail_overdue_jobs(self) -> None:
        for job_id in self.jobs.overdue(time.time()):
            record = self.jobs.get(job_id)
            state_now = record.state if record else "unknown"
            summary = (
                f"deadline passed: not finished within {self.settings.reliability.job_deadline_s:g}"
                f" s of submission (it was {state_now})"
            )
            if fail_job(self.jobs, self.dead_letters, job_id, step="", summary=summary):
                log.error("job %s: %s", job_id, summary)

    def _publish(self) -> None:
        c = self.consumer
        scaler = getattr(c.controller, "autoscaler", None)
        room = self.gate.headroom
        fields = {
            "pool": self.pool,
            "pid": os.getpid(),
            "processes": c.pool.num_processes if c.pool else 0,
            "min_processes": scaler.min_concurrency if scaler else "",
            "max_processes": scaler.max_concurrency if scaler else "",
            "running": len(state.reserved_requests) - len(self.gate.held),
            "held": len(self.gate.held),
            "state": f"paused: {self.gate.reason}" if self.gate.paused else "admitting",
            "cpus": room.cpus,
            "load_per_cpu": round(room.load_per_cpu, 2),
            "memory_total_mb": room.memory_total_mb,
            "memory_available_mb": room.memory_available_mb,
            "memory_reserve_mb": self.gate.reserve_mb,
        }
        ttl = max(5.0, 4 * self.settings.admission.check_interval_s)
        heartbeat.publish(self.redis, c.hostname, fields, ttl)

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
