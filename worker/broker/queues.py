"""What is waiting in the broker: per tier queue, its depth and the age of its oldest message.

Kombu's Redis transport LPUSHes and workers BRPOP, so a queue's oldest message (the next one
taken) is at index -1; publishers stamp the time it was queued in a header (`stamp_queued_at`,
connected by the app factory).
One pipelined round trip reads every queue. Shared by the exporter, the alerts and `status`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from jobrunner.config import TIERS, Settings

QUEUED_AT_HEADER = "jobrunner_queued_at"
# The id of the job a step message belongs to, beside its job context (in the body), where the
# fetch script can read it without decoding the body: it looks the job up as it takes the
# message (lua/fetch.lua), and the consumer checks the two ids agree (worker/runtime/acceptance.py).
JOB_HEADER = "jobrunner_job"


# The job context keys every task of a job carries with the same values. A link of a chain
# embedded in an earlier link's message leaves them out (`compact_chain`); the task that sends
# the link puts them back from its own context (`expand_link`).
JOB_WIDE = ("id", "pipeline", "tier")


def stamp_queued_at(headers: dict[str, Any] | None = None, body: Any = None, **_: Any) -> None:
    """`before_task_publish` hook: stamp every task message (client and worker alike) with its
    enqueue time, the starvation guard's and the exporter's oldest-wait clock, and a step
    message with its job's id; then compact the chain it embeds (`compact_chain`).

    Celery passes the very dict it then publishes as the message headers, and the very body
    (celery/app/amqp.py, `send_task_message`), so setting a key here lands in the Redis message.
    """
    if headers is None:
        return
    headers[QUEUED_AT_HEADER] = time.time()
    kwargs = body[1] if isinstance(body, tuple | list) and len(body) == 3 else None
    context = kwargs.get("job") if isinstance(kwargs, dict) else None
    if isinstance(context, dict) and isinstance(context.get("id"), str):
        headers[JOB_HEADER] = context["id"]
        if isinstance(body[2], dict):
            compact_chain(body[2], context)


def _context_of(link: Any) -> dict[str, Any] | None:
    kwargs = link.get("kwargs") if isinstance(link, dict) else None
    context = kwargs.get("job") if isinstance(kwargs, dict) else None
    return context if isinstance(context, dict) else None


def compact_chain(embed: dict[str, Any], context: dict[str, Any]) -> None:
    """Leave the job-wide keys out of each later link of the chain a message of the job
    `context` embeds (`embed["chain"]`, Celery protocol 2). Celery embeds every later link in
    each link's message, so a chain's messages grow with the square of its length, the job
    context being a large part of each link; every message is encoded once and decoded twice.
    Links of another job, and canvases other than plain tasks (a chord), are left whole; the
    caller's signatures are not changed."""
    links = embed.get("chain")
    if not isinstance(links, list):
        return
    compacted = []
    for link in links:
        linked = _context_of(link)
        if linked is not None and all(
            key in linked and linked[key] == context.get(key) for key in JOB_WIDE
        ):
            job = {key: value for key, value in linked.items() if key not in JOB_WIDE}
            link = {**link, "kwargs": {**link["kwargs"], "job": job}}
        compacted.append(link)
    embed["chain"] = compacted


def expand_link(link: Any, context: dict[str, Any]) -> None:
    """Put the job-wide keys of `context` (the job context of the task sending `link`, the next
    link of its chain) back into `link`, if `compact_chain` left them out."""
    linked = _context_of(link)
    if linked is not None and "id" not in linked:
        linked.update({key: context[key] for key in JOB_WIDE if key in context})


@dataclass(frozen=True)
class QueueStat:
    tier: str
    queue: str
    depth: int
    oldest_age_s: float  # 0 when empty, or when the oldest message carries no stamp


def tier_queues(settings: Settings) -> list[tuple[str, str]]:
    """(tier, queue) for every queue, highest tier first; resource queues before plain ones."""
    return [
        (tier, queue)
        for tier in TIERS
        for queue in [
            *(settings.queue(tier, r) for r in settings.resource_classes()),
            settings.queue(tier),
        ]
    ]


def queued_at(raw: bytes | None) -> float | None:
    """The enqueue stamp of one raw kombu message, if it has one."""
    if raw is None:
        return None
    try:
        stamp = json.loads(raw).get("headers", {}).get(QUEUED_AT_HEADER)
        return float(stamp) if stamp is not None else None
    except (ValueError, TypeError, AttributeError):
        return None  # not a JSON message (kombu refuses those anyway): no age to report


def queue_stats(
    client: redis.Redis, settings: Settings, now: float | None = None
) -> list[QueueStat]:
    """Depth and oldest age of every tier queue, read in one round trip."""
    now = time.time() if now is None else now
    queues = tier_queues(settings)
    with client.pipeline(transaction=False) as pipe:
        for _, queue in queues:
            pipe.llen(queue)
            pipe.lindex(queue, -1)
        replies = pipe.execute()
    stats = []
    for i, (tier, queue) in enumerate(queues):
        depth, oldest = replies[2 * i], replies[2 * i + 1]
        stamp = queued_at(oldest) if depth else None
        age = max(0.0, now - stamp) if stamp is not None else 0.0
        stats.append(QueueStat(tier, queue, int(depth), round(age, 3)))
    return stats


def by_tier(stats: list[QueueStat]) -> dict[str, tuple[int, float]]:
    """tier -> (total depth, oldest age) over its queues."""
    totals: dict[str, tuple[int, float]] = {tier: (0, 0.0) for tier in TIERS}
    for stat in stats:
        depth, age = totals[stat.tier]
        totals[stat.tier] = (depth + stat.depth, max(age, stat.oldest_age_s))
    return totals
