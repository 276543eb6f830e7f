"""The publish hook on real messages: a chain's later links, embedded in each link's message,
leave out the job-wide keys of their job context, and get them back from the task that sends
them; the message's own context stays whole."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from typing import Any

import pytest
import redis
from celery import Celery, chain

from jobrunner.config import TIERS, get_settings
from jobrunner.worker.broker.keys import wake_key
from jobrunner.worker.broker.queues import JOB_HEADER, JOB_WIDE, compact_chain, expand_link

pytestmark = pytest.mark.integration


def _context(job_id: str, step: str, **flags: Any) -> dict[str, Any]:
    return {"id": job_id, "pipeline": "p", "tier": "medium", "step": step, **flags}


def test_a_chain_message_embeds_its_later_links_without_their_job_wide_keys(
    app: Celery, redis_client: redis.Redis
) -> None:
    """Sent through Celery (the hook as a worker's and a client's publish runs it): the first
    message's context is whole, each embedded link of the same job keeps only its own keys, a
    link of another job is kept whole; the signatures sent are not changed."""
    queue = get_settings().queue(TIERS[-1])  # emptied by redis_client; no worker runs here
    job, other = uuid.uuid4().hex, uuid.uuid4().hex
    contexts = [
        _context(job, "a", first=True),
        _context(job, "b"),
        _context(other, "x"),
        _context(job, "c", final=True),
    ]
    links = [app.signature(f"step.{c['step']}", kwargs={"job": c}, queue=queue) for c in contexts]
    sent = copy.deepcopy([link.kwargs for link in links])
    try:
        chain(*links, app=app).apply_async()
        message = json.loads(redis_client.lindex(queue, 0))
    finally:
        redis_client.delete(queue, wake_key(queue))
    _, kwargs, embed = json.loads(base64.b64decode(message["body"]))
    assert kwargs["job"] == contexts[0]
    assert message["headers"][JOB_HEADER] == job
    embedded = [link["kwargs"]["job"] for link in reversed(embed["chain"])]
    assert embedded == [{"step": "b"}, contexts[2], {"step": "c", "final": True}]
    assert [link.kwargs for link in links] == sent


def test_expanding_a_compacted_link_gives_the_link_sent() -> None:
    """What the sending task puts back is what was left out, and a whole link is left as it is;
    a chord (no job context of its own) is not touched."""
    job = uuid.uuid4().hex
    own = _context(job, "a", first=True)
    link = {"task": "step.b", "kwargs": {"job": _context(job, "b", retry={"max": 2})}}
    chord = {"task": "celery.chord", "kwargs": {"header": [], "body": {}}}
    embed = {"chain": [copy.deepcopy(link), chord]}
    compact_chain(embed, own)
    compacted, kept = embed["chain"]
    assert not set(JOB_WIDE) & set(compacted["kwargs"]["job"])
    assert kept is chord
    expand_link(compacted, own)
    assert compacted == link
    whole = copy.deepcopy(link)
    expand_link(whole, _context(uuid.uuid4().hex, "z"))
    assert whole == link
