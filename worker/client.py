"""The client API for applications: submit a pipeline at a tier, get a handle, wait for it.

    from worker.client import Client
    job = Client().submit("features", {"output_name": "today"}, tier="high")
    print(job.id, job.state, job.result(timeout=60))

Importing this module starts and connects to nothing. A submission is checked completely (tier,
pipeline, payload, size, broker) before its first message is sent: bad input enqueues nothing.
"""

from __future__ import annotations

import json
import re
import uuid
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ValidationError

from config import JobrunnerError, Settings, get_settings
from config.errors import first_error
from tasks.compile import JobSpec, compile_job
from tasks.errors import PayloadError, PipelineError
from tasks.pipeline import Pipeline
from tasks.registry import load_pipelines
from worker import broker
from worker.app import app, configure
from worker.jobs import FAILURE, JobRecord, JobStore, open_store

IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")


class JobError(JobrunnerError):
    """A job failed, is unknown, or did not finish in time."""


def validate_payload(pipeline: Pipeline, payload: Any, max_bytes: int) -> dict[str, Any]:
    """The payload as the steps will see it (defaults filled in), or one-line PayloadError."""
    if not isinstance(payload, dict):
        raise PayloadError(
            f"payload for {pipeline.name} must be a JSON object, got {type(payload).__name__}"
        )
    model: type[BaseModel] = pipeline.payload_model()
    try:
        normalized = model.model_validate(payload).model_dump(mode="json")
    except ValidationError as error:
        raise PayloadError(
            f"payload for {pipeline.name}: {first_error(error, 'payload')}"
        ) from None
    size = len(json.dumps(normalized))
    if size > max_bytes:
        raise PayloadError(
            f"payload for {pipeline.name} is {size} bytes, over the {max_bytes} limit"
        )
    return normalized


class Job:
    """A handle on a submitted job."""

    def __init__(self, job_id: str, store: JobStore) -> None:
        self.id = job_id
        self._store = store

    def record(self) -> JobRecord:
        record = self._store.get(self.id)
        if record is None:
            raise JobError(f"unknown job {self.id} (never submitted, or expired)")
        return record

    @property
    def state(self) -> str:
        """PENDING, STARTED, SUCCESS or FAILURE."""
        return self.record().state

    def wait(self, timeout: float) -> JobRecord:
        """The finished record; JobError if it did not finish within `timeout` seconds."""
        record = self._store.wait(self.id, timeout)
        if record is None:
            raise JobError(f"unknown job {self.id} (never submitted, or expired)")
        if not record.finished:
            raise JobError(f"job {self.id} did not finish within {timeout:g} s ({record.state})")
        return record

    def result(self, timeout: float = 60.0) -> Any:
        """The final step's result; JobError naming the failed step(s) if the job failed."""
        record = self.wait(timeout)
        if record.state == FAILURE:
            raise JobError(f"job {self.id} failed: {record.error}")
        return record.result

    def __repr__(self) -> str:
        return f"Job({self.id!r})"


class Client:
    """Submit jobs and look them up. Settings default to the environment's."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = broker.resolve(settings or get_settings())
        if self.settings.broker_url and self.settings.broker_url != app.conf.broker_url:
            configure(app, self.settings)

    @cached_property
    def pipelines(self) -> dict[str, Pipeline]:
        return load_pipelines(self.settings)

    @cached_property
    def store(self) -> JobStore:
        broker.require_url(self.settings)
        return open_store(self.settings)

    def pipeline(self, name: str) -> Pipeline:
        try:
            return self.pipelines[name]
        except KeyError:
            known = ", ".join(self.pipelines) or "none"
            raise PipelineError(f"unknown pipeline {name!r} (known: {known})") from None

    def submit(
        self,
        pipeline: str,
        payload: Any = None,
        *,
        tier: str | None = None,
        idempotency_key: str | None = None,
        deadline_s: float | None = None,
    ) -> Job:
        """Enqueue a job. With an `idempotency_key` already used (within the record lifetime),
        the job it was used for is returned instead and nothing is enqueued. A job unfinished
        `deadline_s` after submission (default: the configured job deadline) fails."""
        tier = tier or self.settings.default_tier
        queue = self.settings.queue(tier)
        declared = self.pipeline(pipeline)
        normalized = validate_payload(
            declared, {} if payload is None else payload, self.settings.limits.payload_max_bytes
        )
        if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
            raise PayloadError(f"idempotency key must match {IDEMPOTENCY_KEY.pattern}")
        if deadline_s is not None and deadline_s <= 0:
            raise PayloadError(f"deadline must be positive, got {deadline_s:g} s")
        broker.check_reachable(self.settings)
        job_id = uuid.uuid4().hex
        if idempotency_key is not None:
            existing = self.store.claim_idempotency_key(idempotency_key, job_id)
            if existing is not None:
                return Job(existing, self.store)
        canvas = compile_job(
            app,
            JobSpec(
                id=job_id,
                pipeline=declared,
                tier=tier,
                queue=queue,
                payload=normalized,
                resource_queues={
                    r: self.settings.queue(tier, r) for r in self.settings.resource_classes()
                },
            ),
        )
        deadline = deadline_s or self.settings.reliability.job_deadline_s
        self.store.create(job_id, declared.name, tier, normalized, deadline)
        try:
            canvas.apply_async()
        except Exception as error:
            self.store.delete(job_id)
            if idempotency_key is not None:
                self.store.release_idempotency_key(idempotency_key)
            raise JobError(f"could not enqueue job for {pipeline}: {error}") from None
        return Job(job_id, self.store)

    def job(self, job_id: str) -> Job:
        return Job(job_id, self.store)
