"""Fleet-wide limits: at most `concurrency` steps using a resource run at once across every
worker and host, and no more than `rate` start ([limits.NAME]; steps name resources in `uses`).

A worker leases a slot of each resource a step uses as it receives the step (one Lua script, all
or none, lua/acquire_slots.lua); renews the leases of its running steps on its timer; and
returns them once a step ended. A crashed worker's leases lapse after `reliability.lease_s`, so
its slots come back. A step that finds no slot is held in the worker, like one the admission gate
holds for headroom, and started as soon as a slot frees; unlike that gate, it does not stop the
worker taking other work (up to one held step per process, so a worker never hoards messages).

Rates use the `limits` package (a moving window in the same Redis): well tested, and already the
way Flask-Limiter and SlowAPI count on Redis. A step that gets a slot but no rate token gives the
slot back and waits like one that got none.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import redis
from celery.worker import state
from celery.worker.request import Request
from limits import parse
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from jobrunner.config.settings import ResourceLimit
from jobrunner.worker.broker import scripts
from jobrunner.worker.broker.keys import LIMIT, RATE

log = logging.getLogger("jobrunner.limits")


class FleetLimits:
    """One per worker, in its main thread (the admission bootstep)."""

    def __init__(
        self,
        client: redis.Redis,
        url: str,
        caps: dict[str, ResourceLimit],
        lease_s: float,
        max_held: Callable[[], int],
    ) -> None:
        self.redis = client
        self.caps = caps
        self.lease_s = lease_s
        self.max_held = max_held
        self._acquire = client.register_script(scripts.load("acquire_slots"))
        rated = {name: parse(cap.rate) for name, cap in caps.items() if cap.rate}
        self.rates = rated
        self.limiter = (
            MovingWindowRateLimiter(RedisStorage(url, key_prefix=RATE)) if rated else None
        )
        self.held: deque[Request] = deque()
        self.leased: dict[str, list[str]] = {}  # task id -> the resources it holds slots of

    def uses(self, request: Request) -> list[str]:
        """The capped resources a request's step uses (resources without a cap are free)."""
        job = request.kwargs.get("job", {}) if isinstance(request.kwargs, dict) else {}
        return [name for name in job.get("uses", ()) if name in self.caps]

    def _lease(self, task_id: str, uses: list[str]) -> bool:
        slotted = [name for name in uses if self.caps[name].concurrency]
        if slotted:
            now = time.time()
            caps = [self.caps[name].concurrency for name in slotted]
            keys = [LIMIT + name for name in slotted]
            if not self._acquire(keys=keys, args=[now, now + self.lease_s, task_id, *caps]):
                return False
            self.leased[task_id] = slotted
        if self.limiter is not None:
            for name in uses:
                if name in self.rates and not self.limiter.hit(self.rates[name], name):
                    self.release(task_id)
                    return False
        return True

    def release(self, task_id: str) -> None:
        slotted = self.leased.pop(task_id, [])
        if slotted:
            with self.redis.pipeline(transaction=False) as pipe:
                for name in slotted:
                    pipe.zrem(LIMIT + name, task_id)
                pipe.execute()

    def admit(self, request: Request) -> bool:
        """True if `request` may go on to the admission gate now; else it is held here."""
        uses = self.uses(request)
        if not uses or self._lease(request.id, uses):
            return True
        log.info("holding %s[%s]: no slot of %s", request.name, request.id, ", ".join(uses))
        self.held.append(request)
        if len(self.held) <= self.max_held():  # frees its place: the worker takes other work
            state.reserved_requests.discard(request)
        return False

    def retry_held(self, start: Callable[[Request], Any]) -> None:
        """Return the slots of steps that ended, then start held steps that get one now."""
        live = {request.id for request in state.reserved_requests}
        for task_id in [t for t in self.leased if t not in live]:
            self.release(task_id)
        for request in list(self.held):
            if self._lease(request.id, self.uses(request)):
                self.held.remove(request)
                state.reserved_requests.add(request)
                log.info("admitting held %s[%s]", request.name, request.id)
                start(request)

    def renew(self) -> None:
        """Extend the leases of the slots this worker's running steps hold."""
        expiry = time.time() + self.lease_s
        with self.redis.pipeline(transaction=False) as pipe:
            for task_id, slotted in self.leased.items():
                for name in slotted:
                    pipe.zadd(LIMIT + name, {task_id: expiry}, xx=True)
            pipe.execute()
