"""The starvation guard, in pools that consume a low or medium tier: messages waiting too long
move up a tier (worker/runtime/promotion.py)."""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer

from jobrunner.config import TIERS
from jobrunner.worker.broker import connection
from jobrunner.worker.runtime.consumer.base import PeriodicStep, worker_pool
from jobrunner.worker.runtime.promotion import Promoter


class StarvationStep(PeriodicStep):
    def __init__(self, c: Consumer, jobrunner_pool: str | None = None, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        pool = worker_pool(c, jobrunner_pool)
        tiers = self.settings.pool(pool).tiers if pool in self.settings.pools else []
        self.guarding = any(tier in tiers for tier in TIERS[1:])

    def start(self, c: Consumer) -> None:
        starvation = self.settings.starvation
        if starvation.promote_after_s > 0 and self.guarding:
            promoter = Promoter(connection.client(self.settings.broker_url), self.settings)
            self.every(c, starvation.check_interval_s, promoter.run_once)
