"""Memory: resident memory of a fleet (worker and pool processes together) after a warm-up,
and again after many no-op jobs. Steady growth is a leak that `max_memory_per_child` would
otherwise have to hide."""

from __future__ import annotations

from jobrunner.benchmarks.drivers import Driver, drain
from jobrunner.benchmarks.harness import fleet, progress
from jobrunner.benchmarks.report import Goal, Row, row
from jobrunner.benchmarks.scenarios import Bench

NAME = "memory"
WARM_UP_JOBS = 500
BATCH = 2000  # jobs queued at a time, so the queue (and Redis) stay small
GROWTH_GOAL = Goal("jobrunner", "<", 10)


def flood(driver: Driver, jobs: int) -> None:
    for start in range(0, jobs, BATCH):
        driver.bulk(min(BATCH, jobs - start))
        drain(driver)


def readings(bench: Bench, driver: Driver, tag: str) -> tuple[float, float]:
    """RSS in MiB after the warm-up, and after `memory_jobs` more jobs."""
    driver.reset()
    with fleet(bench.log_dir, driver.launches("general", tag)) as running:
        flood(driver, WARM_UP_JOBS)
        before = running.rss_mb()
        flood(driver, bench.plan.memory_jobs)
        after = running.rss_mb()
    progress(f"memory: {driver.label}: {before:.0f} -> {after:.0f} MiB")
    return before, after


def run(bench: Bench) -> list[Row]:
    (a0, a1), (b0, b1) = (
        readings(bench, bench.jobrunner, "mem"),
        readings(bench, bench.celery, "mem0"),
    )
    label, jobs = bench.celery.label, bench.plan.memory_jobs
    return [
        row(NAME, "RSS after warm-up (MiB)", label, a0, b0, "lower"),
        row(NAME, f"RSS after {jobs:,} more jobs (MiB)", label, a1, b1, "lower"),
        row(
            NAME,
            "RSS growth (%)",
            label,
            100 * (a1 - a0) / a0,
            100 * (b1 - b0) / b0,
            "lower",
            GROWTH_GOAL,
        ),
    ]
