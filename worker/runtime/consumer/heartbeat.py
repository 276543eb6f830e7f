"""The worker's heartbeat: its pool, processes, what it runs and holds, and its host's headroom,
in Redis for `jobrunner status`, the exporter and the alerts (worker/store/heartbeat.py)."""

from __future__ import annotations

import os
from typing import Any

from celery.worker import state
from celery.worker.consumer import Consumer

from jobrunner.worker.runtime import sent_events
from jobrunner.worker.runtime.admission import AdmissionGate
from jobrunner.worker.runtime.consumer.admission import AdmissionStep
from jobrunner.worker.runtime.consumer.base import PeriodicStep, job_store, worker_pool
from jobrunner.worker.store import heartbeat


class HeartbeatStep(PeriodicStep):
    requires = (AdmissionStep,)  # publishes the admission gate's state

    def __init__(self, c: Consumer, jobrunner_pool: str | None = None, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.pool = worker_pool(c, jobrunner_pool)
        self.redis = job_store(c, self.settings).redis

    def start(self, c: Consumer) -> None:
        self.publish(c)
        self.every(c, self.settings.admission.check_interval_s, lambda: self.publish(c))

    def publish(self, c: Consumer) -> None:
        sent_events.note_watching(c.event_dispatcher)  # read by the pool processes
        gate: AdmissionGate = c.jobrunner_gate
        scaler = getattr(c.controller, "autoscaler", None)
        room = gate.headroom
        fields = {
            "pool": self.pool,
            "pid": os.getpid(),
            "processes": c.pool.num_processes if c.pool else 0,
            "min_processes": scaler.min_concurrency if scaler else "",
            "max_processes": scaler.max_concurrency if scaler else "",
            "running": len(state.reserved_requests) - len(gate.held),
            "held": len(gate.held),
            "state": f"paused: {gate.reason}" if gate.paused else "admitting",
            "cpus": room.cpus,
            "load_per_cpu": round(room.load_per_cpu, 2),
            "memory_total_mb": room.memory_total_mb,
            "memory_available_mb": room.memory_available_mb,
            "memory_reserve_mb": gate.reserve_mb,
        }
        ttl = max(5.0, 4 * self.settings.admission.check_interval_s)
        heartbeat.publish(self.redis, c.hostname, fields, ttl)
