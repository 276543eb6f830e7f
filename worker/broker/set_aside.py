"""Setting refused messages aside: a message that cannot or must not run (undecodable, not JSON,
an unknown or foreign task, a step for no job) leaves its queue and its lease in one atomic step
and is kept, with the reason, for a person to list, inspect and purge (worker/store/set_aside.py,
`jobrunner set-aside`). The worker logs one line and goes on; nothing is retried from here.

The fetch script (lua/fetch.lua) sets aside queue entries that are no kombu message at all; the
transport (worker/broker/transport.py) those whose body cannot be decoded or which name a task
outside jobrunner's registry; the admission bootstep those whose job context does not check out.
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any

import redis

from jobrunner.worker.broker import scripts
from jobrunner.worker.broker.keys import SET_ASIDE, SET_ASIDE_ENTRY, SET_ASIDE_SEQ

# What the scripts that set messages aside share (their KEYS and the entry prefix).
KEYS = (SET_ASIDE, SET_ASIDE_SEQ)
PREFIX = SET_ASIDE_ENTRY
REASON_MAX_CHARS = 500  # of a reason kept: an exception's text can be long (a huge number)


@cache
def _source() -> str:
    return scripts.load("set_aside_fn") + scripts.load("set_aside")


def set_aside(
    client: redis.Redis,
    message: str,
    reason: str,
    queue: str,
    unacked: tuple[str, str] = ("unacked", "unacked_index"),
) -> int:
    """Keep `message` (its text as it was queued) with `reason`; drop its lease if it has one
    (`unacked`: kombu's unacked hash and index). The new entry's id."""
    keys: list[Any] = [*KEYS, *unacked]
    args = [repr(time.time()), reason[:REASON_MAX_CHARS], queue, message, PREFIX]
    return int(client.register_script(_source())(keys=keys, args=args))
