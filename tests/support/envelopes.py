"""Hand-built kombu envelopes, as any client holding the broker password could push them into a
tier queue: valid Celery task messages, or broken in one chosen way."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from jobrunner.config import get_settings


def body(args: list[Any] | None = None, kwargs: dict[str, Any] | None = None) -> str:
    """A protocol-2 task body, JSON and base64 encoded as kombu's Redis transport sends it."""
    parts = [args or [], kwargs or {}, {"callbacks": None, "errbacks": None, "chain": None}]
    return base64.b64encode(json.dumps(parts).encode()).decode()


def envelope(task: str, kwargs: dict[str, Any] | None = None, tier: str = "low") -> dict[str, Any]:
    """A task message for `task` with `kwargs`, routed to `tier`'s queue."""
    task_id = str(uuid.uuid4())
    return {
        "body": body(kwargs=kwargs),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "retries": 0},
        "properties": {
            "correlation_id": task_id,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": get_settings().queue(tier)},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }


def job_context(job_id: str, pipeline: str, step: str) -> dict[str, Any]:
    return {"id": job_id, "pipeline": pipeline, "tier": "low", "step": step}
