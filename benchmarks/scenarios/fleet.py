"""The fleet-size sweep: how throughput and the high tier's tail change with the number of
worker processes per system, so that how cost grows with the fleet is visible.

At each size, no-op jobs end to end (as the throughput scenario, results not fetched) against
plain Celery, and the high tier's p99 wait behind a low backlog (as the priority scenario)
against Celery tuned for priority. The priority rows start at 2 processes: jobrunner keeps one
for its express pool, so a fleet of one has no process left for the low backlog.
"""

from __future__ import annotations

from jobrunner.benchmarks.drivers import PROCESSES, Driver
from jobrunner.benchmarks.harness import fleet, percentile, progress
from jobrunner.benchmarks.report import Row, row
from jobrunner.benchmarks.scenarios import Bench, priority, throughput

NAME = "fleet"


def _sized(driver: Driver, processes: int) -> Driver:
    driver.processes = processes
    return driver


def _no_op_rate(bench: Bench, driver: Driver, tag: str) -> float:
    driver.reset()
    with fleet(bench.log_dir, driver.launches("general", tag)):
        throughput.end_to_end(driver, throughput.WARM_UP_JOBS, results=False)
        return throughput.end_to_end(driver, bench.plan.throughput_jobs // 2, results=False)


def run(bench: Bench) -> list[Row]:
    rows = []
    ours, plain, tuned = bench.jobrunner, bench.celery, bench.celery_tuned
    try:
        for size in bench.plan.fleet_sizes:
            figure = f"{size} processes: no-op jobs (jobs/s)"
            mine = _no_op_rate(bench, _sized(ours, size), f"fleet{size}")
            theirs = _no_op_rate(bench, _sized(plain, size), f"fleet{size}c")
            progress(f"fleet: {size} processes: {mine:,.0f} / {theirs:,.0f} jobs/s")
            rows.append(row(NAME, figure, plain.label, mine, theirs, "higher", None))
            if size < 2:
                continue
            probes = bench.plan.probes // 2
            mine = percentile(priority.waits(bench, _sized(ours, size), f"fp{size}", probes), 99.0)
            theirs = percentile(
                priority.waits(bench, _sized(tuned, size), f"fp{size}t", probes), 99.0
            )
            figure = f"{size} processes: high wait p99 (ms)"
            rows.append(row(NAME, figure, tuned.label, mine, theirs, "lower", None))
    finally:
        for driver in (ours, plain, tuned):
            _sized(driver, PROCESSES)
    return rows
