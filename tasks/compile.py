"""Compile a pipeline declaration and a validated payload into one Celery canvas.

Every task of the canvas is routed to the job's tier queue and carries the job context
(id, pipeline, tier, step) in its kwargs, where Flower and the tracking hooks can read it.
Each group becomes a chord joined by the `collect` task, so a fan-out always ends in one known
task whatever follows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, chain, chord
from celery.canvas import Signature

from jobrunner.tasks.builtin import COLLECT_TASK, FAN_OUT_TASK, START_TASK, is_chain
from jobrunner.tasks.cache import USE_CACHE
from jobrunner.tasks.errors import PipelineError
from jobrunner.tasks.pipeline import (
    ChainNode,
    ChordNode,
    GroupNode,
    MapNode,
    Node,
    Pipeline,
    StepNode,
)
from jobrunner.tasks.step import NO_RESOURCES, Resources, get_step


@dataclass(frozen=True)
class JobSpec:
    """What is being compiled: one job of `pipeline` at `tier`, sent to `queue`."""

    id: str
    pipeline: Pipeline
    tier: str
    queue: str
    payload: dict[str, Any]
    resource_queues: Mapping[str, str] = field(default_factory=dict)  # class -> queue, this tier
    cache: bool = True  # False: cached steps run again (tasks/cache.py)

    def queue_for(self, resources: Resources) -> str:
        if resources.resource is None:
            return self.queue
        try:
            return self.resource_queues[resources.resource]
        except KeyError:
            raise PipelineError(
                f"pipeline {self.pipeline.name} needs resource class {resources.resource!r}, "
                "which no pool serves"
            ) from None


class _Compiler:
    def __init__(self, app: Celery, job: JobSpec) -> None:
        self.app = app
        self.job = job

    def _context(self, step: str, *, final: bool, in_header: bool) -> dict[str, Any]:
        context: dict[str, Any] = {
            "id": self.job.id,
            "pipeline": self.job.pipeline.name,
            "tier": self.job.tier,
            "step": step,
        }
        # Only the flags that are set, to keep the kwargs Flower shows short.
        if final:
            context["final"] = True
        if in_header:
            context["in_header"] = True
        if not self.job.cache:
            context[USE_CACHE] = False
        return context

    def task(
        self,
        name: str,
        step: str,
        *,
        final: bool,
        in_header: bool,
        needs: Resources = NO_RESOURCES,
        **kwargs: Any,
    ) -> Any:
        job = self._context(step, final=final, in_header=in_header)
        queue = self.job.queue_for(needs)
        # No task's result is read from the result backend: results travel to the next task in
        # its message, fan-ins count through the chord's own Redis list, and the job's outcome
        # is written to its job record. Storing each would cost a write (and, for the first
        # task, a client pub/sub subscription) per task for nothing.
        return self.app.signature(
            name, kwargs={"job": job, **kwargs}, queue=queue, ignore_result=True
        )

    def _join(self, *, final: bool, in_header: bool) -> Signature:
        return self.task(COLLECT_TASK, "collect", final=final, in_header=in_header)

    def node(self, node: Node, *, final: bool, in_header: bool) -> Signature:
        match node:
            case StepNode(step=name, retry=node_retry, uses=node_uses):
                spec = get_step(name)
                sig = self.task(
                    spec.task_name,
                    name,
                    final=final,
                    in_header=in_header,
                    needs=spec.needs,
                    payload=self.job.payload,
                )
                policy = node_retry or spec.retry
                if policy is not None:
                    sig.kwargs["job"]["retry"] = policy.model_dump(mode="json")
                uses = sorted({*spec.uses, *node_uses})
                if uses:  # the worker leases a slot of each (worker/runtime/limits.py)
                    sig.kwargs["job"]["uses"] = uses
                return sig
            case ChainNode(chain=children):
                last = len(children) - 1
                parts = [
                    self.node(child, final=final and i == last, in_header=in_header)
                    for i, child in enumerate(children)
                ]
                return parts[0] if len(parts) == 1 else chain(*parts, app=self.app)
            case GroupNode(group=children):
                members = [self.node(child, final=False, in_header=True) for child in children]
                return chord(members, self._join(final=final, in_header=in_header), app=self.app)
            case ChordNode(chord=children, then=then):
                return self.node(
                    ChainNode(chain=[GroupNode(group=children), then]),
                    final=final,
                    in_header=in_header,
                )
            case MapNode(map=child):
                member = self.node(child, final=False, in_header=True)
                join = self._join(final=final, in_header=in_header)
                return self.task(
                    FAN_OUT_TASK,
                    "map",
                    final=False,
                    in_header=in_header,
                    member=dict(member),
                    join=dict(join),
                )
        raise AssertionError(f"unhandled node {node!r}")


def compile_job(app: Celery, job: JobSpec) -> Signature:
    """The job's canvas. Its first task is a single message, so one send enqueues the whole job;
    that task's context is flagged `first` (the job starts when it starts)."""
    compiler = _Compiler(app, job)
    canvas = compiler.node(job.pipeline.flow, final=True, in_header=False)
    first = canvas
    while is_chain(first):
        first = first.tasks[0]
    if isinstance(first, chord):
        first = compiler.task(START_TASK, "start", final=False, in_header=False)
        canvas = chain(first, canvas, app=app)
    first.kwargs["job"]["first"] = True
    return canvas
