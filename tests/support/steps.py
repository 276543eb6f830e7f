"""Small steps and pipelines for the test suite, loaded through JOBRUNNER_IMPORTS."""

from __future__ import annotations

import os
import time
from typing import Any

import redis

from tasks.pipeline import Pipeline
from tasks.registry import register_pipeline
from tasks.step import StepContext, StepPayload, step

STARTS = "test:starts"  # Redis list: the tag of every `sleep` step, in the order they started


class SleepPayload(StepPayload):
    sleep_ms: int = 0
    tag: str = ""


class StartPayload(StepPayload):
    start: int = 0


class FailPayload(StepPayload):
    fail_on: tuple[int, ...] = ()


class CountPayload(StepPayload):
    count: int = 3


class NoPayload(StepPayload):
    pass


@step(cpu=0.1)  # it only waits, so many fit on one CPU
def sleep(payload: SleepPayload, upstream: Any, ctx: StepContext) -> str:
    redis.Redis.from_url(os.environ["JOBRUNNER_BROKER_URL"]).rpush(STARTS, payload.tag)
    time.sleep(payload.sleep_ms / 1000)
    return payload.tag


@step
def one(payload: StartPayload, upstream: Any, ctx: StepContext) -> int:
    return payload.start


@step
def inc(payload: NoPayload, upstream: int, ctx: StepContext) -> int:
    return upstream + 1


@step
def total(payload: NoPayload, upstream: list[int], ctx: StepContext) -> int:
    return sum(upstream)


@step
def numbers(payload: CountPayload, upstream: Any, ctx: StepContext) -> list[int]:
    return list(range(payload.count))


@step
def fail_if(payload: FailPayload, upstream: int, ctx: StepContext) -> int:
    if upstream in payload.fail_on:
        raise ValueError(f"item {upstream} is bad")
    return upstream


@step(memory_mb=4000)
def hog(payload: NoPayload, upstream: Any, ctx: StepContext) -> str:
    """Declares 4 GB (allocates nothing): the tests move the memory reserve around it."""
    return "fed"


@step(memory_mb=10**9)
def mammoth(payload: NoPayload, upstream: Any, ctx: StepContext) -> None:
    """Needs a petabyte: no host can ever run it."""


@step
def explode(payload: NoPayload, upstream: Any, ctx: StepContext) -> None:
    raise RuntimeError("boom")


def _pipeline(name: str, flow: dict[str, Any]) -> None:
    register_pipeline(Pipeline.model_validate({"name": name, "flow": flow}))


ONE, INC, TOTAL = {"step": "one"}, {"step": "inc"}, {"step": "total"}
_pipeline("sleepy", {"step": "sleep"})
_pipeline("hungry", {"step": "hog"})
_pipeline("too_big", {"step": "mammoth"})
_pipeline("chain3", {"chain": [ONE, INC, INC]})
_pipeline("group_sum", {"chain": [ONE, {"group": [INC, INC, INC]}, TOTAL]})
_pipeline("chord_first", {"chord": [ONE, ONE], "then": TOTAL})
_pipeline(
    "nested",
    {"chain": [ONE, {"chord": [{"chain": [INC, INC]}, INC], "then": TOTAL}, INC]},
)
_pipeline(
    "map_sum",
    {"chain": [{"step": "numbers"}, {"map": {"chain": [INC, {"step": "fail_if"}]}}, TOTAL]},
)
_pipeline("fails", {"chain": [ONE, {"step": "explode"}, INC]})
BOOM = {"step": "explode"}
_pipeline("group_fails", {"chain": [ONE, {"group": [INC, BOOM, {"chain": [INC, BOOM]}]}, TOTAL]})
