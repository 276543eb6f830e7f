"""Fan-out: a chord of N members (jobrunner: `map` over a list, compiled to a chord), timed
from submission to the joined result in the client, at two sizes; linear scaling is their
size ratio (5 for 1,000 -> 5,000)."""

from __future__ import annotations

from jobrunner.benchmarks.drivers import Driver
from jobrunner.benchmarks.harness import fleet, progress
from jobrunner.benchmarks.report import Goal, Row, row
from jobrunner.benchmarks.scenarios import Bench, timed

NAME = "fan-out"
WARM_UP_MEMBERS = 10
SCALING_GOAL = Goal("jobrunner", "<=", 6)


def times(bench: Bench, driver: Driver, tag: str) -> list[float]:
    driver.reset()
    with fleet(bench.log_dir, driver.launches("general", tag)):
        driver.fan_out(WARM_UP_MEMBERS)
        seconds = [timed(lambda n=n: driver.fan_out(n)) for n in bench.plan.fan_out]
    progress(f"fan-out: {driver.label}: {', '.join(f'{s:.1f} s' for s in seconds)}")
    return seconds


def run(bench: Bench) -> list[Row]:
    ours, theirs = times(bench, bench.jobrunner, "fan"), times(bench, bench.celery, "fan0")
    small, large = bench.plan.fan_out
    label = bench.celery.label
    rows = [
        row(NAME, f"chord of {n:,} (s)", label, a, b, "lower")
        for n, a, b in zip(bench.plan.fan_out, ours, theirs, strict=True)
    ]
    figure = f"scaling t({large:,})/t({small:,}) (x)"
    rows.append(
        row(NAME, figure, label, ours[1] / ours[0], theirs[1] / theirs[0], "lower", SCALING_GOAL)
    )
    return rows
