"""Admission control: a worker starts a step only while the host has the headroom it declares.

The gate sits where the worker hands a received task to its process pool. A step whose declared
memory or CPU does not fit the live headroom (psutil) is held, and while anything is held, or the
host itself is short (memory below the reserve, load above the limit), the worker's Redis
consumer takes no new message. Held steps start, oldest first, as soon as headroom returns. A step
that could never fit this host goes to the dead-letter store instead of waiting forever.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping

from celery.worker import state
from celery.worker.request import Request

from jobrunner.config.settings import AdmissionSettings
from jobrunner.tasks.step import NO_RESOURCES, Resources
from jobrunner.worker.runtime.headroom import Headroom, measure

log = logging.getLogger("jobrunner.admission")


class DoesNotFit(Exception):
    """A step needs more than this host has, so it can never be admitted here."""


class AdmissionGate:
    """Decides, in the worker's main thread, when each received task may start."""

    def __init__(
        self,
        settings: AdmissionSettings,
        needs: Mapping[str, Resources],
        start: Callable[[Request], None],
        reject: Callable[[Request, str], None],
    ) -> None:
        self.settings = settings
        self.needs = needs
        self._start = start
        self._reject = reject
        self.held: deque[Request] = deque()
        self.headroom: Headroom = measure()
        self.reserve_mb = settings.memory_reserve_mb
        self.pending_mb = 0  # declared memory admitted since `headroom` was measured
        self.reason: str | None = None  # why the gate is shut; None while it admits

    @property
    def paused(self) -> bool:
        """True while the worker should take no new message."""
        return bool(self.held) or self.reason is not None

    def needs_of(self, request: Request) -> Resources:
        return self.needs.get(request.name, NO_RESOURCES)

    def never_fits(self, needs: Resources) -> str | None:
        room = self.headroom.memory_total_mb - self.settings.memory_reserve_mb
        if needs.memory_mb > room:
            return (
                f"needs {needs.memory_mb} MB of memory; this host has {room} MB above its reserve"
            )
        if needs.cpu > self.headroom.cpus:
            return f"needs {needs.cpu:g} CPUs; this host has {self.headroom.cpus}"
        return None

    def _running_cpu(self, candidate: Request | None) -> float:
        """CPU declared by the steps this worker runs. Celery reserves a request before handing
        it to the gate, so the candidate itself (and every held one) is left out."""
        waiting = {id(request) for request in self.held} | {id(candidate)}
        running = (r for r in state.reserved_requests if id(r) not in waiting)
        return sum(self.needs_of(request).cpu for request in running)

    def shortfall(self, needs: Resources, candidate: Request | None = None) -> str | None:
        """Why `needs` (of `candidate`) cannot start now, or None if the host has the room."""
        free_mb = self.headroom.memory_available_mb - self.reserve_mb - self.pending_mb
        if free_mb < max(needs.memory_mb, 0) or free_mb < 0:
            return (
                f"memory: needs {needs.memory_mb} MB, {max(free_mb, 0)} MB free above the "
                f"{self.reserve_mb} MB reserve"
            )
        if self.headroom.load_per_cpu > self.settings.max_load_per_cpu:
            return (
                f"cpu: load {self.headroom.load_per_cpu:.1f} per CPU is above "
                f"{self.settings.max_load_per_cpu:g}"
            )
        running_cpu = self._running_cpu(candidate)
        if running_cpu + needs.cpu > self.headroom.cpus:
            return f"cpu: {running_cpu:g} of {self.headroom.cpus} CPUs taken, needs {needs.cpu:g}"
        return None

    def _admit(self, request: Request, needs: Resources) -> None:
        self.pending_mb += needs.memory_mb
        self._start(request)

    def submit(self, request: Request) -> None:
        """The consumer's task handler: start, hold, or reject `request`."""
        needs = self.needs_of(request)
        if needs == NO_RESOURCES or not self.settings.enabled:
            self._start(request)
            return
        reason = self.never_fits(needs)
        if reason is not None:
            self._reject(request, reason)
            return
        if not self.held:
            shortfall = self.shortfall(needs, request)
            if shortfall is None:
                self._admit(request, needs)
                return
            self.reason = shortfall
        log.info("holding %s[%s]: %s", request.name, request.id, self.reason)
        self.held.append(request)

    def retry_held(self) -> None:
        """Start held steps that fit now, oldest first; set `reason` to what still blocks.

        Called on every poll of the event loop, so a held step starts as soon as a running one
        ends; it uses the last measurement, so it costs no system call.
        """
        while self.held:
            shortfall = self.shortfall(self.needs_of(self.held[0]), self.held[0])
            if shortfall is not None:
                self.reason = shortfall
                return
            request = self.held.popleft()
            log.info("admitting held %s[%s]", request.name, request.id)
            self._admit(request, self.needs_of(request))
        self.reason = self.shortfall(Resources(cpu=0.0))  # is the host itself short?

    def tick(self, reserve_mb: int | None = None) -> None:
        """Re-measure the host, then retry held steps. `reserve_mb` overrides the configured
        memory reserve (a live operator override)."""
        self.headroom = measure()
        self.pending_mb = 0
        self.reserve_mb = self.settings.memory_reserve_mb if reserve_mb is None else reserve_mb
        if self.settings.enabled:
            self.retry_held()
        else:
            self.reason = None
