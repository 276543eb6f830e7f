"""Data: the `features` pipeline over generated inputs of each planned size (benchmarks/data.py
runs it), against a single-process pyarrow baseline doing the same transformation in the same
run: rows/s, the largest step's peak RSS, and how much faster a fully cached rerun is."""

from __future__ import annotations

from jobrunner.benchmarks.data import measure
from jobrunner.benchmarks.harness import progress
from jobrunner.benchmarks.report import Goal, Row, row
from jobrunner.benchmarks.scenarios import Bench

NAME = "data"
WORKERS = 2  # processes running partitions at once
RATE_GOAL = Goal("ratio", ">=", 1.5)
RSS_GOAL = Goal("jobrunner", "<=", 1024)  # MB, every step at every size
CACHE_GOAL = Goal("ratio", ">=", 10)


def run(bench: Bench) -> list[Row]:
    rows = []
    for megabytes in bench.plan.data_sizes_mb:
        found = measure(megabytes, WORKERS)
        size = f"{megabytes:g} MB"
        peak = max(found.steps, key=lambda step: step.peak_mb)
        progress(
            f"data: {size}: {found.rows / found.pipeline_s:,.0f} rows/s, peak RSS "
            f"{peak.peak_mb:.0f} MB ({peak.step}), cached rerun {found.cached_s:.1f} s, "
            f"baseline {found.rows / found.baseline_s:,.0f} rows/s, 1-min load "
            f"{found.load[0]:.1f} -> {found.load[1]:.1f}"
        )
        rows += [
            *(
                row(
                    NAME,
                    f"rows/s, {size}, {WORKERS} processes",
                    baseline,
                    found.rows / found.pipeline_s,
                    found.rows / seconds,
                    "higher",
                    goal,
                )
                for baseline, seconds, goal in (
                    ("pyarrow, 1 process", found.baseline_s, RATE_GOAL),
                    # how the worker processes scale against one process on one core
                    ("pyarrow, 1 process, 1 thread", found.baseline_one_thread_s, None),
                )
            ),
            *(
                row(
                    NAME,
                    f"peak RSS {step.step}, {size} (MB)",
                    "",
                    step.peak_mb,
                    None,
                    "lower",
                    RSS_GOAL,
                )
                for step in found.steps
            ),
            row(
                NAME,
                f"fully cached rerun, {size} (s)",
                "first run",
                found.cached_s,
                found.pipeline_s,
                "lower",
                CACHE_GOAL,
            ),
        ]
    return rows
