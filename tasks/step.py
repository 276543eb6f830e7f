"""`@step`: turn a typed function into a Celery task that a pipeline can compose.

A step function is called as ``fn(payload=..., upstream=..., ctx=...)``:

- ``payload`` is the job's payload validated into the step's own model (the type annotation of
  the ``payload`` parameter, a `StepPayload` subclass);
- ``upstream`` is what the previous step returned (a list of results after a parallel group, one
  item inside a ``map``, None at the start);
- ``ctx`` says which job, pipeline, tier and step this is, and where the data directory is.

Steps register through Celery's `shared_task`, so this module never needs the app (tasks/ must not
import worker/).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from celery import shared_task
from pydantic import BaseModel, ConfigDict

from jobrunner.config import get_settings
from jobrunner.config.settings import RESOURCE_CLASS as RESOURCE_CLASS_PATTERN
from jobrunner.tasks.cache import (
    CACHED,
    USE_CACHE,
    CachedCall,
    CacheSpec,
    CacheStore,
    Inputs,
    Reuse,
    code_version,
    run_cached,
    store_of,
)
from jobrunner.tasks.errors import PipelineError
from jobrunner.tasks.job_task import JobTask
from jobrunner.tasks.retry import RetryPolicy

STEP_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
RESOURCE_CLASS = re.compile(RESOURCE_CLASS_PATTERN)
STEP_TASK_PREFIX = "step."
METRIC_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# Where a run's `ctx.metric` figures ride in the job context, for the middleware to export.
REPORTED = "reported_metrics"
JOB_ID = re.compile(r"[0-9a-f]{32}")  # uuid.uuid4().hex, as worker/client.py makes them


class StepPayload(BaseModel):
    """Base of step payload models: immutable, and blind to fields other steps declare."""

    model_config = ConfigDict(extra="ignore", frozen=True)


@dataclass(frozen=True)
class StepContext:
    job_id: str
    pipeline: str
    tier: str
    step: str
    data_dir: Path
    metrics: dict[str, float] = field(default_factory=dict, compare=False)
    metrics_max: int = 16
    use_cache: bool = True  # False: the job was submitted with cache=False (`--no-cache`)

    def metric(self, name: str, value: float) -> None:
        """Report a figure of this run (model accuracy, a null rate): exported per {pipeline,
        step, name}, kept on the job record, and watched by the anomaly alerts. Names are
        identifiers and few per step (`metrics.step_metrics_max`), so label sets stay bounded."""
        if not METRIC_NAME.match(name):
            raise PipelineError(f"metric name {name!r} must match {METRIC_NAME.pattern}")
        if name not in self.metrics and len(self.metrics) >= self.metrics_max:
            raise PipelineError(
                f"step {self.step} reports more than {self.metrics_max} metrics "
                "(metrics.step_metrics_max)"
            )
        self.metrics[name] = float(value)

    @property
    def work_dir(self) -> Path:
        """Where the job's steps hand files to each other, <data_dir>/work/<job_id>/: the files
        a cached step returns must be here to be cached with its result."""
        if not JOB_ID.fullmatch(self.job_id):  # it forms a path: never a forged one
            raise PipelineError(f"{self.job_id!r} is not a job id ({JOB_ID.pattern})")
        return self.data_dir / "work" / self.job_id


@dataclass(frozen=True)
class Resources:
    """What one run of a step needs; workers admit it only while the host has this headroom."""

    cpu: float = 1.0  # CPU cores (a share: 0.25 for a step that mostly waits on I/O)
    memory_mb: int = 0  # memory the step allocates beyond an idle worker process
    resource: str | None = None  # a resource class (e.g. "gpu"): only pools serving it run it

    def __post_init__(self) -> None:
        if self.cpu < 0 or self.memory_mb < 0:
            raise PipelineError(f"resources must not be negative: {self}")
        if self.resource is not None and not RESOURCE_CLASS.match(self.resource):
            raise PipelineError(
                f"resource class {self.resource!r} must match {RESOURCE_CLASS.pattern}"
            )


NO_RESOURCES = Resources(cpu=0.0)  # the canvas plumbing tasks: always admitted


@dataclass(frozen=True)
class StepSpec:
    name: str
    task_name: str
    payload_model: type[StepPayload]
    fn: Callable[..., Any]
    needs: Resources
    retry: RetryPolicy | None = None
    uses: tuple[str, ...] = ()  # shared resources capped fleet-wide ([limits.NAME])
    cache: CacheSpec | None = None  # reuses earlier runs' outputs (tasks/cache.py)


_STEPS: dict[str, StepSpec] = {}


def registered_steps() -> dict[str, StepSpec]:
    return dict(_STEPS)


def needs_by_task() -> dict[str, Resources]:
    """Declared resources keyed by Celery task name; tasks not listed need nothing."""
    return {spec.task_name: spec.needs for spec in _STEPS.values()}


def get_step(name: str) -> StepSpec:
    try:
        return _STEPS[name]
    except KeyError:
        known = ", ".join(sorted(_STEPS)) or "none"
        raise PipelineError(f"unknown step {name!r} (registered steps: {known})") from None


def _payload_model(fn: Callable[..., Any]) -> type[StepPayload]:
    model = get_type_hints(fn).get("payload")
    if not (isinstance(model, type) and issubclass(model, StepPayload)):
        raise PipelineError(
            f"step {fn.__name__}: annotate the `payload` parameter with a StepPayload subclass"
        )
    return model


def _jsonable(value: Any) -> Any:
    """Results travel as JSON; let steps return pydantic models as well as plain data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


@functools.lru_cache(maxsize=8)
def _resolved(data_dir: Path) -> Path:
    """The data dir with its links resolved, once per process: every step run asked the
    filesystem again (4% of a no-op step's time in its pool process, measured with py-spy)."""
    return data_dir.resolve()


def step(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    cpu: float = 1.0,
    memory_mb: int = 0,
    resource: str | None = None,
    retry: RetryPolicy | None = None,
    uses: Sequence[str] = (),
    time_limit: int | None = None,
    soft_time_limit: int | None = None,
    cache: bool = False,
    version: str = "",
    inputs: Inputs | None = None,
    reuse: Reuse | None = None,
) -> Any:
    """Register `fn` as a pipeline step: bare ``@step``, or ``@step(name=..., cpu=...,
    memory_mb=..., resource=...)`` to declare what one run needs (see `Resources`), with an
    optional retry policy and time limits (seconds; default: the configured step limits).
    `uses` names shared resources whose fleet-wide caps ([limits.NAME]) hold its runs back.

    `cache=True` reuses an earlier run's result and output files when the code `version`
    (and the source of the module and its helpers), the payload and the inputs match (see
    tasks/cache.py): for deterministic steps only. `inputs(payload, upstream)` names files read
    besides the upstream, keyed by content; `reuse(result, upstream, ctx)` adapts a reused
    result."""
    needs = Resources(cpu=cpu, memory_mb=memory_mb, resource=resource)

    def register(fn: Callable[..., Any]) -> Any:
        step_name = name or fn.__name__
        if not STEP_NAME.match(step_name):
            raise PipelineError(f"step name {step_name!r} must match {STEP_NAME.pattern}")
        if step_name in _STEPS and _STEPS[step_name].fn is not fn:
            raise PipelineError(f"step {step_name!r} is registered twice")
        model = _payload_model(fn)
        task_name = STEP_TASK_PREFIX + step_name

        limits = {"time_limit": time_limit, "soft_time_limit": soft_time_limit}

        spec = StepSpec(
            step_name,
            task_name,
            model,
            fn,
            needs,
            retry,
            tuple(sorted(set(uses))),
            CacheSpec(code_version(fn, version), inputs, reuse) if cache else None,
        )

        @shared_task(
            name=task_name,
            base=JobTask,
            bind=True,
            **{k: v for k, v in limits.items() if v is not None},
        )
        def run(
            task: JobTask, upstream: Any = None, *, job: dict[str, Any], payload: dict[str, Any]
        ) -> Any:
            settings = get_settings()
            ctx = StepContext(
                job_id=job["id"],
                pipeline=job["pipeline"],
                tier=job["tier"],
                step=step_name,
                data_dir=_resolved(settings.data_dir),
                metrics_max=settings.metrics.step_metrics_max,
                use_cache=job.get(USE_CACHE, True),
            )
            job[REPORTED] = ctx.metrics  # seen by the middleware, also when the step fails
            store = store_of(task.app) if spec.cache is not None else None
            result, job[CACHED] = call_step(spec, payload, upstream, ctx, store, ctx.use_cache)
            return result

        run.__doc__ = fn.__doc__
        _STEPS[step_name] = spec
        return fn

    return register(fn) if fn is not None else register


def call_step(
    spec: StepSpec,
    payload: dict[str, Any],
    upstream: Any,
    ctx: StepContext,
    store: CacheStore | None,
    use_cache: bool = True,
) -> tuple[Any, bool]:
    """One run of a step: its result as JSON, and whether it was reused from the cache (`store`:
    where entries are kept; None runs every step)."""
    validated = spec.payload_model.model_validate(payload)

    def compute() -> Any:
        return _jsonable(spec.fn(payload=validated, upstream=upstream, ctx=ctx))

    if spec.cache is None:
        return compute(), False
    params = validated.model_dump(mode="json")
    call = CachedCall(spec.name, spec.cache, ctx, params, validated, upstream)
    return run_cached(store, call, use_cache, compute)
