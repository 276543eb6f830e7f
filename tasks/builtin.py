"""Canvas plumbing tasks the compiler inserts; they carry the job context like steps do."""

from __future__ import annotations

from typing import Any

from celery import Task, chain, chord, shared_task, signature
from celery.canvas import Signature, _chain

from tasks.job_task import JobTask

START_TASK = "jobrunner.start"
COLLECT_TASK = "jobrunner.collect"
FAN_OUT_TASK = "jobrunner.fan_out"


@shared_task(name=START_TASK, base=JobTask)
def start(*, job: dict[str, Any]) -> None:
    """First message of a job whose flow opens in parallel, so submission is one atomic send."""


@shared_task(name=COLLECT_TASK, base=JobTask)
def collect(results: list[Any], *, job: dict[str, Any]) -> list[Any]:
    """Fan-in point of every group: returns the members' results in declaration order."""
    return results


def with_input(sig: Signature, item: Any) -> Signature:
    """A copy of `sig` whose first task receives `item` as its upstream result.

    Not `sig.clone(args=...)`: Celery drops the args of a cloned chain (`_chain.from_dict`).
    """
    if isinstance(sig, _chain):
        first, *rest = sig.tasks
        return chain(with_input(first, item), *(task.clone() for task in rest), app=sig.app)
    return sig.clone(args=(item,))


@shared_task(name=FAN_OUT_TASK, bind=True, base=JobTask)
def fan_out(
    self: Task, upstream: Any, *, member: dict[str, Any], join: dict[str, Any], job: dict[str, Any]
) -> Any:
    """Replace itself by a chord with one `member` per upstream item, joined by `join`."""
    if not isinstance(upstream, list):
        raise TypeError(f"map needs a list from the node before it, got {type(upstream).__name__}")
    join_sig = signature(join, app=self.app)
    if not upstream:
        return self.replace(join_sig.clone(args=([],)))
    template = signature(member, app=self.app)
    members = [with_input(template, item) for item in upstream]
    return self.replace(chord(members, join_sig, app=self.app))
