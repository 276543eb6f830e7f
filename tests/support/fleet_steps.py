"""A step for the fleet tests (tests/playbooks/test_fleet.py): it says which host ran it, and
writes one output file per tag atomically, so re-runs and stale runs can be counted."""

from __future__ import annotations

import os
import time
from typing import Any

import redis

from jobrunner.tasks.pipeline import Pipeline
from jobrunner.tasks.registry import register_pipeline
from jobrunner.tasks.step import StepContext, StepPayload, step

RUNS = "fleet:runs"  # Redis list: "TAG HOST" for every run that started, in order
RELEASE = "FLEET_RELEASE"  # environment variable: the release a worker runs
OUTPUTS = "outputs"  # under the host's data dir: TAG.txt, one per finished run


class HoldPayload(StepPayload):
    until: float = 0.0  # epoch seconds it runs until, so a re-run ends when the first would
    tag: str = ""


def host_of(ctx: StepContext) -> str:
    """The fleet host this worker runs on: its prefix's name (<prefix>/data is the data dir)."""
    return ctx.data_dir.parent.name


@step(cpu=0.1)  # it only waits, so several fit on one CPU
def hold(payload: HoldPayload, upstream: Any, ctx: StepContext) -> str:
    host = host_of(ctx)
    client = redis.Redis.from_url(os.environ["JOBRUNNER_BROKER_URL"], socket_timeout=10)
    client.rpush(RUNS, f"{payload.tag} {host}")
    time.sleep(max(0.0, payload.until - time.time()))
    out = ctx.data_dir / OUTPUTS / f"{payload.tag}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_suffix(f".{os.getpid()}.tmp")
    temp.write_text(host)
    os.replace(temp, out)
    # The release the fleet test rolls out (tests/playbooks/test_fleet.py): A, then B.
    return f"{payload.tag} {host} {os.environ.get(RELEASE, 'A')}"


register_pipeline(Pipeline.model_validate({"name": "hold", "flow": {"step": "hold"}}))
