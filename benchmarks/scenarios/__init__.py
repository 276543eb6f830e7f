"""The scenarios of `jobrunner bench`, one module each; every one runs jobrunner and its
baselines in turn on the same Redis, and returns report rows."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobrunner.benchmarks.drivers import CeleryBaseline, Driver, HueyPeer, Jobrunner


@dataclass(frozen=True)
class Plan:
    """How much work each scenario does; --quick trades precision for time."""

    probes: int  # high jobs whose wait is measured behind a low backlog
    throughput_jobs: int  # no-op jobs per end-to-end throughput run
    bulk_jobs: int  # jobs per bulk submission
    fan_out: tuple[int, int]  # chord sizes; the scaling is time(large) / time(small)
    chain_depth: int
    memory_jobs: int  # jobs between the two RSS readings
    data_sizes_mb: tuple[float, ...]  # generated inputs of the data scenario (none: skipped)
    fleet_sizes: tuple[int, ...]  # worker processes per system in the fleet sweep (none: skipped)


FULL = Plan(
    probes=200,  # so that p99 is not the maximum of a handful
    throughput_jobs=5000,
    bulk_jobs=10000,
    fan_out=(1000, 5000),
    chain_depth=200,
    memory_jobs=20000,
    data_sizes_mb=(20, 200),
    fleet_sizes=(1, 2, 4),
)
QUICK = Plan(
    probes=12,
    throughput_jobs=500,
    bulk_jobs=2000,
    fan_out=(100, 500),
    chain_depth=50,
    memory_jobs=1000,
    data_sizes_mb=(),  # the data scenario takes minutes: out of --quick unless --data-sizes
    fleet_sizes=(),  # as is the fleet sweep, unless --fleet-sizes
)


@dataclass(frozen=True)
class Bench:
    """What a scenario runs on: the plan, the systems, and where worker logs go."""

    plan: Plan
    log_dir: Path
    jobrunner: Jobrunner
    celery: CeleryBaseline
    celery_tuned: CeleryBaseline
    huey: HueyPeer | None  # only with --peers

    def peers(self) -> list[Driver]:
        return [self.huey] if self.huey else []


def timed(work: Callable[[], Any]) -> float:
    """Seconds `work` took."""
    began = time.perf_counter()
    work()
    return time.perf_counter() - began
