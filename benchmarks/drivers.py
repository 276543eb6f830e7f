"""The systems under test behind one interface, so each scenario is written once and run on
jobrunner, on plain Celery (defaults, and tuned for priority) and on Huey alike.

Every system gets the same number of worker processes (`PROCESSES`), the same Redis and the
same job shapes (benchmarks/steps.py, baseline_celery.py, peer_huey.py). Tier and queue names
come from the jobrunner configuration, for the baselines too.
"""

from __future__ import annotations

import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import redis

from jobrunner.benchmarks.harness import (
    Launch,
    jobrunner_app,
    jobrunner_worker,
    wait_busy,
    wait_until,
)
from jobrunner.config import TIERS, Settings

if TYPE_CHECKING:
    from jobrunner.worker.client import Client

PROCESSES = 2  # worker processes per system: the machine's cores
JOB_TIMEOUT_S = 300.0
HIGH, LOW = TIERS[0], TIERS[-1]

Role = Literal["priority", "general"]  # what a fleet is for: high probes, or everything else


class Driver(ABC):
    """Starts a system's workers and submits the benchmark jobs to it."""

    label: str

    def __init__(self, broker: redis.Redis, settings: Settings) -> None:
        self.broker = broker
        self.settings = settings
        self.busy_node = ""  # the node a priority backlog saturates
        self.processes = PROCESSES  # worker processes of the next fleet (the fleet-size sweep)

    @abstractmethod
    def launches(self, role: Role, tag: str) -> list[Launch]:
        """Worker processes for `role`; `tag` keeps node names unique within the run."""

    @abstractmethod
    def backlog(self, count: int, ms: int) -> None:
        """Queue `count` low-tier jobs holding a process `ms` each."""

    def saturated(self) -> None:
        """Until the backlog keeps every process that serves low busy."""
        time.sleep(0.5)

    @abstractmethod
    def probe(self) -> float:
        """Submit one high-tier job, wait for it: milliseconds it waited to start."""

    @abstractmethod
    def submit(self, results: bool) -> Any:
        """Submit one no-op job (returning a value when `results`): a handle."""

    @abstractmethod
    def fetch(self, handle: Any) -> Any:
        """The result of a handle's job, once done."""

    @abstractmethod
    def drained(self) -> bool:
        """Nothing of the submitted work waits or runs any more."""

    def bulk(self, count: int) -> None:
        """Accept `count` no-op jobs as fast as the system's client allows."""
        for _ in range(count):
            self.submit(results=False)

    def fan_out(self, members: int) -> None:
        raise NotImplementedError(f"{self.label} runs no fan-out scenario")

    def chain(self, depth: int) -> None:
        raise NotImplementedError(f"{self.label} runs no chain scenario")

    def reset(self) -> None:
        """Forget the previous phase: no fleet runs now, so the whole database goes."""
        self.broker.flushdb()


def check(value: Any, expected: Any, what: str) -> None:
    if value != expected:
        raise RuntimeError(f"{what}: expected {expected!r}, got {value!r}")


class Jobrunner(Driver):
    label = "jobrunner"

    def __init__(
        self, broker: redis.Redis, settings: Settings, client: Client, chain_depths: list[int]
    ) -> None:
        """`chain_depths`: chain pipelines to register before the client first lists pipelines."""
        from jobrunner.benchmarks.steps import chain_pipeline

        super().__init__(broker, settings)
        for depth in chain_depths:
            chain_pipeline(depth)
        self.client = client

    def launches(self, role: Role, tag: str) -> list[Launch]:
        """Priority: the express pool (1 process, high only) beside a general pool of the rest,
        the capacity kept free for high being the feature measured. Otherwise: general only."""
        general = f"general-{tag}@bench"
        if role == "priority":
            self.busy_node = general
            one = {"JOBRUNNER_POOLS__EXPRESS__CONCURRENCY": "1"}
            rest = {"JOBRUNNER_POOLS__GENERAL__CONCURRENCY": str(self.processes - 1)}
            return [
                jobrunner_worker("express", f"express-{tag}@bench", one),
                jobrunner_worker("general", general, rest),
            ]
        every = {"JOBRUNNER_POOLS__GENERAL__CONCURRENCY": str(self.processes)}
        return [jobrunner_worker("general", general, every)]

    def backlog(self, count: int, ms: int) -> None:
        self.client.submit_many("bench_pause", [{"ms": ms}] * count, tier=LOW)

    def saturated(self) -> None:
        wait_busy(jobrunner_app(), self.busy_node, self.processes - 1)

    def probe(self) -> float:
        """From the call to submit to the step starting, as the baselines measure it (their
        client's work included), not from the job record's submission stamp."""
        sent = time.time()
        record = self.client.submit("bench_pause", {"ms": 0}, tier=HIGH).wait(JOB_TIMEOUT_S)
        assert record.started_at is not None
        return (record.started_at - sent) * 1000

    def submit(self, results: bool) -> Any:
        return self.client.submit("bench_echo" if results else "bench_noop")

    def fetch(self, handle: Any) -> Any:
        return handle.result(JOB_TIMEOUT_S)

    def drained(self) -> bool:
        from jobrunner.worker.broker.keys import OPEN_JOBS

        return self.broker.zcard(OPEN_JOBS) == 0  # every job recorded as finished

    def bulk(self, count: int) -> None:
        self.client.submit_many("bench_noop", [{}] * count)

    def fan_out(self, members: int) -> None:
        from jobrunner.benchmarks.steps import FAN_OUT

        result = self.client.submit(FAN_OUT, {"items": members}).result(JOB_TIMEOUT_S)
        check(len(result), members, "fan-out results")

    def chain(self, depth: int) -> None:
        from jobrunner.benchmarks.steps import chain_pipeline

        check(self.client.submit(chain_pipeline(depth)).result(JOB_TIMEOUT_S), depth, "chain")


class CeleryBaseline(Driver):
    """benchmarks/baseline_celery.py: Celery's defaults, or with the tuned priority settings."""

    UNACKED = "unacked"  # kombu's default key for delivered, unacknowledged messages

    def __init__(self, broker: redis.Redis, settings: Settings, *, tuned: bool) -> None:
        super().__init__(broker, settings)
        self.tuned = tuned
        self.label = "Celery tuned" if tuned else "Celery defaults"
        from jobrunner.benchmarks import baseline_celery

        self.tasks = baseline_celery
        self.queue = settings.queue(settings.default_tier)

    def launches(self, role: Role, tag: str) -> list[Launch]:
        tiers = (HIGH, LOW) if role == "priority" else TIERS
        node = f"celery-{tag}@bench"
        self.busy_node = node
        argv = [
            *(
                sys.executable,
                "-m",
                "celery",
                "-A",
                "jobrunner.benchmarks.baseline_celery",
                "worker",
            ),
            f"--hostname={node}",
            f"--queues={','.join(self.settings.queue(t) for t in tiers)}",
            f"--concurrency={self.processes}",
            "--loglevel=WARNING",
        ]
        env = {self.tasks.TUNED_VARIABLE: "1" if self.tuned else "0"}
        app = self.tasks.app
        return [Launch(node, argv, env, lambda: bool(app.control.ping([node], timeout=0.5)))]

    def backlog(self, count: int, ms: int) -> None:
        queue = self.settings.queue(LOW)
        for _ in range(count):
            self.tasks.pause.apply_async((ms,), queue=queue, ignore_result=True)

    def saturated(self) -> None:
        wait_busy(self.tasks.app, self.busy_node, self.processes)

    def probe(self) -> float:
        sent = time.time()
        result = self.tasks.pause.apply_async((0,), queue=self.settings.queue(HIGH))
        started = result.get(timeout=JOB_TIMEOUT_S)
        return (started - sent) * 1000

    def submit(self, results: bool) -> Any:
        return (self.tasks.echo if results else self.tasks.noop).apply_async(queue=self.queue)

    def fetch(self, handle: Any) -> Any:
        return handle.get(timeout=JOB_TIMEOUT_S)

    def drained(self) -> bool:
        """Queue empty and nothing delivered unacknowledged. With Celery's early ack, up to one
        job per process may still be running: a few milliseconds, the same for every run."""
        return self.broker.llen(self.queue) == 0 and self.broker.hlen(self.UNACKED) == 0

    def fan_out(self, members: int) -> None:
        """As a Celery user writes it: chord(header)(body).get(), parents followed (default)."""
        from celery import chord

        count, gather = self.tasks.count, self.tasks.gather
        header = [count.s(i).set(queue=self.queue) for i in range(members)]
        result = chord(header)(gather.s().set(queue=self.queue))
        check(len(result.get(timeout=JOB_TIMEOUT_S)), members, "fan-out results")

    def chain(self, depth: int) -> None:
        from celery import chain

        count = self.tasks.count
        links = [count.s(0).set(queue=self.queue)]
        links += [count.s().set(queue=self.queue) for _ in range(depth - 1)]
        check(chain(*links).apply_async().get(timeout=JOB_TIMEOUT_S), depth, "chain")


class HueyPeer(Driver):
    """benchmarks/peer_huey.py, process workers; its list queue, or its priority queue."""

    label = "Huey"
    PROBE_PRIORITY = 10  # higher runs first in Huey's priority queue

    def __init__(self, broker: redis.Redis, settings: Settings) -> None:
        super().__init__(broker, settings)
        from jobrunner.benchmarks import peer_huey

        self.module = peer_huey
        self.huey = peer_huey.plain

    def launches(self, role: Role, tag: str) -> list[Launch]:
        name = "prioritized" if role == "priority" else "plain"
        self.huey = getattr(self.module, name)
        argv = [
            *(
                sys.executable,
                "-m",
                "huey.bin.huey_consumer",
                f"jobrunner.benchmarks.peer_huey.{name}",
            ),
            *("--workers", str(self.processes), "--worker-type", "process", "--quiet"),
        ]
        return [Launch(f"huey-{tag}", argv, {}, self._ready_check())]

    def _ready_check(self) -> Callable[[], bool]:
        """Ready once a first job came back (Huey has no ping)."""
        pending: list[Any] = []

        def ready() -> bool:
            if not pending:
                pending.append(self._tasks.echo())
            return pending[0].get() is not None

        return ready

    @property
    def _tasks(self) -> Any:
        return self.module.TASKS[self.huey.name]

    def backlog(self, count: int, ms: int) -> None:
        for _ in range(count):
            self.huey.enqueue(self._tasks.pause.s(ms, priority=0))

    def probe(self) -> float:
        sent = time.time()
        result = self.huey.enqueue(self._tasks.pause.s(0, priority=self.PROBE_PRIORITY))
        started = result.get(blocking=True, timeout=JOB_TIMEOUT_S, backoff=1.0, max_delay=0.01)
        return (started - sent) * 1000

    def submit(self, results: bool) -> Any:
        return (self._tasks.echo if results else self._tasks.noop)()

    def fetch(self, handle: Any) -> Any:
        return handle.get(blocking=True, timeout=JOB_TIMEOUT_S, backoff=1.0, max_delay=0.01)

    def drained(self) -> bool:
        """Queue empty; up to one job per process may still be running, as for Celery."""
        return self.huey.pending_count() == 0


def drain(driver: Driver) -> None:
    wait_until(driver.drained, JOB_TIMEOUT_S, f"{driver.label} to finish its jobs")
