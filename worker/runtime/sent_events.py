"""Task-sent events from a worker's pool processes only while Flower watches.

Every message a step publishes (a chain's next link, a fan-out's members, a retry) costs one
Redis PUBLISH more for its task-sent event: a round trip per link, for nobody while nothing
watches. Clients always send theirs, so Flower knows a job's first step from the moment it is
queued. A worker's pool processes send theirs only while the worker's own task events are on,
which Flower turns on in every worker at start and every few seconds after (its enable_events
option, celery/worker/control.py `enable_events`), as it does the worker's other task events.

The consumer's timer copies "task events on" into shared memory made before the pool forks
(`note_watching`); each pool process reads it as a task starts (`follow`). Celery reads
`task_send_sent_event` at every send (celery/app/base.py `send_task`).
"""

from __future__ import annotations

import ctypes
import multiprocessing
from typing import Any

from celery import Celery

TASK_EVENTS = "task"  # the event group Flower's enable_events turns on

# Made at import, in the worker's main process (the heartbeat bootstep imports this module
# before the pool starts), so every pool process forked after shares it.
_WATCHED = multiprocessing.RawValue(ctypes.c_bool, False)


def note_watching(dispatcher: Any) -> None:
    """In the worker's main process: whether its task events are on now."""
    groups = getattr(dispatcher, "groups", None) or ()
    _WATCHED.value = bool(dispatcher is not None and dispatcher.enabled and TASK_EVENTS in groups)


def follow(app: Celery) -> None:
    """In a pool process, as a task starts: send task-sent events while they are watched."""
    watched = bool(_WATCHED.value)
    if app.conf.task_send_sent_event != watched:
        app.conf.task_send_sent_event = watched
