"""Starvation guard: a message that waited longer than `starvation.promote_after_s` in a low or
medium queue moves up one tier (within its resource class), so a steady stream of higher work
cannot starve it forever. Each move is recorded on the job.

Kombu's Redis transport LPUSHes on publish and workers BRPOP, so a queue's oldest message is at
the right end (index -1), and pushing on the right makes a message the next one taken. Publishers
stamp the time a message entered its queue in a header (worker/broker/queues.py); a promotion
re-stamps it, so the wait in the new queue starts from the move.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import redis

from jobrunner.config import TIERS, Settings
from jobrunner.worker.broker import scripts
from jobrunner.worker.broker.keys import wake_key
from jobrunner.worker.broker.queues import QUEUED_AT_HEADER
from jobrunner.worker.broker.transport import TOKEN
from jobrunner.worker.store.jobs import JobStore, open_store

MAX_MOVES_PER_RUN = 1000  # bounds one run's work, whatever the backlog
BATCH = 100  # messages inspected and moved per script call
MAX_LOST_RACES = 10  # re-inspections per queue and run after a worker took what we inspected

log = logging.getLogger("jobrunner.promotion")


@dataclass(frozen=True)
class Promotion:
    job_id: str | None  # None: a task message that belongs to no job
    task_id: str | None
    from_queue: str
    to_queue: str
    waited_s: float


class Promoter:
    """Moves aged messages up one tier; `run_once` is meant for a periodic timer."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.promote_after_s = settings.starvation.promote_after_s
        result_url = settings.effective_result_url
        same_redis = not result_url or result_url == settings.broker_url
        self.store = (
            JobStore(client, settings.limits.result_expires) if same_redis else open_store(settings)
        )
        # (source, target) per resource class; medium first, so a capped run serves the queues
        # closest to high first. Messages just moved up are re-stamped, so none moves twice a run.
        self.routes = [
            (settings.queue(lower, resource), settings.queue(upper, resource))
            for upper, lower in pairwise(TIERS)
            for resource in (None, *settings.resource_classes())
        ]
        self._move = client.register_script(scripts.load("move"))
        self._stamp = client.register_script(scripts.load("stamp"))

    def run_once(self, now: float | None = None) -> list[Promotion]:
        """Promote every message that waited longer than promote_after_s, up to
        MAX_MOVES_PER_RUN. promote_after_s == 0 turns promotion off."""
        if self.promote_after_s == 0:
            return []
        now = time.time() if now is None else now
        done: list[Promotion] = []
        for source, target in self.routes:
            done += self._promote(source, target, now, MAX_MOVES_PER_RUN - len(done))
        return done

    def move(self, source: str, target: str, inspected: list[bytes], rewritten: list[str]) -> int:
        """Atomically move `inspected` (the source's right end, in list order) to the target's
        right end as `rewritten`; 0 if the source's right end changed since it was read."""
        keys = [source, target, wake_key(source), wake_key(target)]
        return int(self._move(keys=keys, args=[TOKEN, *inspected, *rewritten]))

    def _promote(self, source: str, target: str, now: float, budget: int) -> list[Promotion]:
        done: list[Promotion] = []
        lost_races = 0
        while len(done) < budget:
            window = self.redis.lrange(source, -min(BATCH, budget - len(done)), -1)
            aged = self._aged(source, window, now)
            if not aged:
                break
            # `aged` is oldest first; in list order the oldest is rightmost, and stays so.
            inspected = [raw for raw, _, _ in reversed(aged)]
            rewritten = [json.dumps(_retarget(msg, target, now)) for _, msg, _ in reversed(aged)]
            if not self.move(source, target, inspected, rewritten):
                lost_races += 1
                if lost_races > MAX_LOST_RACES:
                    break
                continue
            done += [self._record(msg, source, target, waited, now) for _, msg, waited in aged]
            if len(aged) < len(window):  # stopped at a young message: the rest are younger
                break
        return done

    def _aged(
        self, source: str, window: list[bytes], now: float
    ) -> list[tuple[bytes, dict[str, Any], float]]:
        """The messages at the right end that waited longer than promote_after_s, oldest first.

        A message without the header (published by a process that did not import this module)
        counts as just queued: it is stamped in place with `now`, so it still moves up one
        promote_after_s later instead of blocking its queue's promotion forever.
        """
        aged: list[tuple[bytes, dict[str, Any], float]] = []
        for raw in reversed(window):
            message = _parse(raw)
            if message is None:
                log.warning(
                    "cannot promote past a message in %s that is not a task message", source
                )
                break
            queued_at = message["headers"].get(QUEUED_AT_HEADER)
            if not isinstance(queued_at, int | float) or isinstance(queued_at, bool):
                if not aged:  # only at the right end; otherwise it is stamped next time round
                    stamped = {**message, "headers": {**message["headers"], QUEUED_AT_HEADER: now}}
                    self._stamp(keys=[source], args=[raw, json.dumps(stamped)])
                break
            waited = now - queued_at
            if waited <= self.promote_after_s:
                break
            aged.append((raw, message, waited))
        return aged

    def _record(
        self, message: dict[str, Any], source: str, target: str, waited: float, now: float
    ) -> Promotion:
        job = _job_context(message) or {}
        job_id = job.get("id")
        task_id = message["headers"].get("id")
        promotion = Promotion(job_id, task_id, source, target, round(waited, 3))
        if job_id:
            entry = {
                "task_id": task_id,
                "step": job.get("step"),
                "from": source,
                "to": target,
                "waited_s": promotion.waited_s,
                "at": now,
            }
            self.store.add_promotion(job_id, entry)
        log.info("promoted job %s from %s to %s after %.1f s", job_id, source, target, waited)
        return promotion


def _parse(raw: bytes) -> dict[str, Any] | None:
    """The kombu message envelope, or None if this is not one we can rewrite."""
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("headers"), dict):
        return None
    properties = message.get("properties")
    if not isinstance(properties, dict) or not isinstance(properties.get("delivery_info"), dict):
        return None
    return message


def _retarget(message: dict[str, Any], target: str, now: float) -> dict[str, Any]:
    """The message re-stamped and addressed to `target`: kombu re-delivers an unacked message
    (visibility timeout, warm shutdown) by its delivery_info, where the anonymous exchange ""
    means "the routing key is the queue" (kombu/transport/virtual/base.py, basic_publish)."""
    properties = message["properties"]
    delivery_info = {**properties["delivery_info"], "exchange": "", "routing_key": target}
    return {
        **message,
        "headers": {**message["headers"], QUEUED_AT_HEADER: now},
        "properties": {**properties, "delivery_info": delivery_info},
    }


def _job_context(message: dict[str, Any]) -> dict[str, Any] | None:
    """The job context a step's kwargs carry (`kwargs["job"]`): the body is Celery protocol 2,
    JSON [args, kwargs, embed], base64-encoded by kombu's Redis transport."""
    try:
        body = message["body"]
        if message["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        _, kwargs, _ = json.loads(body)
        job = kwargs.get("job")
    except (KeyError, ValueError, TypeError, AttributeError):
        return None
    return job if isinstance(job, dict) else None
