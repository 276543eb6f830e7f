"""Throughput: no-op jobs end to end (one client thread submitting one job at a time, the
workers draining meanwhile), with and without a result the client fetches; and how fast the
client alone accepts a bulk submission (no workers running)."""

from __future__ import annotations

from jobrunner.benchmarks.drivers import Driver, drain
from jobrunner.benchmarks.harness import fleet, progress
from jobrunner.benchmarks.report import Goal, Row, row
from jobrunner.benchmarks.scenarios import Bench, timed

NAME = "throughput"
WARM_UP_JOBS = 100
FLOOR = Goal("ratio", ">=", 1.0)  # against plain Celery; against Huey it is the target
BULK_GOAL = Goal("jobrunner", ">=", 10_000)


def end_to_end(driver: Driver, jobs: int, results: bool) -> float:
    """Jobs per second from the first submission to the last job done (or fetched)."""

    def work() -> None:
        handles = [driver.submit(results) for _ in range(jobs)]
        if results:
            for handle in handles:
                driver.fetch(handle)
        else:
            drain(driver)

    return jobs / timed(work)


def rates(bench: Bench, driver: Driver, tag: str) -> dict[str, float]:
    plan = bench.plan
    driver.bulk(WARM_UP_JOBS)  # each client's first use (imports, connections) goes untimed
    driver.reset()
    accepted = plan.bulk_jobs / timed(lambda: driver.bulk(plan.bulk_jobs))
    progress(f"throughput: {driver.label}: bulk submit {accepted:,.0f} jobs/s")
    driver.reset()
    with fleet(bench.log_dir, driver.launches("general", tag)):
        end_to_end(driver, WARM_UP_JOBS, results=False)
        plain = end_to_end(driver, plan.throughput_jobs, results=False)
        fetched = end_to_end(driver, plan.throughput_jobs, results=True)
    progress(f"throughput: {driver.label}: {plain:,.0f} / {fetched:,.0f} jobs/s")
    return {"bulk": accepted, "plain": plain, "fetched": fetched}


def run(bench: Bench) -> list[Row]:
    ours = rates(bench, bench.jobrunner, "tput")
    rows = []
    for i, driver in enumerate([bench.celery, *bench.peers()]):
        theirs = rates(bench, driver, f"tput{i}")
        for key, figure in (
            ("plain", "no-op jobs, no result (jobs/s)"),
            ("fetched", "jobs with result fetched (jobs/s)"),
        ):
            rows.append(row(NAME, figure, driver.label, ours[key], theirs[key], "higher", FLOOR))
        goal = BULK_GOAL if i == 0 else None
        figure = "bulk submit, accepted (jobs/s)"
        rows.append(row(NAME, figure, driver.label, ours["bulk"], theirs["bulk"], "higher", goal))
    return rows
