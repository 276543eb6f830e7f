"""Lease renewal: the worker keeps the messages it holds from being re-delivered while it lives
(worker/broker/leases.py), a quarter of a lease apart.

And a fence for when it cannot: a worker cut from Redis (a partition) cannot renew, so after a
lease its messages go back to their queues and other workers run them. Before that can happen,
a watchdog thread (it does not need the event loop, which may hang on a dead connection) stops
every step this worker runs and forgets their messages without a word to Redis. After the
partition heals, the worker acks, rejects, restores or records nothing stale, and takes new work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any

from celery.worker import state
from celery.worker.consumer import Consumer

from jobrunner.worker.broker import leases
from jobrunner.worker.runtime.consumer.base import PeriodicStep

log = logging.getLogger("jobrunner.worker")
# Fence once the last renewal is this old, in leases: before Redis can hand the messages to
# another worker (a full lease), with room for the watchdog's own tick.
FENCE_AFTER = 0.7
WATCH_EVERY = 0.1  # of a lease, between the watchdog's checks


def fence_running_steps() -> int:
    """Kill the process of every step this worker runs and forget its message; how many."""
    stopped = 0
    for request in tuple(state.active_requests):
        message = request.message
        qos = getattr(message.channel, "qos", None)
        if qos is None or message.delivery_tag in getattr(qos, "fenced", ()):
            continue  # stopped already (its pool process may not be reaped yet)
        qos.fence(message.delivery_tag)
        if request.worker_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(request.worker_pid, signal.SIGKILL)
            stopped += 1
    return stopped


class LeaseStep(PeriodicStep):
    def __init__(self, c: Consumer, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.renewed_at = time.monotonic()
        self._watchdog: threading.Thread | None = None

    def start(self, c: Consumer) -> None:
        lease_s = self.settings.reliability.lease_s

        def renew() -> None:
            began = time.monotonic()  # the lease runs from when the new score was taken
            leases.renew(c.task_consumer.channel)
            self.renewed_at = began

        self.renewed_at = time.monotonic()
        self.every(c, lease_s / 4, renew)
        if self._watchdog is None:  # one per worker: it outlives the consumer's restarts
            self._watchdog = threading.Thread(
                target=self._watch, args=(lease_s,), name="jobrunner-lease-fence", daemon=True
            )
            self._watchdog.start()

    def _watch(self, lease_s: float) -> None:
        while True:
            time.sleep(lease_s * WATCH_EVERY)
            silent_s = time.monotonic() - self.renewed_at
            stopped = fence_running_steps() if silent_s > lease_s * FENCE_AFTER else 0
            if stopped:
                log.warning(
                    "no lease renewed for %.1f s (lease %g s): stopped %d running step(s); "
                    "their messages return to their queues and run elsewhere",
                    silent_s,
                    lease_s,
                    stopped,
                )
