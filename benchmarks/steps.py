"""Steps and pipelines for the benchmarks, loaded with JOBRUNNER_IMPORTS=benchmarks.steps.

They do (almost) nothing, so what a benchmark measures is jobrunner's own overhead: queueing,
priority, admission and job tracking. Names carry a `bench_` prefix so they never clash with the
sample or test steps.
"""

from __future__ import annotations

import time
from typing import Any

from jobrunner.tasks.pipeline import Pipeline
from jobrunner.tasks.registry import register_pipeline
from jobrunner.tasks.step import StepContext, StepPayload, step


class NoPayload(StepPayload):
    pass


class PausePayload(StepPayload):
    ms: int = 0


class RangePayload(StepPayload):
    items: int = 0


@step
def bench_noop(payload: NoPayload, upstream: Any, ctx: StepContext) -> None:
    """Declares the default 1 CPU, so admission control checks it like any real step."""


@step(cpu=0.1)  # it only waits, so it takes almost no CPU
def bench_pause(payload: PausePayload, upstream: Any, ctx: StepContext) -> None:
    """Holds a worker process for `ms` milliseconds: a stand-in for real work."""
    time.sleep(payload.ms / 1000)


@step(cpu=0.1)
def bench_echo(payload: NoPayload, upstream: Any, ctx: StepContext) -> int:
    """A job whose result the client fetches."""
    return 1


@step(cpu=0.1)
def bench_count(payload: NoPayload, upstream: Any, ctx: StepContext) -> int:
    """A chain link or fan-out member that passes data on: upstream + 1."""
    return (upstream or 0) + 1


@step(cpu=0.1)
def bench_range(payload: RangePayload, upstream: Any, ctx: StepContext) -> list[int]:
    """The list a `map` fans out over: one member per item."""
    return list(range(payload.items))


for _name in ("bench_noop", "bench_pause", "bench_echo"):
    register_pipeline(Pipeline.model_validate({"name": _name, "flow": {"step": _name}}))

FAN_OUT = register_pipeline(
    Pipeline.model_validate(
        {
            "name": "bench_fan_out",
            "flow": {"chain": [{"step": "bench_range"}, {"map": {"step": "bench_count"}}]},
        }
    )
).name


def chain_pipeline(depth: int) -> str:
    """Register (once) a pipeline of `depth` bench_count steps in sequence; its name.

    Pipelines are compiled by the client, so only the process that submits needs this."""
    links = [{"step": "bench_count"}] * depth
    flow = {"chain": links} if depth > 1 else links[0]
    name = f"bench_chain_{depth}"
    return register_pipeline(Pipeline.model_validate({"name": name, "flow": flow})).name
