"""An autoscaler that grows a pool by demand *and* headroom, and shrinks it first under pressure.

Celery's own autoscaler counts reserved messages only: it grows into a host that has no memory
left. This one keeps the pool at most as large as its memory can budget (`process_memory_mb` per
process, out of the free memory above the admission reserve plus what the pool already holds, so
a young process that has not grown yet does not make room for another), never counts steps held
for headroom as demand, and under host pressure sheds idle processes down to the minimum without
waiting for the keepalive.

Growing needs messages to be reserved beyond the current process count; with prefetch 1 and
acks_late that catch-22 kept Celery's autoscaler from ever growing. `worker_disable_prefetch`
(Celery 5.7) limits reserved messages by the autoscaler's *maximum*, which breaks it.
"""

from __future__ import annotations

import logging
from typing import Any

import psutil
from celery.worker import state
from celery.worker.autoscale import Autoscaler

from jobrunner.config import get_settings
from jobrunner.tasks.step import Resources
from jobrunner.worker.runtime.admission import AdmissionGate
from jobrunner.worker.runtime.headroom import MB

log = logging.getLogger("jobrunner.autoscaler")


class HeadroomAutoscaler(Autoscaler):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.keepalive = settings.autoscale.keepalive_s
        self.process_memory_mb = settings.admission.process_memory_mb

    @property
    def gate(self) -> AdmissionGate | None:
        return getattr(getattr(self.worker, "consumer", None), "jobrunner_gate", None)

    def maybe_scale(self, req: Any = None) -> None:
        """Celery's entry point (each tick, and each task message with `req`), deciding by
        `rescale`; what follows a decision is Celery's own."""
        if req is not None:
            self.on_task_received(req)
        if self.rescale():
            self.pool.maintain_pool()

    def rescale(self) -> bool:
        """Grow or shrink the pool once; whether it changed."""
        gate = self.gate
        procs = self.processes
        if gate is not None and gate.settings.enabled and gate.shortfall(Resources(cpu=0.0)):
            if procs > self.min_concurrency:  # under pressure: shed one idle process per tick
                return self._shed_one()
            return False
        held = len(gate.held) if gate is not None else 0
        demand = len(state.reserved_requests) - held
        wanted = min(demand, self.max_concurrency)
        if wanted > procs:
            grow = wanted - procs
            if gate is not None and gate.settings.enabled:
                grow = min(grow, self._memory_allows(gate) - procs)
            if grow > 0:
                self.scale_up(grow)
                return True
            return False
        if max(demand, self.min_concurrency) < procs:
            self.scale_down(procs - max(demand, self.min_concurrency))
            return True
        return False

    def _shed_one(self) -> bool:
        """Stop one idle process now, without waiting for the keepalive as `scale_down` does;
        the pool raises ValueError when every process is busy. Any error is logged, not raised:
        one raised here would exit the whole worker (Celery's autoscaler thread does that)."""
        try:
            self.pool.shrink(1)
        except ValueError:
            return False
        except Exception:
            log.exception("autoscaler: could not stop an idle process")
            return False
        log.info("under memory pressure: stopped one idle process")
        return True

    def _memory_allows(self, gate: AdmissionGate) -> int:
        """How many processes the pool's memory budget allows right now."""
        pool_mb = sum(child.memory_info().rss for child in psutil.Process().children()) // MB
        free_mb = gate.headroom.memory_available_mb - gate.reserve_mb - gate.pending_mb
        return max(free_mb + pool_mb, 0) // self.process_memory_mb
