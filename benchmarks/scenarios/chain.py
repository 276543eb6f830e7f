"""Chain depth: one job of N steps in sequence, each passing its result to the next, timed
from submission to the final result in the client."""

from __future__ import annotations

from jobrunner.benchmarks.drivers import Driver
from jobrunner.benchmarks.harness import fleet, progress
from jobrunner.benchmarks.report import Row, row
from jobrunner.benchmarks.scenarios import Bench, timed

NAME = "chain"
WARM_UP_DEPTH = 5


def seconds(bench: Bench, driver: Driver, tag: str) -> float:
    driver.reset()
    with fleet(bench.log_dir, driver.launches("general", tag)):
        driver.chain(WARM_UP_DEPTH)
        took = timed(lambda: driver.chain(bench.plan.chain_depth))
    progress(f"chain: {driver.label}: {took:.2f} s")
    return took


def run(bench: Bench) -> list[Row]:
    ours, theirs = seconds(bench, bench.jobrunner, "chain"), seconds(bench, bench.celery, "chain0")
    figure = f"{bench.plan.chain_depth}-step chain (s)"
    return [row(NAME, figure, bench.celery.label, ours, theirs, "lower")]
