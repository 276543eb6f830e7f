"""Small steps and pipelines for the test suite, loaded through JOBRUNNER_IMPORTS."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import redis

from jobrunner.tasks.pipeline import Pipeline
from jobrunner.tasks.registry import register_pipeline
from jobrunner.tasks.retry import RetryPolicy
from jobrunner.tasks.step import StepContext, StepPayload, step

STARTS = "test:starts"  # Redis list: the tag of every `sleep` step, in the order they started
ATTEMPTS = "test:attempts:"  # per job: how many times its flaky/output step ran


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


class FlakyPayload(StepPayload):
    fail_times: int = 0  # attempts that fail before one succeeds
    error: str = "ConnectionError"


class OutputPayload(StepPayload):
    work_ms: int = 10


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


def _attempt(job_id: str) -> int:
    """Counts this job's attempts in Redis, so a test can see retries and re-runs."""
    client = redis.Redis.from_url(os.environ["JOBRUNNER_BROKER_URL"])
    return int(client.incr(ATTEMPTS + job_id))


def _flaky(payload: FlakyPayload, ctx: StepContext) -> int:
    attempt = _attempt(ctx.job_id)
    if attempt <= payload.fail_times:
        raise {"ConnectionError": ConnectionError, "ValueError": ValueError}[payload.error](
            f"attempt {attempt} failed"
        )
    return attempt


@step(retry=RetryPolicy(on=("ConnectionError",), max_retries=3, backoff_s=0.05, jitter=False))
def flaky(payload: FlakyPayload, upstream: Any, ctx: StepContext) -> int:
    return _flaky(payload, ctx)


@step
def flaky_plain(payload: FlakyPayload, upstream: Any, ctx: StepContext) -> int:
    """No retry policy of its own: the pipeline node declares one."""
    return _flaky(payload, ctx)


@step(cpu=0.1)
def write_output(payload: OutputPayload, upstream: Any, ctx: StepContext) -> str:
    """An idempotent side effect: one output file per job, written atomically, so a re-run
    after a crash rewrites the same complete file."""
    time.sleep(payload.work_ms / 1000)
    out = ctx.data_dir / "outputs" / f"{ctx.job_id}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_suffix(f".{os.getpid()}.tmp")
    temp.write_text(ctx.job_id)
    os.replace(temp, out)
    _attempt(ctx.job_id)
    return str(out)


@step
def suicide(payload: NoPayload, upstream: Any, ctx: StepContext) -> None:
    """Poison: kills its own process every time it runs."""
    os.kill(os.getpid(), signal.SIGKILL)


@step
def explode(payload: NoPayload, upstream: Any, ctx: StepContext) -> None:
    raise RuntimeError("boom")


def _pipeline(name: str, flow: dict[str, Any]) -> None:
    register_pipeline(Pipeline.model_validate({"name": name, "flow": flow}))


ONE, INC, TOTAL = {"step": "one"}, {"step": "inc"}, {"step": "total"}
_pipeline("sleepy", {"step": "sleep"})
_pipeline("hungry", {"step": "hog"})
_pipeline("flaky", {"step": "flaky"})
_pipeline(
    "flaky_node",
    {"step": "flaky_plain", "retry": {"max_retries": 2, "backoff_s": 0.05, "jitter": False}},
)
_pipeline("output", {"step": "write_output"})
_pipeline("poison", {"step": "suicide"})
_pipeline("too_big", {"step": "mammoth"})
_pipeline("chain3", {"chain": [ONE, INC, INC]})
_pipeline("chain200", {"chain": [ONE, *[INC] * 199]})  # each message embeds every later link
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
register_pipeline(
    Pipeline.model_validate(
        {
            "name": "fails_retried",
            "flow": BOOM,
            "on_failure": "retry_job",
            "max_job_retries": 2,
            "job_retry_delay_s": 0,
        }
    )
)
_pipeline("group_fails", {"chain": [ONE, {"group": [INC, BOOM, {"chain": [INC, BOOM]}]}, TOTAL]})
SLEEP = {"step": "sleep"}
_pipeline("sleep_group", {"group": [SLEEP, SLEEP, SLEEP]})


class FilesPayload(StepPayload):
    files: tuple[str, ...] = ()


@step
def count_files(payload: FilesPayload, upstream: Any, ctx: StepContext) -> int:
    return len(payload.files)


_pipeline("arrivals", {"step": "count_files"})


SPANS = "test:spans"  # Redis list: {tag, start, end} of every `load_warehouse` run


@step(cpu=0.1, uses=["warehouse"])
def load_warehouse(payload: SleepPayload, upstream: Any, ctx: StepContext) -> str:
    """Uses the shared `warehouse` resource (capped fleet-wide in the limit tests)."""
    start = time.time()
    time.sleep(payload.sleep_ms / 1000)
    span = {"tag": payload.tag, "start": start, "end": time.time()}
    redis.Redis.from_url(os.environ["JOBRUNNER_BROKER_URL"]).rpush(SPANS, json.dumps(span))
    return payload.tag


_pipeline("warehouse", {"step": "load_warehouse"})
