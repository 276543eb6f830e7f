"""What schedules and triggers share: one client to submit through, and the checks that stop a
scheduler (and `up`) before it starts on a bad declaration."""

from __future__ import annotations

from typing import Any

import redis

from jobrunner.config import Settings
from jobrunner.worker.client import Client, validate_payload


class Submitter:
    def __init__(self, client: Client, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    @property
    def redis(self) -> redis.Redis:
        """The job store's Redis (only once needed: checks run before a broker exists)."""
        return self.client.store.redis

    def check_submission(self, pipeline: str, tier: str | None, payload: dict[str, Any]) -> None:
        """The pipeline and tier exist and the payload fits the pipeline's schema; else the
        client's one-line error."""
        self.settings.queue(tier or self.settings.default_tier)
        declared = self.client.pipeline(pipeline)
        validate_payload(declared, payload, self.settings.limits.payload_max_bytes)
