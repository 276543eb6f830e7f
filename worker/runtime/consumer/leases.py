"""Lease renewal: the worker keeps the messages it holds from being re-delivered while it lives
(worker/broker/leases.py), a quarter of a lease apart."""

from __future__ import annotations

from celery.worker.consumer import Consumer

from jobrunner.worker.broker import leases
from jobrunner.worker.runtime.consumer.base import PeriodicStep


class LeaseStep(PeriodicStep):
    def start(self, c: Consumer) -> None:
        interval = self.settings.reliability.lease_s / 4
        self.every(c, interval, lambda: leases.renew(c.task_consumer.channel))
