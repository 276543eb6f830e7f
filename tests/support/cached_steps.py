"""A user's cached pipeline (`@step(cache=True)`): `produce` writes a file into the job's work
directory, `consume` reads it; each logs its runs to <data_dir>/cached-runs/<tag>, so a test can
tell a run from a reuse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobrunner.tasks.pipeline import Pipeline
from jobrunner.tasks.registry import register_pipeline
from jobrunner.tasks.step import StepContext, StepPayload, step


class TallyPayload(StepPayload):
    tag: str  # names this test's run log
    factor: int = 2


def log_of(data_dir: Path, tag: str) -> Path:
    return data_dir / "cached-runs" / tag


def _logged(ctx: StepContext, tag: str) -> None:
    log = log_of(ctx.data_dir, tag)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"{ctx.step} {ctx.job_id}\n")


@step(cache=True, version="1")
def produce(payload: TallyPayload, upstream: Any, ctx: StepContext) -> dict[str, Any]:
    _logged(ctx, payload.tag)
    out = ctx.work_dir / "numbers.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{i * payload.factor}\n" for i in range(1000)))
    return {"path": str(out), "rows": 1000}


@step(cache=True, version="1")
def consume(payload: TallyPayload, upstream: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    _logged(ctx, payload.tag)
    total = sum(int(line) for line in Path(upstream["path"]).read_text().splitlines())
    out = ctx.work_dir / "total.txt"
    out.write_text(f"{total}\n")
    return {"path": str(out), "total": total}


register_pipeline(
    Pipeline.model_validate(
        {"name": "cached", "flow": {"chain": [{"step": "produce"}, {"step": "consume"}]}}
    )
)


@step
def refuse(payload: TallyPayload, upstream: Any, ctx: StepContext) -> None:
    raise RuntimeError("refused, as this test pipeline always does")


register_pipeline(  # fails after a cached step, and is retried once as a new job
    Pipeline.model_validate(
        {
            "name": "cached_retried",
            "flow": {"chain": [{"step": "produce"}, {"step": "refuse"}]},
            "on_failure": "retry_job",
            "max_job_retries": 1,
            "job_retry_delay_s": 0,
        }
    )
)


class SourcePayload(StepPayload):
    tag: str
    source: str  # a file read besides the upstream: declared with `inputs=`


@step(cache=True, inputs=lambda payload, upstream: [payload.source])
def count_lines(payload: SourcePayload, upstream: Any, ctx: StepContext) -> int:
    _logged(ctx, payload.tag)
    return len(Path(payload.source).read_text().splitlines())
