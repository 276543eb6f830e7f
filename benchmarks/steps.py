"""Steps and pipelines for the benchmarks, loaded with JOBRUNNER_IMPORTS=benchmarks.steps.

They do (almost) nothing, so what a benchmark measures is jobrunner's own overhead: queueing,
priority, admission and job tracking. Names carry a `bench_` prefix so they never clash with the
sample or test steps.
"""

from __future__ import annotations

import time
from typing import Any

from tasks.pipeline import Pipeline
from tasks.registry import register_pipeline
from tasks.step import StepContext, StepPayload, step


class NoPayload(StepPayload):
    pass


class PausePayload(StepPayload):
    ms: int = 0


@step
def bench_noop(payload: NoPayload, upstream: Any, ctx: StepContext) -> None:
    """Declares the default 1 CPU, so admission control checks it like any real step."""


@step(cpu=0.1)  # it only waits, so it takes almost no CPU
def bench_pause(payload: PausePayload, upstream: Any, ctx: StepContext) -> None:
    """Holds a worker process for `ms` milliseconds: a stand-in for real work."""
    time.sleep(payload.ms / 1000)


for _name in ("bench_noop", "bench_pause"):
    register_pipeline(Pipeline.model_validate({"name": _name, "flow": {"step": _name}}))
