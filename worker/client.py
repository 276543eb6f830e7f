"""The client API for applications: submit a pipeline at a tier, get a handle, wait for it.

    from jobrunner import Client
    job = Client().submit("features", {"output_name": "today"}, tier="high")
    print(job.id, job.state, job.result(timeout=60))

Importing this module starts and connects to nothing. A submission is checked completely (tier,
pipeline, payload, size, broker) before its first message is sent: bad input enqueues nothing.
Many jobs of one pipeline go much faster with `submit_many` (two Redis round trips in all).
"""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid
from collections.abc import Iterable
from functools import cached_property
from typing import Any, NamedTuple

import redis
from celery import Celery
from celery.canvas import Signature
from kombu import Producer
from kombu.exceptions import KombuError
from pydantic import BaseModel, ValidationError

from jobrunner.config import JobrunnerError, Settings, get_settings
from jobrunner.config.errors import first_error
from jobrunner.tasks.builtin import sending_through
from jobrunner.tasks.compile import JobSpec, compile_job
from jobrunner.tasks.errors import PayloadError, PipelineError
from jobrunner.tasks.pipeline import Pipeline
from jobrunner.tasks.registry import load_pipelines
from jobrunner.worker.app import create_app
from jobrunner.worker.broker import connection
from jobrunner.worker.store.jobs import FAILURE, JobRecord, JobStore, open_store

IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")


class JobError(JobrunnerError):
    """A job failed, is unknown, or did not finish in time."""


def validate_payload(
    pipeline: Pipeline, payload: Any, max_bytes: int, model: type[BaseModel] | None = None
) -> dict[str, Any]:
    """The payload as the steps will see it (defaults filled in), or one-line PayloadError.
    Pass `model` (the pipeline's payload model) when validating many: building it is slow."""
    if not isinstance(payload, dict):
        raise PayloadError(
            f"payload for {pipeline.name} must be a JSON object, got {type(payload).__name__}"
        )
    model = model or pipeline.payload_model()
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


class Compiled(NamedTuple):
    """A job ready to send: its id, normalized payload and canvas."""

    id: str
    payload: dict[str, Any]
    canvas: Signature


# The payload a batch's template job is compiled with; every copy of it is swapped for a job's.
_SENTINEL = {"__jobrunner_bulk__": uuid.uuid4().hex}
_TASK_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class _Recorded(NamedTuple):
    """One message as kombu is about to hand it to the channel: body already serialized."""

    body: str
    priority: int
    content_type: str
    content_encoding: str
    headers: dict[str, Any]
    properties: dict[str, Any]
    exchange: str
    routing_key: str


class _Recorder(Producer):  # type: ignore[misc]
    """A kombu producer that does everything but send: Celery and kombu build, route and
    serialize each message (the task and its task-sent event), and it is recorded."""

    def __init__(self, producer: Producer) -> None:
        super().__init__(
            producer.channel,
            exchange=producer.exchange,
            routing_key=producer.routing_key,
            serializer=producer.serializer,
            compression=producer.compression,
            auto_declare=False,
        )
        self.published: list[_Recorded] = []
        self.declare: list[Any] = []

    def _publish(
        self,
        body: Any,
        priority: int,
        content_type: str,
        content_encoding: str,
        headers: dict[str, Any],
        properties: dict[str, Any],
        routing_key: str,
        mandatory: bool,
        immediate: bool,
        exchange: str,
        declare: list[Any],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        body = body.decode() if isinstance(body, bytes) else body
        self.published.append(
            _Recorded(
                body,
                priority,
                content_type,
                content_encoding,
                headers,
                properties,
                exchange,
                routing_key,
            )
        )
        self.declare += [entity for entity in declare if entity not in self.declare]


class _Template:
    """One job's messages exactly as Celery and kombu would send them, stamped per job with
    fresh task ids and the job's id and payload. Celery's send path (routing, signatures,
    reprs, serialization) costs about a millisecond per job; stamping, a few dozen
    microseconds. The stamped messages go to the channel as kombu's own would."""

    def __init__(self, app: Celery, job: Compiled, producer: Producer) -> None:
        recorder = _Recorder(producer)
        with sending_through(app, recorder):
            job.canvas.apply_async()
        if not recorder.published:
            raise JobError("could not build the batch's messages: Celery sent none")
        for entity in recorder.declare:  # once per batch (kombu caches it per channel)
            producer.maybe_declare(entity)
        self.messages = recorder.published
        self.channel = producer.channel
        reply_to = {m.properties.get("reply_to") for m in self.messages}
        task_ids = set(_TASK_ID.findall(repr(self.messages))) - reply_to
        # The payload appears as JSON in task bodies, and as a repr in headers and, inside a
        # JSON string, in task-sent event bodies.
        self._sentinel_json, self._sentinel_repr = json.dumps(_SENTINEL), repr(_SENTINEL)
        self._fixed = [job.id, *sorted(task_ids)]
        names = [*self._fixed, self._sentinel_json, self._sentinel_repr]
        self._pattern = re.compile("|".join(re.escape(name) for name in names))

    def stamp(self, job_id: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """The job's messages, ready for the channel."""
        ids = {old: str(uuid.uuid4()) for old in self._fixed[1:]}
        ids[self._fixed[0]] = job_id
        as_repr = repr(payload)
        in_json = {**ids, self._sentinel_json: json.dumps(payload)}
        in_json[self._sentinel_repr] = json.dumps(as_repr)[1:-1]
        plain = {**ids, self._sentinel_repr: as_repr}

        def text(value: str, names: dict[str, str]) -> str:
            return self._pattern.sub(lambda m: names.get(m.group(0), m.group(0)), value)

        def copy(value: Any) -> Any:
            if isinstance(value, str):
                return text(value, plain)
            if isinstance(value, dict):
                return {key: copy(item) for key, item in value.items()}
            if isinstance(value, list | tuple):
                return [copy(item) for item in value]
            return value

        return [
            self.channel.prepare_message(
                text(m.body, in_json),
                m.priority,
                m.content_type,
                m.content_encoding,
                copy(m.headers),
                copy(m.properties),
            )
            for m in self.messages
        ]

    def send(self, jobs: list[tuple[str, dict[str, Any]]]) -> None:
        """Every job's messages in one Redis pipeline where kombu can batch (its Redis channel
        can), else one by one; routed by kombu either way (queues, wake tokens, event fanout).
        Stamped afresh on each call: kombu encodes a message in place as it sends it."""
        create_batch = getattr(self.channel, "create_publish_batch", None)
        size = len(jobs) * len(self.messages)
        batch = create_batch(max_size=4 * size + 1) if create_batch else None
        try:
            for job_id, payload in jobs:
                for message, recorded in zip(
                    self.stamp(job_id, payload), self.messages, strict=True
                ):
                    route = {"exchange": recorded.exchange, "routing_key": recorded.routing_key}
                    if batch is not None:
                        batch.publish(message, **route)
                    else:
                        self.channel.basic_publish(message, **route)
            if batch is not None:
                batch.flush()
        finally:
            if batch is not None:
                batch.close()


class Client:
    """Submit jobs and look them up. Settings default to the environment's.

    A client sends through a Celery app of its own, built from its settings (pass `app` to share
    one, e.g. a worker's): it never reconfigures, nor becomes, the process's current app."""

    def __init__(self, settings: Settings | None = None, *, app: Celery | None = None) -> None:
        self.settings = connection.resolve(settings or get_settings())
        self._reachable = False
        self._models: dict[str, type[BaseModel]] = {}
        self._app = app

    @cached_property
    def app(self) -> Celery:
        """The Celery app this client sends through, built on first use."""
        return self._app or create_app(self.settings, set_as_current=False)

    @cached_property
    def pipelines(self) -> dict[str, Pipeline]:
        return load_pipelines(self.settings)

    @cached_property
    def store(self) -> JobStore:
        connection.require_url(self.settings)
        return open_store(self.settings)

    def _payload_model(self, pipeline: Pipeline) -> type[BaseModel]:
        """The pipeline's payload model, built once per client (pydantic's create_model costs
        more than validating a payload with it)."""
        if pipeline.name not in self._models:
            self._models[pipeline.name] = pipeline.payload_model()
        return self._models[pipeline.name]

    def _validate(self, pipeline: Pipeline, payload: Any) -> dict[str, Any]:
        return validate_payload(
            pipeline,
            {} if payload is None else payload,
            self.settings.limits.payload_max_bytes,
            self._payload_model(pipeline),
        )

    def pipeline(self, name: str) -> Pipeline:
        try:
            return self.pipelines[name]
        except KeyError:
            known = ", ".join(self.pipelines) or "none"
            raise PipelineError(f"unknown pipeline {name!r} (known: {known})") from None

    def _compile(self, declared: Pipeline, tier: str, payload: dict[str, Any]) -> Compiled:
        """A new job's id and canvas; sends nothing."""
        job_id = uuid.uuid4().hex
        spec = JobSpec(
            id=job_id,
            pipeline=declared,
            tier=tier,
            queue=self.settings.queue(tier),
            payload=payload,
            resource_queues=self._resource_queues(tier),
        )
        return Compiled(job_id, payload, compile_job(self.app, spec))

    def _resource_queues(self, tier: str) -> dict[str, str]:
        return {r: self.settings.queue(tier, r) for r in self.settings.resource_classes()}

    def _check_deadline(self, deadline_s: float | None) -> float:
        if deadline_s is not None and deadline_s <= 0:
            raise PayloadError(f"deadline must be positive, got {deadline_s:g} s")
        return deadline_s or self.settings.reliability.job_deadline_s

    def _check_reachable(self) -> None:
        """Ping the broker once per client (and again after a failed send): a clear one-line
        error for a broker that is down, without a new connection for every submission."""
        if not self._reachable:
            connection.check_reachable(self.settings)
            self._reachable = True

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
        self.settings.queue(tier)  # an unknown tier is an error before anything else
        declared = self.pipeline(pipeline)
        normalized = self._validate(declared, payload)
        if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
            raise PayloadError(f"idempotency key must match {IDEMPOTENCY_KEY.pattern}")
        deadline = self._check_deadline(deadline_s)
        self._check_reachable()
        job_id = uuid.uuid4().hex
        if idempotency_key is not None:
            existing = self.store.claim_idempotency_key(idempotency_key, job_id)
            if existing is not None:
                return Job(existing, self.store)
        try:
            self._enqueue(declared, tier, deadline, [(job_id, normalized)])
        except Exception:
            if idempotency_key is not None:
                self.store.release_idempotency_key(idempotency_key)
            raise
        return Job(job_id, self.store)

    def submit_many(
        self,
        pipeline: str,
        payloads: Iterable[Any],
        *,
        tier: str | None = None,
        deadline_s: float | None = None,
    ) -> list[Job]:
        """Enqueue one job of `pipeline` per payload, in two Redis round trips (the job records
        in one pipeline, then every message in another) rather than several per job.

        Every payload is validated before anything is written, so bad input (any payload)
        enqueues nothing; if sending fails, the records are removed again. The messages are
        exactly those `submit` sends, but Celery builds them once per batch (see `_Template`).
        """
        tier = tier or self.settings.default_tier
        self.settings.queue(tier)
        declared = self.pipeline(pipeline)
        normalized = [self._validate(declared, payload) for payload in payloads]
        deadline = self._check_deadline(deadline_s)
        self._check_reachable()
        if not normalized:
            return []
        ids = [uuid.uuid4().hex for _ in normalized]
        self._enqueue(declared, tier, deadline, list(zip(ids, normalized, strict=True)))
        return [Job(job_id, self.store) for job_id in ids]

    def _enqueue(
        self, declared: Pipeline, tier: str, deadline: float, jobs: list[tuple[str, dict[str, Any]]]
    ) -> None:
        """Write the jobs' records, then send their messages: each in one round trip. Celery
        builds the messages first, so a job is recorded as submitted only once it is ready to
        go (its wait measures queueing, not message building); if sending fails, the records
        are removed again."""
        written = False
        try:
            with self.app.producer_or_acquire() as producer:
                compiled = self._compile(declared, tier, dict(_SENTINEL))
                template = _Template(self.app, compiled, producer)
                written = True
                self.store.create(jobs, declared.name, tier, deadline)
                self._send(template, jobs)
        except Exception as error:
            self._reachable = False
            if written:
                self.store.delete([job_id for job_id, _ in jobs])
            if isinstance(error, JobrunnerError):
                raise
            what = f"{len(jobs)} jobs" if len(jobs) > 1 else "job"
            raise JobError(f"could not enqueue {what} for {declared.name}: {error}") from None

    def _send(self, template: _Template, jobs: list[tuple[str, dict[str, Any]]]) -> None:
        """Send, retrying a lost connection as Celery's own publish does (the app's
        `task_publish_retry_policy`), so a broker restart is a pause, not an error."""
        policy = self.app.conf.task_publish_retry_policy or {}
        delay = float(policy.get("interval_start", 0))
        for attempt in itertools.count():
            try:
                template.send(jobs)
                return
            except (KombuError, redis.ConnectionError, redis.TimeoutError, OSError):
                if attempt >= int(policy.get("max_retries", 3)):
                    raise
            time.sleep(min(delay, float(policy.get("interval_max", 1))))
            delay += float(policy.get("interval_step", 0.2))

    def job(self, job_id: str) -> Job:
        return Job(job_id, self.store)
