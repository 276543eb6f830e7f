"""The client API for applications: submit a pipeline at a tier, get a handle, wait for it.

    from jobrunner import Client
    job = Client().submit("features", {"output_name": "today"}, tier="high")
    print(job.id, job.state, job.result(timeout=60))

Importing this module starts and connects to nothing. A submission is checked completely (tier,
pipeline, payload, size, broker) before its first message is sent: bad input enqueues nothing.
Many jobs of one pipeline go much faster with `submit_many` (two Redis round trips per 2,000
jobs, one more with idempotency keys).
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

import redis
from celery import Celery
from celery.canvas import Signature
from celery.signals import after_task_publish, before_task_publish, task_sent
from celery.utils.saferepr import saferepr
from celery.utils.time import utcoffset
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
from jobrunner.worker.broker import connection, scripts
from jobrunner.worker.broker.queues import QUEUED_AT_HEADER, stamp_queued_at
from jobrunner.worker.broker.transport import publish_commands, run_atomically
from jobrunner.worker.store.control import PauseStore, actor
from jobrunner.worker.store.jobs import CANCELLED, FAILURE, JobRecord, JobStore, open_store
from jobrunner.worker.validation import check_deadline, check_idempotency_key, check_json


class JobError(JobrunnerError):
    """A job failed, is unknown, or did not finish in time."""


class BulkSubmitError(JobError):
    """`submit_many` failed part way: the jobs of the chunks sent before (`accepted`, their
    ids) are enqueued, none of the others is."""

    def __init__(self, message: str, accepted: list[str]) -> None:
        super().__init__(message)
        self.accepted = accepted


# Kinds of job (`Client._template`) whose messages a client keeps a template of, and distinct
# payloads each keeps the rendering of: a client's memory stays a few megabytes at most.
_TEMPLATES_KEPT = 32
_SUBMIT_RENDERED_KEPT = 8

# Jobs per chunk of a bulk submission: each chunk is recorded and sent whole or not at all, and
# a client's memory for its messages stays that of one chunk however many jobs are submitted.
BULK_CHUNK_JOBS = 2_000


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

    ids: list[Any]  # the job id, its task ids, then what Celery reads as it sends (`readings`)
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


_Command = tuple[str, tuple[Any, ...]]  # a Redis command's name and arguments
_PUSHES = frozenset({"lpush", "rpush"})  # list pushes: a chunk's to one list merge into one
_MESSAGE = object()  # in a rendered command: where the message's text goes
_RENDERED_KEPT = 1024  # distinct payloads whose rendering a template keeps (memory stays flat)
# What Celery reads off a clock as it sends, by message kind and key: the enqueue time the
# publish hook stamps on a task message, and a task-sent event's Lamport clock and timestamp.
# A template makes each a slot, read again for every job (`_Template.readings`), as it does the
# sending thread's reply-to address (`app.thread_oid`, wherever Celery writes it).
_CLOCKS = {"task": {QUEUED_AT_HEADER: "now"}, "event": {"clock": "lamport", "timestamp": "now"}}


def _json_text(reading: Any) -> str:
    """A reading as it appears in a message's JSON text: a string's own characters (ids and
    addresses need no escaping), a (finite) number's repr."""
    return reading if isinstance(reading, str) else repr(reading)


def _uuid4s(count: int) -> list[str]:
    """`count` random uuid4 strings, as `str(uuid.uuid4())` makes them (Celery's task ids,
    kombu's delivery tags), from one read of the OS's random source: a fifth of the cost."""
    hexed = os.urandom(16 * count).hex()
    made = []
    for at in range(0, 32 * count, 32):
        h = hexed[at : at + 32]
        variant = "89ab"[int(h[16], 16) & 3]
        made.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}")
    return made


def _body_encoder(channel: Any) -> Callable[[str], str]:
    """How a kombu channel writes a serialized body into a message's JSON text: encoded with
    its body encoding (base64 by default: done here directly, the same bytes for a fraction of
    the calls), as a JSON string."""
    if channel.body_encoding == "base64":
        return lambda body: f'"{base64.b64encode(body.encode()).decode()}"'
    return lambda body: json.dumps(channel.encode_body(body, channel.body_encoding)[0])


def _occurrences(text: str, ids: list[str]) -> list[tuple[int, int, int]]:
    """(start, end, index in `ids`) of every occurrence of each of `ids` in `text`, in order:
    one search per id at C speed (a regex alternation of them all, tried at every position,
    took a second over a 200-step chain's first message)."""
    found = []
    for index, own in enumerate(ids):
        at = text.find(own)
        while at >= 0:
            found.append((at, at + len(own), index))
            at = text.find(own, at + len(own))
    return sorted(found)


class _Pieces(NamedTuple):
    """A text cut where per-job values go: its parts, and (position, value index) per slot."""

    parts: list[str]
    slots: list[tuple[int, int]]

    @classmethod
    def cut(cls, segments: list[str], between: list[int], ids: list[str]) -> _Pieces | None:
        """`segments` joined with slots `between` them, each cut wherever one of `ids` occurs:
        that slot's index is the id's. None if two occurrences overlap (no cut is right)."""
        parts: list[str] = []
        slots: list[tuple[int, int]] = []
        for n, segment in enumerate(segments):
            last = 0
            for start, end, index in _occurrences(segment, ids):
                if start < last:
                    return None
                parts.append(segment[last:start])
                slots.append((len(parts), index))
                parts.append("")
                last = end
            parts.append(segment[last:])
            if n < len(between):
                slots.append((len(parts), between[n]))
                parts.append("")
        return cls(parts, slots)

    def fill(self, values: list[str]) -> str:
        parts = self.parts.copy()
        for at, index in self.slots:
            parts[at] = values[index]
        return "".join(parts)


class _Text(NamedTuple):
    """A message's text as kombu pushes it to Redis, cut where a job's values go: its ids (in
    the body as Celery serialized it, and in the envelope), the body as kombu encodes it for
    the envelope (base64 by default), and the delivery tag kombu gives it."""

    body: _Pieces
    envelope: _Pieces  # values: the ids, then the encoded body, then the delivery tag

    @classmethod
    def split(
        cls, text: str, body: str, tag: str, ids: list[str], encode: Callable[[str], str]
    ) -> _Text | None:
        """`text` cut where `ids` occur; None unless its encoded `body` and its delivery `tag`
        are found exactly once each, in that order."""
        encoded = encode(body)
        if text.count(encoded) != 1 or text.count(tag) != 1:
            return None
        head, rest = text.split(encoded)
        if tag not in rest:
            return None
        count = len(ids)
        body_cut = _Pieces.cut([body], [], ids)
        envelope_cut = _Pieces.cut([head, *rest.split(tag)], [count, count + 1], ids)
        return None if body_cut is None or envelope_cut is None else cls(body_cut, envelope_cut)

    def fill(self, ids: list[str], tag: str, encode: Callable[[str], str]) -> str:
        return self.envelope.fill([*ids, encode(self.body.fill(ids)), tag])

    def occurrences(self) -> list[int]:
        """The id index of each slot of the text, in order (the body's, then the envelope's)."""
        return [index for _, index in self.body.slots + self.envelope.slots]


class _Rendered(NamedTuple):
    """A job's Redis commands for one payload, with the template's own ids: per message its
    text (None: a message no command carries), and the commands as (name, arguments with
    `_MESSAGE` where the text goes, the index of the message whose text that is, or -1)."""

    texts: list[_Text | None]
    commands: list[tuple[str, tuple[Any, ...], int]]


# In a template's renderings: a payload seen once, not rendered yet.
_ONCE = _Rendered([], [])


class _Template:
    """One job's messages as Celery and kombu build them (routing, headers, reprs, the task-sent
    event), decoded, with the values that differ from job to job made slots: the job id and
    task ids (by the keys Celery files them under), the payload, the reprs of the task's args
    and kwargs, and what Celery reads as it sends (`_CLOCKS`, and the thread's reply-to
    address: read again per job, so a template kept for later jobs stamps each with its own
    enqueue time, from any thread). Stamping a job with its own values gives what Celery would
    send.

    For speed, a job is not stamped message by message: per distinct payload, the stamped
    messages (the template's own ids and clock readings) are handed to kombu's publish with a
    recorder instead of Redis, which gives the exact text kombu would push; that text is cut
    where ids, clock readings, the encoded body and the delivery tag go (`_render`), and each
    job only fills those in (`stamp`). Celery's send costs over half a millisecond per job, and
    stamping (half of it Celery's `saferepr`) two hundred microseconds; filling in, a few
    microseconds.

    The template checks itself once: stamped with its own values, it must give back exactly the
    messages Celery built (it would not were the first task's arguments something JSON does not
    carry unchanged, a tuple say: the reprs made from their decoded copy would differ)."""

    def __init__(
        self,
        app: Celery,
        job: Compiled,
        producer: Producer,
        *,
        sent_events: bool = True,
        kept: int = _RENDERED_KEPT,
    ) -> None:
        """`sent_events`: keep Celery's task-sent events (event messages: no task header).
        `kept`: how many distinct payloads' renderings to keep."""
        recorded = [
            sent
            for sent in _record(app, job.canvas, producer)
            if sent_events or "task" in sent.message["headers"]
        ]
        if not recorded:
            raise JobError("could not build the batch's messages: Celery sent none")
        self.channel = producer.channel
        self._lamport = app.clock
        self._kept = kept
        decoded = [
            (r, loads(r.message["body"], r.message["content-type"], r.message["content-encoding"]))
            for r in recorded
        ]
        self._ids = {job.id: 0}
        for r, body in decoded:
            _number_ids([body, r.message["headers"], r.message["properties"]], self._ids)
        self._own_ids = list(self._ids)
        self._app = app  # whose per-thread reply-to address each job is sent with
        read: list[Any] = [app.thread_oid]  # what Celery read for each reading slot, in order
        self._reads = ["thread"]  # what each reading slot holds: "thread", "now" or "lamport"
        self._ids[app.thread_oid] = len(self._ids)
        marked = [(r, *self._mark_clocks(r, body, read)) for r, body in decoded]
        self._reprs: dict[str, _Repr] = {}
        maxlevels = app.conf.task_repr_maxlevels
        for r, body, _ in marked:
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
                self._pattern(headers, fresh=True),
                self._pattern(r.message["properties"], fresh=True),
                registry.type_to_name[r.message["content-type"]],
                r.exchange,
                r.routing_key,
            )
            for r, body, headers in marked
        ]
        own = _Stamp([*self._own_ids, *read], job.payload, {})
        if [self._prepare(m, own) for m in self.messages] != [r.message for r in recorded]:
            raise JobError(
                "could not build the batch's messages: stamped with its own values, the "
                "template is not what Celery built"
            )
        # Rendered with readings no clock gives, random numbers of 13 and 16 digits (none occurs
        # by chance in a message's text; the reply-to address is a uuid): where one occurs, a
        # job's own reading goes.
        self._own_readings = [
            read[0]
            if what == "thread"
            else 10**12 + uuid.uuid4().int % 10**12 + 0.5
            if what == "now"
            else 10**15 + uuid.uuid4().int % 10**15
            for what in self._reads
        ]
        self._own_texts = [*self._own_ids, *map(_json_text, self._own_readings)]
        self._encode = _body_encoder(self.channel)
        self._occurrences: list[int] | None = None  # the ids' slots in a rendering, sorted
        self._rendered: dict[str, _Rendered | None] = {}  # by payload JSON
        if self._render(job.payload) is None:
            raise JobError("could not build the batch's messages: kombu's text is not as expected")

    def _mark_clocks(
        self, recorded: _Recorded, body: Any, read: list[Any]
    ) -> tuple[Any, dict[str, Any]]:
        """The message's body and headers with what Celery read off a clock (`_CLOCKS`)
        replaced by a marker that `_pattern` makes a slot; each reading goes to `read`."""
        headers = recorded.message["headers"]
        kind = "task" if "task" in headers else "event"
        container = headers if kind == "task" else body
        if not isinstance(container, dict):
            return body, headers
        container = dict(container)
        for key, clock in _CLOCKS[kind].items():
            if isinstance(container.get(key), int | float):
                marker = f"\0{clock}:{len(self._ids)}"
                self._ids[marker] = len(self._ids)
                self._reads.append(clock)
                read.append(container[key])
                container[key] = marker
        return (body, container) if kind == "task" else (container, headers)

    def readings(self) -> list[Any]:
        """What Celery reads as it sends a job (the thread's reply-to address, clocks), one per
        reading slot."""
        now = time.time()
        return [
            self._app.thread_oid
            if what == "thread"
            else now
            if what == "now"
            else self._lamport.forward()
            for what in self._reads
        ]

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

    def _commands(self, job: _Stamp) -> tuple[list[_Command], list[str], list[str]]:
        """The job's Redis commands as Celery and kombu build them, message by message (the
        messages stamped, then published by kombu into a recorder): exact by construction.
        Also each message's body as serialized, and its delivery tag."""
        commands, bodies, tags = [], [], []
        for pattern in self.messages:
            message = self._prepare(pattern, job)
            bodies.append(message["body"])
            commands.extend(
                publish_commands(self.channel, message, pattern.exchange, pattern.routing_key)
            )
            tags.append(message["properties"]["delivery_tag"])
        return commands, bodies, tags

    def _render(self, payload: dict[str, Any]) -> _Rendered | None:
        """The messages for `payload` with the template's own ids and readings, cut where a
        job's values go (see `_Rendered`); None where filling in other values would not give
        what Celery sends (an id cut short by a repr's truncation, or a payload holding one of
        the template's ids: each must occur where the template has it, and nowhere else)."""
        own = [*self._own_ids, *self._own_readings]
        commands, bodies, tags = self._commands(_Stamp(own, payload, {}))
        own_texts = self._own_texts
        texts: list[_Text | None] = [None] * len(bodies)
        shaped: list[tuple[str, tuple[Any, ...], int]] = []
        for name, args in commands:
            index = next((i for i, tag in enumerate(tags) for a in args if tag in str(a)), -1)
            if index < 0:
                shaped.append((name, args, index))
                continue
            text = next(a for a in args if tags[index] in str(a))
            cut = _Text.split(text, bodies[index], tags[index], own_texts, self._encode)
            if cut is None or cut.fill(own_texts, tags[index], self._encode) != text:
                return None
            if texts[index] not in (None, cut):
                return None
            texts[index] = cut
            shaped.append((name, tuple(_MESSAGE if a == text else a for a in args), index))
        occurrences = sorted(i for text in texts if text is not None for i in text.occurrences())
        if self._occurrences is not None and occurrences != self._occurrences:
            return None
        self._occurrences = occurrences
        return _Rendered(texts, shaped)

    def stamp(
        self, job_id: str, payload: dict[str, Any], key: str, fresh: list[str] | None = None
    ) -> list[_Command]:
        """The Redis commands that send the job, fresh task ids and delivery tags (`fresh`, or
        made here) and clocks read now, as kombu would run them message by message. `key`: the
        payload as JSON, by which its messages are rendered (`_render`) at its second job and
        then only have ids, readings and tags filled in per job. A payload's first job, and
        every job of the rare payload that cannot be rendered, is stamped message by message
        (rendering costs more than that, and most payloads of single submits come once)."""
        rendered = self._rendered.get(key)
        if rendered is _ONCE:
            rendered = self._rendered[key] = self._render(payload)
        elif key not in self._rendered:
            if len(self._rendered) >= self._kept:
                self._rendered.clear()
            self._rendered[key] = _ONCE
        tasks = len(self._own_ids) - 1
        fresh = fresh or _uuid4s(self.fresh_per_job)
        ids, readings = [job_id, *fresh[:tasks]], self.readings()
        if rendered is None:
            return self._commands(_Stamp([*ids, *readings], payload, {}))[0]
        values = [*ids, *map(_json_text, readings)]
        encode = self._encode
        texts = [
            None if text is None else text.fill(values, tag, encode)
            for text, tag in zip(rendered.texts, fresh[tasks:], strict=True)
        ]
        return [
            (name, tuple(texts[index] if a is _MESSAGE else a for a in args))
            for name, args, index in rendered.commands
        ]

    @property
    def fresh_per_job(self) -> int:
        """How many fresh uuids a job takes: its task ids and its messages' delivery tags."""
        return len(self._own_ids) - 1 + len(self.messages)

    def commands(self, jobs: list[tuple[str, dict[str, Any], str]]) -> list[_Command]:
        """The Redis commands that send `jobs` ((id, payload, payload as JSON) each): each
        list's pushes merged into one command, in the same order (a queue's wake tokens, all
        alike, by one script that pushes copies: push_copies.lua), then each pub/sub channel's
        messages (the task-sent events) published by one script (publish_many.lua), then each
        key's expiry once (a wake list's, a queue's: every job renews it alike), then the
        rest."""
        pushes: dict[tuple[str, Any], list[Any]] = {}
        published: dict[Any, list[Any]] = {}
        expiries: dict[Any, Any] = {}  # key -> its time to live, in ms
        rest: list[_Command] = []  # anything else, as kombu ran it
        per_job = self.fresh_per_job
        fresh = _uuid4s(per_job * len(jobs))
        for at, (job_id, payload, key) in enumerate(jobs):
            mine = fresh[at * per_job : (at + 1) * per_job]
            for name, args in self.stamp(job_id, payload, key, mine):
                if name in _PUSHES:
                    pushes.setdefault((name, args[0]), []).extend(args[1:])
                elif name == "publish":
                    published.setdefault(args[0], []).extend(args[1:])
                elif name == "pexpire":
                    expiries[args[0]] = args[1]
                else:
                    rest.append((name, args))
        merged = [
            ("eval", (scripts.load("push_copies"), 1, key, name, values[0], len(values)))
            if values.count(values[0]) == len(values)
            else (name, (key, *values))
            for (name, key), values in pushes.items()
        ]
        return (
            merged
            + [
                ("eval", (scripts.load("publish_many"), 1, topic, *messages))
                for topic, messages in published.items()
            ]
            + [("pexpire", item) for item in expiries.items()]
            + rest
        )


def _only_own_publish_hooks() -> bool:
    """Whether jobrunner's own (`stamp_queued_at`, whose stamp a template reads per job) is the
    only publish hook connected: another (a tracer's, say) may put a value of its own in each
    message, which a kept template would repeat, or expect to be called per message."""
    return (
        all(receiver is stamp_queued_at for _, receiver in before_task_publish.receivers)
        and not after_task_publish.receivers
        and not task_sent.receivers
    )


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
        self._templates: dict[tuple[Any, ...], tuple[Pipeline, _Template | None]] = {}
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

    def _template(self, declared: Pipeline, tier: str, cache: bool) -> _Template | None:
        """The template `submit` stamps a job of `declared` at `tier` from, built on first use
        and kept. It is kept per all that shapes Celery's messages beyond a job's ids, payload
        and clocks: the pipeline (the very declaration: reloaded pipelines get new ones), the
        tier, the cache flag, whether Celery sends task-sent events now (a worker's pool
        process switches them, worker/runtime/sent_events.py), the process (the origin header,
        the event's pid) and the UTC offset (in the event); threads share it (Celery's
        reply-to address, per thread, is a slot). None, so Celery builds the job, where its
        messages depend on more: inside a running task (its ids are the parent's), with
        publish hooks other than jobrunner's own connected (they may write anything into a
        message), or where no template could be built for this kind of job."""
        if self.app.current_worker_task is not None or not _only_own_publish_hooks():
            return None
        conf = self.app.conf
        key = (
            declared.name,
            tier,
            cache,
            conf.task_send_sent_event,
            os.getpid(),
            utcoffset(),
        )
        kept = self._templates.get(key)
        if kept is None or kept[0] is not declared:
            if len(self._templates) >= _TEMPLATES_KEPT:
                self._templates.clear()
            job = self._compile(declared, tier, uuid.uuid4().hex, dict(_SENTINEL), cache)
            with self.app.producer_or_acquire() as producer:
                try:
                    template = _Template(self.app, job, producer, kept=_SUBMIT_RENDERED_KEPT)
                except JobError:
                    template = None  # Celery builds each job of this kind
            kept = self._templates[key] = (declared, template)
        return kept[1]

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
        fields = self._record_fields(declared, cache)
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
    def _record_fields(declared: Pipeline, cache: bool = True) -> dict[str, str]:
        """What the job record keeps of its pipeline's failure handling (read when it fails):
        the retry policy, and `cache=False`, which a retry keeps."""
        if declared.on_failure != "retry_job":
            return {}
        policy = declared.model_dump(include={"max_job_retries", "job_retry_delay_s"})
        return {"retry_policy": json.dumps(policy), **({} if cache else {"cache": "0"})}

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
        cache: bool = True,
    ) -> list[Job]:
        """Enqueue one job of `pipeline` per payload, in two Redis round trips per chunk of
        `BULK_CHUNK_JOBS` (the chunk's job records in one atomic call, then all its messages in
        one transaction) rather than several per job.

        Every payload is validated before anything is written, so bad input (any payload)
        enqueues nothing. A chunk is enqueued whole or not at all: if sending it fails, its
        records are removed again, and a failure after the first chunk raises
        `BulkSubmitError`, whose `accepted` lists the jobs enqueued before. The messages are
        those `submit` sends, but Celery builds them once per batch (see `_Template`), without
        task-sent events unless `flower.bulk_sent_events`; a batch of one is sent as `submit`
        sends it.

        `idempotency_keys`, one per payload, work as `submit`'s, claimed in one more round trip:
        a key already used gives back its job (nothing enqueued for it), or an error naming that
        job if it was used for a different submission; a key given twice in the batch is one
        job, returned twice. On any error, the keys this call claimed are released. `cache` as
        `submit`'s.
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
            return self._submit_keyed(declared, tier, deadline, normalized, first, cache)
        ids = [uuid.uuid4().hex for _ in normalized]
        jobs = list(zip(ids, normalized, strict=True))
        fields = self._record_fields(declared, cache)
        self._enqueue_many(declared, tier, deadline, jobs, fields, cache)
        return [Job(job_id, self.store) for job_id in ids]

    def _submit_keyed(
        self,
        declared: Pipeline,
        tier: str,
        deadline: float,
        normalized: list[dict[str, Any]],
        first: dict[str, list[int]],
        cache: bool = True,
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
                fields = self._record_fields(declared, cache)
                self._enqueue_many(declared, tier, deadline, fresh, fields, cache)
        except Exception as error:
            accepted = set(error.accepted if isinstance(error, BulkSubmitError) else ())
            self.store.release_idempotency_keys([k for k in claimed if ids[k] not in accepted])
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
        """Record and send one job. Its messages (the task and its task-sent event) are those
        Celery builds and kombu routes, stamped from a template kept per kind of job
        (`_template`), but nothing is sent until the record is written with them: one
        MULTI/EXEC, all or nothing, when job records live on the broker's Redis (the default),
        so a job is recorded as submitted only as it goes (its wait measures queueing, not
        building), at one round trip. Otherwise the record is written first, and removed again
        if sending fails.

        A job stamped from a kept template is sent on the template's channel, without taking
        a producer from Celery's pool: the channel only prepares messages (no state kept) and
        lends its connection pool (redis-py's, shared by threads) to the transaction."""
        ((job_id, payload),) = jobs
        written = False
        try:
            template = self._template(declared, tier, cache)
            with nullcontext() if template else self.app.producer_or_acquire() as producer:
                if template is not None:
                    channel = template.channel
                    commands = template.stamp(job_id, payload, json.dumps(payload))
                else:
                    channel = producer.channel
                    canvas = self._compile(declared, tier, job_id, payload, cache).canvas
                    commands = [
                        command
                        for sent in _record(self.app, canvas, producer)
                        for command in publish_commands(
                            channel, sent.message, sent.exchange, sent.routing_key
                        )
                    ]
                record = self.store.create_commands(jobs, declared.name, tier, deadline, fields)
                if self.settings.effective_result_url == self.settings.broker_url:
                    self._send(channel, [*record, *commands])
                else:  # the records' Redis is not the queues': two round trips
                    written = True
                    self.store.create(jobs, declared.name, tier, deadline, fields)
                    self._send(channel, commands)
        except Exception as error:
            self._reachable = False
            self._templates.clear()  # built on a connection that may be gone
            if written:
                self.store.delete([job_id])
            if isinstance(error, JobrunnerError):
                raise
            raise JobError(f"could not enqueue job for {declared.name}: {error}") from None

    def _enqueue_many(
        self,
        declared: Pipeline,
        tier: str,
        deadline: float,
        jobs: list[tuple[str, dict[str, Any]]],
        fields: dict[str, str],
        cache: bool = True,
    ) -> None:
        """Record and send two jobs or more, `BULK_CHUNK_JOBS` at a time, each chunk whole or
        not at all: its records in one atomic call, then all its messages in one MULTI/EXEC
        (stamped from one template Celery builds, `_Template`, before anything is written);
        if that fails, the chunk's records are removed again. A failure after the first chunk
        raises `BulkSubmitError`, naming the jobs accepted before it."""
        if len(jobs) == 1:  # a batch of one is sent as `submit` sends it
            self._enqueue(declared, tier, deadline, jobs, fields, cache)
            return
        accepted: list[str] = []
        try:
            with self.app.producer_or_acquire() as producer:
                compiled = self._compile(declared, tier, uuid.uuid4().hex, dict(_SENTINEL), cache)
                events = self.settings.flower.bulk_sent_events
                template = _Template(self.app, compiled, producer, sent_events=events)
                for start in range(0, len(jobs), BULK_CHUNK_JOBS):
                    chunk = [
                        (i, p, json.dumps(p)) for i, p in jobs[start : start + BULK_CHUNK_JOBS]
                    ]
                    commands = template.commands(chunk)
                    ids = [job_id for job_id, _, _ in chunk]
                    try:
                        self.store.create_many(
                            [(job_id, text) for job_id, _, text in chunk],
                            declared.name,
                            tier,
                            deadline,
                            fields,
                        )
                        self._send(template.channel, commands)
                    except Exception:
                        self.store.delete(ids)
                        raise
                    accepted.extend(ids)
        except Exception as error:
            self._reachable = False
            done = f" ({len(accepted)} of them enqueued before)" if accepted else ""
            if accepted or not isinstance(error, JobrunnerError):
                error = BulkSubmitError(
                    f"could not enqueue {len(jobs)} jobs for {declared.name}{done}: {error}",
                    accepted,
                )
            raise error from None

    def _send(self, channel: Any, commands: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Run a chunk's commands in one transaction, retrying a lost connection as Celery's own
        publish does (the app's `task_publish_retry_policy`), so a broker restart is a pause,
        not an error."""
        policy = self.app.conf.task_publish_retry_policy or {}
        delay = float(policy.get("interval_start", 0))
        for attempt in itertools.count():
            try:
                run_atomically(channel, commands)
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
