"""The worker's jobrunner bootstep: admission control, heartbeat, and the starvation guard
(in pools that consume low or medium; every such worker runs it, and its moves are atomic).

It runs in each worker's main process, in Celery's event loop. It wraps the consumer's task
handler with the admission gate, makes the Redis consumer poll only while the gate admits, and
runs its periodic work on the consumer's timer.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import bootsteps
from celery.worker import state
from celery.worker.consumer import Consumer
from celery.worker.request import Request

from config import TIERS, get_settings
from tasks.step import needs_by_task
from worker import broker, heartbeat
from worker.admission import AdmissionGate, DoesNotFit
from worker.dead_letter import DeadLetterStore
from worker.jobs import FAILURE, open_store
from worker.promotion import Promoter

log = logging.getLogger("jobrunner.worker")

POOL_OPTION = "jobrunner_pool"  # the `--jobrunner-pool` worker option


class JobrunnerStep(bootsteps.StartStopStep):
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Consumer, jobrunner_pool: str | None = None, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.settings = broker.resolve(get_settings())
        self.pool = jobrunner_pool or c.hostname.split("@", 1)[0]
        self.redis = broker.client(self.settings.effective_result_url)
        self.jobs = open_store(self.settings)
        self.dead_letters = DeadLetterStore(self.redis)
        self.gate = AdmissionGate(
            self.settings.admission, needs_by_task(), c.on_task_request, self._reject
        )
        # Before the Tasks step builds its strategies, which capture the handler.
        c.on_task_request = self.gate.submit
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
        self._timers = [
            c.timer.call_repeatedly(self.settings.admission.check_interval_s, self.tick)
        ]
        starvation = self.settings.starvation
        tiers = self.settings.pool(self.pool).tiers if self.pool in self.settings.pools else []
        if starvation.promote_after_s > 0 and consumes_promotable_tier(tiers):
            self.promoter = Promoter(broker.client(self.settings.broker_url), self.settings)
            self._timers.append(c.timer.call_repeatedly(starvation.check_interval_s, self.promote))

    def stop(self, c: Consumer) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers = []

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

    def promote(self) -> None:
        try:
            self.promoter.run_once()
        except Exception:  # a Redis hiccup: the next run retries
            log.exception("starvation guard run failed")

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
        """A step that can never fit here: dead-letter it, fail its job, drop the message."""
        job = request.kwargs.get("job", {})
        log.error("rejecting %s[%s]: %s", request.name, request.id, reason)
        self.dead_letters.add(
            job, task_id=request.id, reason=reason, payload=request.kwargs.get("payload")
        )
        if "id" in job:
            self.jobs.add_failure(job["id"], job.get("step", request.name), DoesNotFit(reason))
            self.jobs.finish(job["id"], FAILURE, error=f"step {job.get('step')} rejected: {reason}")
        request.reject(requeue=False)
        state.task_ready(request)


def consumes_promotable_tier(tiers: list[str]) -> bool:
    """Whether a pool consuming `tiers` should run the starvation guard (it takes low/medium)."""
    return any(tier in tiers for tier in TIERS[1:])
