"""Steps that exercise the per-step metrics: memory, I/O, run time and ctx.metric figures."""

from __future__ import annotations

import logging
import time
from typing import Any

from jobrunner.tasks.pipeline import Pipeline
from jobrunner.tasks.registry import register_pipeline
from jobrunner.tasks.step import StepContext, StepPayload, step

MB = 1024 * 1024
log = logging.getLogger("tests.measured")


class MeasuredPayload(StepPayload):
    allocate_mb: int = 0  # held for the whole run, then freed
    write_mb: int = 0  # written to a file in the data dir
    sleep_ms: int = 0
    accuracy: float | None = None  # reported with ctx.metric when given
    fail: bool = False


@step(cpu=0.1)
def measured(payload: MeasuredPayload, upstream: Any, ctx: StepContext) -> str:
    log.info("measuring")  # a step's own log line: the job context is added to it
    held = bytearray(payload.allocate_mb * MB)  # bytearray writes every page: all resident
    if payload.write_mb:
        out = ctx.data_dir / "measured" / f"{ctx.job_id}.bin"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(bytes(payload.write_mb * MB))
    if payload.accuracy is not None:
        ctx.metric("accuracy", payload.accuracy)
        ctx.metric("null_rate", 0.01)
    time.sleep(payload.sleep_ms / 1000)
    if payload.fail:
        raise ValueError("asked to fail")
    del held
    return ctx.job_id


register_pipeline(Pipeline.model_validate({"name": "measured", "flow": {"step": "measured"}}))
register_pipeline(Pipeline.model_validate({"name": "paced", "flow": {"step": "measured"}}))
