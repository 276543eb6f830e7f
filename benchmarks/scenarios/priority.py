"""Priority wait: how long a high job waits to start while a low backlog saturates the workers.

jobrunner runs its express pool (1 process, high only) beside a general pool; every baseline
gets the same total number of processes serving both tiers. The backlog holds each process
for `PAUSE_MS`, long enough that a probe behind it is visible, short like a real small step.
"""

from __future__ import annotations

import statistics
import time

from jobrunner.benchmarks.drivers import Driver
from jobrunner.benchmarks.harness import fleet, percentile, progress
from jobrunner.benchmarks.report import Goal, Row, row
from jobrunner.benchmarks.scenarios import Bench

NAME = "priority"
PAUSE_MS = 50
PROBE_EVERY_S = 0.1
# Low jobs per probe: a probe cycle takes at most ~0.4 s (the interval plus a default-Celery
# wait), during which the processes finish ~40 low jobs/s between them; with room to spare.
BACKLOG_PER_PROBE = 20
GOALS = {"Celery defaults": Goal("ratio", ">=", 20), "Celery tuned": Goal("ratio", ">=", 3)}


def waits(bench: Bench, driver: Driver, tag: str, probes: int | None = None) -> list[float]:
    """Milliseconds each high probe waited (`probes` of them, default the plan's), behind a low
    backlog on a fresh fleet."""
    probes = probes or bench.plan.probes
    driver.reset()
    with fleet(bench.log_dir, driver.launches("priority", tag)):
        backlog = probes * BACKLOG_PER_PROBE
        progress(f"priority: {driver.label}: {backlog} low jobs, then {probes} probes")
        driver.backlog(backlog, PAUSE_MS)
        driver.saturated()
        samples = []
        for _ in range(probes):
            sent = time.monotonic()
            samples.append(driver.probe())
            time.sleep(max(0.0, sent + PROBE_EVERY_S - time.monotonic()))
    progress(f"priority: {driver.label}: median {statistics.median(samples):.1f} ms")
    return samples


def run(bench: Bench) -> list[Row]:
    ours = waits(bench, bench.jobrunner, "prio")
    rows = []
    for i, driver in enumerate([bench.celery, bench.celery_tuned, *bench.peers()]):
        theirs = waits(bench, driver, f"prio{i}")
        for label, q in (("median", 50.0), ("p99", 99.0), ("max", 100.0)):
            goal = GOALS.get(driver.label) if label == "p99" else None
            mine, other = percentile(ours, q), percentile(theirs, q)
            figure = f"high wait {label} (ms)"
            rows.append(row(NAME, figure, driver.label, mine, other, "lower", goal))
    return rows
