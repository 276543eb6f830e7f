"""The client API for applications: submit a pipeline at a tier, get a handle, wait for it.

    from jobrunner import Client
    job = Client().submit("features", {"output_name": "today"}, tier="high")
    print(job.id, job.state, job.result(timeout=60))

Importing this module starts and connects to nothing. A submission is checked completely (tier,
pipeline, payload, size, broker) before its first message is sent: bad input enqueues nothing.
Many jobs of one pipeline go much faster with `submit_many` (two Redis round trips in all, one
more with idempotency keys).
"""

from __future__ import annotations

import copy
import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any, NamedTuple

import redis
from celery import Celery
from celery.canvas import Signature
from celery.utils.saferepr import saferepr
from kombu import Producer
from kombu.exceptions import KombuError
from kombu.serialization import dumps, loads, registry
from pydantic import BaseModel, ValidationError

from jobrunner.config import JobrunnerError, Settings, get_settings
from jobrunner.config.errors import first_error
from jobrunner.tasks.builtin import sending_through
from jobrunner.tasks.compile import JobSpec, compile_job
from jobrunner.tasks.errors import PayloadError, PayloadTooLarge, PipelineError
from jobrunner.tasks.pipeline import Pipeline
from jobrunner.tasks.registry import load_pipelines
from jobrunner.worker.app import create_app
from jobrunner.worker.broker import connection
from jobrunner.worker.store.control import PauseStore, actor
from jobrunner.worker.store.jobs import CANCELLED, FAILURE, JobRecord, JobStore, open_store
from jobrunner.worker.validation import check_deadline, check_idempotency_key, check_json


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
    check_json(payload, f"payload for {pipeline.name}")
    model = model or pipeline.payload_model()
    try:
        normalized = model.model_validate(payload).model_dump(mode="json")
    except ValidationError as error:
        raise PayloadError(
            f"payload for {pipeline.name}: {first_error(error, 'payload')}"
        ) from None
    check_json(normalized, f"payload for {pipeline.name}")  # a model may make NaN of "nan"
    size = len(json.dumps(normalized))
    if size > max_bytes:
        raise PayloadTooLarge(
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
        """PENDING, STARTED, SUCCESS, FAILURE or CANCELLED."""
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


# The payload a batch's template job is compiled with; wherever it appears, a job's payload goes.
_SENTINEL = {"__jobrunner_bulk__": uuid.uuid4().hex}
# The keys under which Celery files ids in what it sends: a task message's headers and properties,
# the options of the signatures it embeds (chain, chord, callbacks), the task-sent event. The job
# context's `id` is the job id.
_ID_KEYS = frozenset(
    {"id", "root_id", "parent_id", "group", "correlation_id", "task_id", "group_id", "uuid"}
)


class _Recorded(NamedTuple):
    """One message as kombu hands it to the channel: prepared, its body serialized."""

    message: dict[str, Any]
    exchange: str
    routing_key: str


class _RecordingChannel:
    """Stands in for a kombu channel under a kombu `Producer`: Celery and kombu build, route,
    serialize and prepare each message (the task and its task-sent event) as for a real send,
    declarations included (everything but the publish is the real channel's), and the channel's
    publish, `basic_publish`, records the message instead of sending it."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.published: list[_Recorded] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.channel, name)

    def basic_publish(
        self, message: dict[str, Any], exchange: str, routing_key: str, **_: Any
    ) -> None:
        """A copy as it is now: Celery's publish hooks may change what they passed afterwards."""
        self.published.append(_Recorded(copy.deepcopy(message), exchange, routing_key))


def _record(app: Celery, canvas: Signature, producer: Producer) -> list[_Recorded]:
    """The messages `canvas.apply_async()` sends with `app`, built by a producer set up as
    `producer` (Celery's pooled one) but on a recording channel: none is sent."""
    channel = _RecordingChannel(producer.channel)
    recorder = app.amqp.Producer(
        channel,
        exchange=producer.exchange,
        routing_key=producer.routing_key,
        serializer=producer.serializer,
        compression=producer.compression,
        auto_declare=producer.auto_declare,
    )
    with sending_through(app, recorder):
        canvas.apply_async()
    return channel.published


class _Stamp(NamedTuple):
    """One job's values for a template's slots."""

    ids: list[str]  # the job id, then its task ids
    payload: dict[str, Any]
    reprs: dict[_Repr, str]  # filled on first use: one repr can appear in two messages


class _Slot:
    """A job-dependent value in a template message."""

    def fill(self, job: _Stamp) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class _Id(_Slot):
    index: int  # into _Stamp.ids

    def fill(self, job: _Stamp) -> Any:
        return job.ids[self.index]


class _Payload(_Slot):
    def fill(self, job: _Stamp) -> Any:
        return job.payload


_PAYLOAD = _Payload()


@dataclass(frozen=True, eq=False)
class _Repr(_Slot):
    """A task's `argsrepr` or `kwargsrepr` (also the `args`/`kwargs` of its task-sent event),
    made as Celery makes it (celery/app/amqp.py, `as_task_v2`): `saferepr`, which truncates."""

    source: _Slot  # the args or kwargs
    maxlen: int
    maxlevels: int

    def fill(self, job: _Stamp) -> Any:
        if self not in job.reprs:
            value = self.source.fill(job)
            job.reprs[self] = saferepr(value, self.maxlen, maxlevels=self.maxlevels)
        return job.reprs[self]


@dataclass(frozen=True, eq=False)
class _Tree(_Slot):
    """A dict or list with slots in it: a shallow copy of the decoded one, the slots filled."""

    raw: dict[str, Any] | list[Any]
    slots: tuple[tuple[Any, _Slot], ...]  # (key or index, what goes there)

    def fill(self, job: _Stamp) -> Any:
        tree = self.raw.copy()
        for key, slot in self.slots:
            tree[key] = slot.fill(job)
        return tree


def _number_ids(node: Any, ids: dict[str, int]) -> None:
    """Number the ids filed under `_ID_KEYS` in `node`, in order of first appearance."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                ids.setdefault(value, len(ids))
            _number_ids(value, ids)
    elif isinstance(node, list):
        for value in node:
            _number_ids(value, ids)


class _Message(NamedTuple):
    """A recorded message, decoded, as a pattern: its body, headers and properties."""

    body: Any  # a _Slot, or what every job sends
    headers: _Tree
    properties: _Tree
    serializer: str
    exchange: str
    routing_key: str


class _Template:
    """One job's messages as Celery and kombu build them (routing, headers, reprs, the task-sent
    event), decoded, with the values that differ from job to job made slots: the job id and
    task ids (by the keys Celery files them under), the payload, and the reprs of the task's
    args and kwargs. Stamping a job fills them in and serializes the result as kombu did.
    Celery's send path costs over half a millisecond per job; stamping, a fifth of that (half
    of it Celery's `saferepr`, which Celery's own send runs as well).

    The template checks itself once: stamped with its own values, it must give back exactly the
    messages Celery built (it would not were the first task's arguments something JSON does not
    carry unchanged, a tuple say: the reprs made from their decoded copy would differ)."""

    def __init__(self, app: Celery, job: Compiled, producer: Producer) -> None:
        recorded = _record(app, job.canvas, producer)
        if not recorded:
            raise JobError("could not build the batch's messages: Celery sent none")
        self.channel = producer.channel
        decoded = [
            (r, loads(r.message["body"], r.message["content-type"], r.message["content-encoding"]))
            for r in recorded
        ]
        self._ids = {job.id: 0}
        for r, body in decoded:
            _number_ids([body, r.message["headers"], r.message["properties"]], self._ids)
        self._reprs: dict[str, _Repr] = {}
        maxlevels = app.conf.task_repr_maxlevels
        for r, body in decoded:
            headers = r.message["headers"]
            if "kwargsrepr" not in headers:  # not a task message (protocol 2): an event
                continue
            for part, key, maxlen in (
                (body[0], "argsrepr", app.amqp.argsrepr_maxsize),
                (body[1], "kwargsrepr", app.amqp.kwargsrepr_maxsize),
            ):
                source = self._pattern(part)
                if isinstance(source, _Slot):  # job-dependent
                    self._reprs[headers[key]] = _Repr(source, maxlen, maxlevels)
        self.messages = [
            _Message(
                self._pattern(body),
                self._pattern(r.message["headers"], fresh=True),
                self._pattern(r.message["properties"], fresh=True),
                registry.type_to_name[r.message["content-type"]],
                r.exchange,
                r.routing_key,
            )
            for r, body in decoded
        ]
        own = _Stamp(list(self._ids), job.payload, {})
        if [self._prepare(m, own) for m in self.messages] != [r.message for r in recorded]:
            raise JobError(
                "could not build the batch's messages: stamped with its own values, the "
                "template is not what Celery built"
            )

    def _pattern(self, node: Any, *, fresh: bool = False) -> Any:
        """`node` with its job-dependent values made slots. What holds none is shared by all
        jobs' copies, unless `fresh` (headers, properties): kombu writes into the properties of
        the message it sends, so each message gets its own."""
        if isinstance(node, str):
            return _Id(self._ids[node]) if node in self._ids else self._reprs.get(node, node)
        if isinstance(node, dict) and node == _SENTINEL:
            return _PAYLOAD
        if isinstance(node, dict | list):
            items = node.items() if isinstance(node, dict) else enumerate(node)
            slots = tuple(
                (key, pattern)
                for key, value in items
                if isinstance(pattern := self._pattern(value, fresh=fresh), _Slot)
            )
            return _Tree(node, slots) if slots or fresh else node
        return node

    def _prepare(self, message: _Message, job: _Stamp) -> dict[str, Any]:
        """The message for `job`, as kombu's producer hands it to the channel."""
        body = message.body.fill(job) if isinstance(message.body, _Slot) else message.body
        content_type, content_encoding, serialized = dumps(body, serializer=message.serializer)
        properties = message.properties.fill(job)
        return self.channel.prepare_message(
            serialized,
            properties.get("priority"),
            content_type,
            content_encoding,
            message.headers.fill(job),
            properties,
        )

    def stamp(self, job_id: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """The job's messages, with fresh task ids, ready for the channel."""
        task_ids = (str(uuid.uuid4()) for _ in range(len(self._ids) - 1))
        job = _Stamp([job_id, *task_ids], payload, {})
        return [self._prepare(message, job) for message in self.messages]

    def send(self, jobs: list[tuple[str, dict[str, Any]]]) -> None:
        """Every job's messages in one Redis pipeline where kombu can batch (its Redis channel
        can), else one by one; routed by kombu either way (queues, wake tokens, event fanout).
        Stamped afresh on each call: kombu encodes a message in place as it sends it."""
        create_batch = getattr(self.channel, "create_publish_batch", None)
        size = len(jobs) * len(self.messages)
        batch = create_batch(max_size=4 * size + 1) if create_batch else None
        try:
            for job_id, payload in jobs:
                for message, pattern in zip(
                    self.stamp(job_id, payload), self.messages, strict=True
                ):
                    route = {"exchange": pattern.exchange, "routing_key": pattern.routing_key}
                    if batch is not None:
                        batch.publish(message, **route)
                    else:
                        self.channel.basic_publish(message, **route)
            if batch is not None:
                batch.flush()
        finally:
            if batch is not None:
                batch.close()


def _first_of_keys(keys: Sequence[str], payloads: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Each idempotency key with the indexes of its payloads, in order of first use; a
    PayloadError if the keys do not pair with the payloads, one is malformed, or one is given
    for two different payloads."""
    if isinstance(keys, str) or len(keys) != len(payloads):
        raise PayloadError(
            f"idempotency keys must be a list of one key per payload ({len(payloads)})"
        )
    indexes: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        check_idempotency_key(key)
        seen = indexes.setdefault(key, [])
        if seen and payloads[seen[0]] != payloads[i]:
            raise PayloadError(
                f"idempotency key {key!r} is given for payloads {seen[0]} and {i}, which differ"
            )
        seen.append(i)
    return indexes


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

    def _compile(
        self,
        declared: Pipeline,
        tier: str,
        job_id: str,
        payload: dict[str, Any],
        cache: bool = True,
    ) -> Compiled:
        """The job's canvas; sends nothing."""
        spec = JobSpec(
            id=job_id,
            pipeline=declared,
            tier=tier,
            queue=self.settings.queue(tier),
            payload=payload,
            resource_queues=self._resource_queues(tier),
            cache=cache,
        )
        return Compiled(job_id, payload, compile_job(self.app, spec))

    def _resource_queues(self, tier: str) -> dict[str, str]:
        return {r: self.settings.queue(tier, r) for r in self.settings.resource_classes()}

    def _check_deadline(self, deadline_s: float | None) -> float:
        if deadline_s is not None:
            check_deadline(deadline_s)
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
        retry_of: str | None = None,
        cache: bool = True,
    ) -> Job:
        """Enqueue a job. With an `idempotency_key` already used (within the record lifetime),
        the job it was used for is returned instead and nothing is enqueued. A job unfinished
        `deadline_s` after submission (default: the configured job deadline) fails. A job that
        retries a failed one names it in `retry_of`: the two are linked, and the attempt
        counted. `cache=False` runs every cached step again (`@step(cache=True)`), refreshing
        its entry."""
        tier = tier or self.settings.default_tier
        self.settings.queue(tier)  # an unknown tier is an error before anything else
        declared = self.pipeline(pipeline)
        normalized = self._validate(declared, payload)
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
        deadline = self._check_deadline(deadline_s)
        self._check_reachable()
        job_id = uuid.uuid4().hex
        if idempotency_key is not None:
            existing = self.store.claim_idempotency_key(idempotency_key, job_id)
            if existing is not None:
                return self._same_job(existing, idempotency_key, declared.name, tier, normalized)
        fields = self._record_fields(declared)
        previous = self.store.get(retry_of) if retry_of is not None else None
        if retry_of is not None:  # its record may have expired: a dead letter outlives it
            attempt = (previous.attempt if previous else 1) + 1
            fields.update(retry_of=retry_of, attempt=str(attempt))
        try:
            self._enqueue(declared, tier, deadline, [(job_id, normalized)], fields, cache)
        except Exception:
            if idempotency_key is not None:
                self.store.release_idempotency_key(idempotency_key)
            raise
        if previous is not None:
            self.store.link_retry(previous.id, job_id)
        return Job(job_id, self.store)

    @staticmethod
    def _record_fields(declared: Pipeline) -> dict[str, str]:
        """What the job record keeps of its pipeline's failure handling (read when it fails)."""
        if declared.on_failure != "retry_job":
            return {}
        policy = declared.model_dump(include={"max_job_retries", "job_retry_delay_s"})
        return {"retry_policy": json.dumps(policy)}

    def _same_job(
        self, job_id: str, key: str, pipeline: str, tier: str, payload: dict[str, Any]
    ) -> Job:
        """The job an idempotency key was first used for, if this submission is the same one;
        an error naming that job if it is not (as payment APIs answer a reused key)."""
        first = self.store.get(job_id)
        if first is not None and (first.pipeline, first.tier, first.payload) != (
            pipeline,
            tier,
            payload,
        ):
            raise PayloadError(
                f"idempotency key {key!r} was used for job {job_id} "
                f"({first.pipeline} at {first.tier}) with a different submission"
            )
        return Job(job_id, self.store)

    def submit_many(
        self,
        pipeline: str,
        payloads: Iterable[Any],
        *,
        tier: str | None = None,
        deadline_s: float | None = None,
        idempotency_keys: Sequence[str] | None = None,
    ) -> list[Job]:
        """Enqueue one job of `pipeline` per payload, in two Redis round trips (the job records
        in one pipeline, then every message in another) rather than several per job.

        Every payload is validated before anything is written, so bad input (any payload)
        enqueues nothing; if sending fails, the records are removed again. The messages are
        exactly those `submit` sends, but Celery builds them once per batch (see `_Template`);
        a batch of one is sent as `submit` sends it.

        `idempotency_keys`, one per payload, work as `submit`'s, claimed in one more round trip:
        a key already used gives back its job (nothing enqueued for it), or an error naming that
        job if it was used for a different submission; a key given twice in the batch is one
        job, returned twice. On any error, the keys this call claimed are released.
        """
        tier = tier or self.settings.default_tier
        self.settings.queue(tier)
        declared = self.pipeline(pipeline)
        normalized = [self._validate(declared, payload) for payload in payloads]
        first = None if idempotency_keys is None else _first_of_keys(idempotency_keys, normalized)
        deadline = self._check_deadline(deadline_s)
        self._check_reachable()
        if not normalized:
            return []
        if first is not None:
            return self._submit_keyed(declared, tier, deadline, normalized, first)
        ids = [uuid.uuid4().hex for _ in normalized]
        jobs = list(zip(ids, normalized, strict=True))
        self._enqueue(declared, tier, deadline, jobs, self._record_fields(declared))
        return [Job(job_id, self.store) for job_id in ids]

    def _submit_keyed(
        self,
        declared: Pipeline,
        tier: str,
        deadline: float,
        normalized: list[dict[str, Any]],
        first: dict[str, list[int]],
    ) -> list[Job]:
        """`submit_many` with idempotency keys (`first`: each key's payload indexes). Keys are
        claimed in one round trip (claim_keys.lua); only the jobs of keys claimed now are sent."""
        ids = {key: uuid.uuid4().hex for key in first}
        bound = self.store.claim_idempotency_keys(list(ids.items()))
        claimed = [key for key, existing in zip(first, bound, strict=True) if existing is None]
        try:
            for key, existing in zip(first, bound, strict=True):
                if existing is not None:
                    payload = normalized[first[key][0]]
                    ids[key] = self._same_job(existing, key, declared.name, tier, payload).id
            fresh = [(ids[key], normalized[first[key][0]]) for key in claimed]
            if fresh:
                self._enqueue(declared, tier, deadline, fresh, self._record_fields(declared))
        except Exception:
            self.store.release_idempotency_keys(claimed)
            raise
        jobs = {key: Job(ids[key], self.store) for key in first}
        by_index = {i: jobs[key] for key, indexes in first.items() for i in indexes}
        return [by_index[i] for i in range(len(normalized))]

    def _enqueue(
        self,
        declared: Pipeline,
        tier: str,
        deadline: float,
        jobs: list[tuple[str, dict[str, Any]]],
        fields: dict[str, str],
        cache: bool = True,
    ) -> None:
        """Write the jobs' records, then send their messages. What can be built beforehand is
        (a job's canvas, a batch's messages), so a job is recorded as submitted only once it is
        about ready to go (its wait measures queueing, not building); if sending fails, the
        records are removed again."""
        written = False
        try:
            with self._sending(declared, tier, jobs, cache) as send:
                written = True
                self.store.create(jobs, declared.name, tier, deadline, fields)
                send()
        except Exception as error:
            self._reachable = False
            if written:
                self.store.delete([job_id for job_id, _ in jobs])
            if isinstance(error, JobrunnerError):
                raise
            what = f"{len(jobs)} jobs" if len(jobs) > 1 else "job"
            raise JobError(f"could not enqueue {what} for {declared.name}: {error}") from None

    @contextmanager
    def _sending(
        self,
        declared: Pipeline,
        tier: str,
        jobs: list[tuple[str, dict[str, Any]]],
        cache: bool = True,
    ) -> Iterator[Callable[[], object]]:
        """How to send `jobs`, all but the send done. One job is Celery's own send,
        `apply_async` (which retries a lost connection by the app's task_publish_retry_policy);
        several are stamped from one template Celery builds (`_Template`), in one round trip."""
        if len(jobs) == 1:
            yield self._compile(declared, tier, *jobs[0], cache).canvas.apply_async
            return
        with self.app.producer_or_acquire() as producer:
            compiled = self._compile(declared, tier, uuid.uuid4().hex, dict(_SENTINEL), cache)
            yield partial(self._send, _Template(self.app, compiled, producer), jobs)

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

    def cancel(self, job_id: str, *, terminate: bool = False, by: str | None = None) -> JobRecord:
        """End the job CANCELLED, recording who (`by`, default user@host) and when. None of
        its queued steps starts (a worker drops each as it takes it); its running steps finish,
        or with `terminate` are terminated. The job is finished first (first writer wins), and
        only then are running steps revoked: whatever a revoked step's end triggers finds the
        job over. JobError for an unknown or finished job."""
        job = self.job(job_id)
        record = job.record()
        if record.finished or not self.store.finish(
            job_id, CANCELLED, error=f"cancelled by {by or actor()}"
        ):
            raise JobError(f"job {job_id} already finished ({job.state})")
        if terminate:
            self._terminate_running(job_id)
        return job.record()

    def _terminate_running(self, job_id: str) -> list[str]:
        """Terminate the job's steps running on any worker (Celery's revoke with terminate, so
        each worker also discards them should they come again); their task ids."""
        active = self.app.control.inspect(timeout=1.0).active() or {}
        running = [
            task["id"]
            for tasks in active.values()
            for task in tasks
            if (task.get("kwargs") or {}).get("job", {}).get("id") == job_id
        ]
        if running:
            self.app.control.revoke(running, terminate=True)
        return running

    @cached_property
    def pauses(self) -> PauseStore:
        """On the broker's Redis: its fetch script reads the paused queues."""
        return PauseStore(connection.client(connection.require_url(self.settings)))

    def _pause_target(self, tier: str | None, pipeline: str | None) -> None:
        """Exactly one of a tier and a pipeline, and a known one."""
        if (tier is None) == (pipeline is None):
            raise JobError("name a tier or a pipeline (--pipeline NAME), not both")
        if tier is not None:
            self.settings.queue(tier)  # an unknown tier is an error
        else:
            self.pipeline(str(pipeline))

    def pause(
        self, tier: str | None = None, *, pipeline: str | None = None, by: str | None = None
    ) -> dict[str, dict[str, Any]]:
        """Stop the whole fleet running a tier's work (live: each worker's next fetch skips
        its queues) or a pipeline's (each worker parks its steps as it receives them, within a
        tick); what waits stays counted. Every pause now in force."""
        self._pause_target(tier, pipeline)
        if pipeline is not None:
            self.pauses.pause_pipeline(pipeline, by or actor())
        else:
            queues = [self.settings.queue(str(tier), r) for r in self.settings.resource_classes()]
            self.pauses.pause(str(tier), [*queues, self.settings.queue(str(tier))], by or actor())
        return self.pauses.paused()

    def resume(
        self, tier: str | None = None, *, pipeline: str | None = None, by: str | None = None
    ) -> dict[str, dict[str, Any]]:
        """Let the fleet run the tier's or pipeline's work again (a pipeline's parked steps go
        back to their queues); JobError if it was not paused. `by` is accepted for symmetry (a
        resume leaves no record). Every pause still in force."""
        self._pause_target(tier, pipeline)
        if pipeline is not None:
            resumed, what = self.pauses.resume_pipeline(pipeline), f"pipeline {pipeline}"
        else:
            resumed, what = self.pauses.resume(str(tier)), f"tier {tier}"
        if not resumed:
            raise JobError(f"{what} is not paused")
        return self.pauses.paused()
