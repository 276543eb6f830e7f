"""Lease renewal: the worker keeps the messages it holds from being re-delivered while it lives
(worker/broker/leases.py), a quarter of a lease apart, and while it stops: a worker stopping
(warmly, or after an unrecoverable error) lets its running steps finish, and its event loop, which
renews leases, has ended by then, so a thread renews them until the steps are acked; else another
worker would run them meanwhile. Its pool processes die with it (Celery sets PR_SET_PDEATHSIG in
them), so a step never outlives the worker that leases it: at most one live run per step.

And a fence for when it cannot renew: a worker cut from Redis (a partition) cannot, so after a
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
        self.lease_s = self.settings.reliability.lease_s
        self.interval = self.lease_s / 4
        self.renewed_at = time.monotonic()
        self._watchdog: threading.Thread | None = None

    def _renew(self, channel: Any) -> bool:
        """Renew what `channel` holds; whether it holds anything. The watchdog reads when."""
        began = time.monotonic()  # the lease runs from when the new score was taken
        held = leases.renew(channel)
        self.renewed_at = began
        return bool(held)

    def start(self, c: Consumer) -> None:
        self.renewed_at = time.monotonic()
        self.every(c, self.interval, lambda: self._renew(c.task_consumer.channel))
        if self._watchdog is None:  # one per worker: it outlives the consumer's restarts
            self._watchdog = threading.Thread(
                target=self._watch, name="jobrunner-lease-fence", daemon=True
            )
            self._watchdog.start()

    def stop(self, c: Consumer) -> None:
        super().stop(c)
        channel = getattr(c.task_consumer, "channel", None) if c.task_consumer else None
        if channel is not None and channel.qos.held():
            threading.Thread(
                target=self._renew_until_acked, args=(channel,), name="lease-renewal", daemon=True
            ).start()

    def _renew_until_acked(self, channel: Any) -> None:
        """Renew what the stopping worker holds until none is left (or Redis is gone)."""
        while True:
            time.sleep(self.interval)
            try:
                if not self._renew(channel):
                    return
            except RuntimeError:  # an ack changed kombu's map of held messages meanwhile
                continue
            except Exception as error:  # the connection is gone: the leases lapse as they must
                log.warning("stopped renewing leases while stopping: %r", error)
                return

    def _watch(self) -> None:
        while True:
            time.sleep(self.lease_s * WATCH_EVERY)
            silent_s = time.monotonic() - self.renewed_at
            stopped = fence_running_steps() if silent_s > self.lease_s * FENCE_AFTER else 0
            if stopped:
                log.warning(
                    "no lease renewed for %.1f s (lease %g s): stopped %d running step(s); "
                    "their messages return to their queues and run elsewhere",
                    silent_s,
                    self.lease_s,
                    stopped,
                )
