"""A step needing the `gpu` resource class; loaded only by tests that configure a pool for it."""

from __future__ import annotations

import os
from typing import Any

from jobrunner.tasks.pipeline import Pipeline
from jobrunner.tasks.registry import register_pipeline
from jobrunner.tasks.step import StepContext, StepPayload, step

MARK = "TEST_WORKER_MARK"  # each test worker says who it is through this variable


class NoPayload(StepPayload):
    pass


@step(resource="gpu", cpu=0.1)
def train(payload: NoPayload, upstream: str, ctx: StepContext) -> str:
    """Returns which worker ran the step before it, then which ran this one."""
    return f"{upstream}->{os.environ.get(MARK, 'unmarked')}"


@step(cpu=0.1)
def where(payload: NoPayload, upstream: Any, ctx: StepContext) -> str:
    return os.environ.get(MARK, "unmarked")


register_pipeline(
    Pipeline.model_validate(
        {"name": "train", "flow": {"chain": [{"step": "where"}, {"step": "train"}]}}
    )
)
