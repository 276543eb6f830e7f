"""Lease renewal: the worker keeps the messages it holds from being re-delivered while it lives
(worker/broker/leases.py), a quarter of a lease apart, and while it stops: a worker stopping
(warmly, or after an unrecoverable error) lets its running steps finish, and its event loop, which
renews leases, has ended by then, so a thread renews them until the steps are acked; else another
worker would run them meanwhile. Its pool processes die with it (Celery sets PR_SET_PDEATHSIG in
them), so a step never outlives the worker that leases it: at most one live run per step."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery.worker.consumer import Consumer

from jobrunner.worker.broker import leases
from jobrunner.worker.runtime.consumer.base import PeriodicStep

log = logging.getLogger("jobrunner.worker")


class LeaseStep(PeriodicStep):
    def __init__(self, c: Consumer, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.interval = self.settings.reliability.lease_s / 4

    def start(self, c: Consumer) -> None:
        self.every(c, self.interval, lambda: leases.renew(c.task_consumer.channel))

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
                if not leases.renew(channel):
                    return
            except RuntimeError:  # an ack changed kombu's map of held messages meanwhile
                continue
            except Exception as error:  # the connection is gone: the leases lapse as they must
                log.warning("stopped renewing leases while stopping: %r", error)
                return
