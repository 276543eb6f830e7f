"""Canvas plumbing tasks the compiler inserts; they carry the job context like steps do."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from celery import Celery, Task, chain, chord, shared_task, signature
from celery.canvas import Signature
from celery.exceptions import Ignore

from jobrunner.tasks.job_task import JobTask

_sending = threading.local()  # .producer: what this thread's Celery sends go through


def _acquire_override(original: Callable[..., Any]) -> Callable[..., Any]:
    """Celery's `app.producer_or_acquire`, except in a thread inside `sending_through`."""

    def acquire(producer: Any = None) -> Any:
        chosen = getattr(_sending, "producer", None)
        return nullcontext(chosen) if chosen is not None else original(producer)

    acquire.jobrunner_override = True  # type: ignore[attr-defined]
    return acquire


@contextmanager
def sending_through(app: Celery, producer: Any) -> Iterator[None]:
    """Every message this thread sends with `app` in the block goes through `producer` (a
    batching or a recording one). Passing `producer=` to `apply_async` is not enough: a
    chain's `run` drops it, and `Task.replace` takes none."""
    if not getattr(app.producer_or_acquire, "jobrunner_override", False):
        app.producer_or_acquire = _acquire_override(app.producer_or_acquire)
    previous = getattr(_sending, "producer", None)
    _sending.producer = producer
    try:
        yield
    finally:
        _sending.producer = previous


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


def is_chain(sig: Any) -> bool:
    """Whether `sig` is a chain, however it was built. A chain rebuilt from a message
    (`signature`, `maybe_signature`) is of Celery's private class `_chain`, not of the public
    `chain`; both carry the public `subtask_type`."""
    return isinstance(sig, Signature) and sig.subtask_type == "chain"


def with_input(sig: Signature, item: Any) -> Signature:
    """A copy of `sig` whose first task receives `item` as its upstream result.

    Not `sig.clone(args=...)`: Celery drops the args of a cloned chain (`_chain.from_dict`).
    """
    if is_chain(sig):
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
    # One Redis pipeline for the whole header (and its task-sent events), not a round trip or
    # two per member: for 1,000 members that was half the fan-out's time. `replace` ends by
    # raising Ignore, which must not abort the batch: the messages are flushed, then it is raised.
    app, replaced = self.app, None
    with (
        app.producer_or_acquire() as producer,
        producer.batch(max_size=4 * len(members) + 16),
        sending_through(app, producer),
    ):
        try:
            result = self.replace(chord(members, join_sig, app=app))
        except Ignore as error:
            replaced = error
    if replaced is not None:
        raise replaced
    return result  # run eagerly: the chord's result
