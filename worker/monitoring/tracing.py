"""Traces per job with OpenTelemetry: a middleware opening a span per step run, and the job's
root span, exported over OTLP/HTTP.

A job's trace id is its job id (both are 128 random bits) and its root span id is derived from
it, so every task of the job, wherever Celery's canvas sends it (chains, groups, chords, maps,
jobs submitted through `jobrunner.submit`), knows its trace from the job context it carries:
no header to forward through Celery's canvas, nothing to restamp in a batch, and the trace of a
job is found by its id. Each step run is a child of the root; the root span itself, from
submission to the outcome, is written by the worker that ends the job.

Off unless `[tracing] endpoint` (or OTEL_EXPORTER_OTLP_ENDPOINT) is set: then the hooks return at
once and nothing is built. Each pool process starts its own tracer on first use (after the
fork: a BatchSpanProcessor's thread does not survive one) and flushes it when Celery ends the
process, recycled or not (open-telemetry/opentelemetry-python-contrib#4916: spans of a recycled
prefork child are lost unless flushed at its shutdown).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import threading
import time
from typing import Any

from celery import current_task
from celery.signals import task_postrun, worker_process_shutdown
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from jobrunner.config import Settings, get_settings
from jobrunner.tasks.middleware import Middleware
from jobrunner.worker.broker.queues import QUEUED_AT_HEADER
from jobrunner.worker.monitoring.status import PLUMBING
from jobrunner.worker.runtime import tracking

OTEL_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_PATH = "/v1/traces"
PREFIX = "jobrunner."  # span attribute names

log = logging.getLogger("jobrunner.tracing")


def endpoint(settings: Settings) -> str | None:
    """The OTLP/HTTP traces URL, or None while tracing is off."""
    base = settings.tracing.endpoint or os.environ.get(OTEL_ENDPOINT, "")
    return base.rstrip("/") + TRACES_PATH if base else None


def job_trace(job_id: str) -> tuple[int, int]:
    """(trace id, root span id) of a job: the id itself when it is 32 hex digits (uuid4 hex, as
    clients make them), else a hash of it; the root span id is hashed from it."""
    digest = hashlib.sha256(job_id.encode()).hexdigest()
    try:
        trace_id = int(job_id, 16) if len(job_id) == 32 else int(digest[:32], 16)
    except ValueError:
        trace_id = int(digest[:32], 16)
    return trace_id or 1, int(digest[32:48], 16) or 1


class _ChosenIds(IdGenerator):
    """Random ids, except the next span's when `choose` named them (the job's root span)."""

    def __init__(self) -> None:
        self.random = RandomIdGenerator()
        self.chosen = threading.local()

    def choose(self, trace_id: int, span_id: int) -> None:
        self.chosen.ids = (trace_id, span_id)

    def generate_trace_id(self) -> int:
        ids = getattr(self.chosen, "ids", None)
        return ids[0] if ids else self.random.generate_trace_id()

    def generate_span_id(self) -> int:
        ids = getattr(self.chosen, "ids", None)
        self.chosen.ids = None
        return ids[1] if ids else self.random.generate_span_id()


class _Process:
    """This process's tracer provider, made on first use in the process that uses it."""

    pid: int | None = None
    provider: TracerProvider | None = None
    ids = _ChosenIds()

    @classmethod
    def tracer(cls, settings: Settings, url: str) -> trace.Tracer:
        if cls.provider is None or cls.pid != os.getpid():
            headers = dict(
                item.split("=", 1) for item in settings.tracing.headers.split(",") if "=" in item
            )
            cls.provider = TracerProvider(
                resource=Resource.create({"service.name": settings.tracing.service_name}),
                id_generator=cls.ids,
            )
            exporter = OTLPSpanExporter(endpoint=url, headers=headers or None)
            cls.provider.add_span_processor(BatchSpanProcessor(exporter))
            cls.pid = os.getpid()
        return cls.provider.get_tracer("jobrunner")

    @classmethod
    def flush(cls, **_: Any) -> None:
        """Export what is buffered before the process ends (Celery recycles pool processes)."""
        if cls.provider is not None and cls.pid == os.getpid():
            cls.provider.shutdown()
            cls.provider = None


worker_process_shutdown.connect(_Process.flush, weak=False, dispatch_uid="jobrunner.tracing")
atexit.register(_Process.flush)


def _parent(job_id: str) -> otel_context.Context:
    """A context whose current span is the job's root (remote: another process writes it)."""
    trace_id, root_id = job_trace(job_id)
    root = SpanContext(
        trace_id, root_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(root))


class Tracing(Middleware):
    """A span per step run, a child of its job's root span; the root when the job ends."""

    def __init__(self) -> None:
        self.settings = get_settings()
        self.url = endpoint(self.settings)
        self.open: dict[str, tuple[trace.Span, object]] = {}  # task id -> (span, context token)
        if self.url is not None:  # a task replaced by a canvas (start, map) gets no after-hook
            task_postrun.connect(self._replaced, weak=False, dispatch_uid=f"{PREFIX}{id(self)}")

    def _replaced(self, task_id: str, state: str | None = None, **_: Any) -> None:
        """Celery's post-run signal: end a span no hook ended (the task was replaced)."""
        opened = self.open.pop(task_id, None)
        if opened is not None:
            self._close(*opened, None, (state or "replaced").lower())

    def before_task(self, job: dict[str, Any]) -> None:
        if self.url is None:
            return
        try:
            self._start(job)
        except Exception:  # a tracing fault never fails the step it describes
            log.exception("no span for step %s of job %s", job.get("step"), job.get("id"))

    def _start(self, job: dict[str, Any]) -> None:
        request = current_task.request if current_task else None
        if request is None or not request.id:
            return
        queued_at = getattr(request, QUEUED_AT_HEADER, None)
        attributes = {
            PREFIX + "job_id": job["id"],
            PREFIX + "pipeline": job["pipeline"],
            PREFIX + "tier": job["tier"],
            PREFIX + "step": job["step"],
            PREFIX + "task": request.task or "",
            PREFIX + "task_id": request.id,
            PREFIX + "worker": request.hostname or "",
            PREFIX + "retries": request.retries or 0,
            PREFIX + "redelivered": bool((request.delivery_info or {}).get("redelivered")),
        }
        if queued_at is not None:
            attributes[PREFIX + "queue_wait_s"] = round(time.time() - float(queued_at), 6)
        span = _Process.tracer(self.settings, self.url).start_span(
            PLUMBING.get(request.task or "", job["step"]),
            context=_parent(job["id"]),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        self.open[request.id] = (span, token)

    def after_success(self, job: dict[str, Any], result: Any) -> None:
        self._ended(job, None, "succeeded", ends_job=bool(job.get("final")))

    def after_failure(self, job: dict[str, Any], error: BaseException) -> None:
        self._ended(job, error, "failed", ends_job=not job.get("in_header"))

    def after_retry(self, job: dict[str, Any], error: BaseException) -> None:
        self._ended(job, error, "retried", ends_job=False)

    def _ended(
        self, job: dict[str, Any], error: BaseException | None, outcome: str, *, ends_job: bool
    ) -> None:
        if self.url is None:
            return
        try:
            if self._end(error, outcome) and ends_job:
                self._root(job, error)
        except Exception:  # a tracing fault never fails the step it describes
            log.exception("span of step %s of job %s not ended", job.get("step"), job.get("id"))

    def _end(self, error: BaseException | None, outcome: str) -> bool:
        """End the running task's span; False when none is open (tracing off, no task)."""
        request = current_task.request if current_task else None
        opened = self.open.pop(request.id, None) if request is not None else None
        if opened is None:
            return False
        self._close(*opened, error, outcome)
        return True

    @staticmethod
    def _close(span: trace.Span, token: object, error: BaseException | None, outcome: str) -> None:
        span.set_attribute(PREFIX + "outcome", outcome)
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()
        otel_context.detach(token)

    def _root(self, job: dict[str, Any], error: BaseException | None) -> None:
        """The job's root span, from its submission to now, under the id its steps point to."""
        record = tracking.store().get(job["id"])
        submitted = record.submitted_at if record is not None else time.time()
        _Process.ids.choose(*job_trace(job["id"]))
        root = _Process.tracer(self.settings, self.url or "").start_span(
            f"job {job['pipeline']}",
            context=otel_context.Context(),
            kind=SpanKind.PRODUCER,
            start_time=int(submitted * 1e9),
            attributes={
                PREFIX + "job_id": job["id"],
                PREFIX + "pipeline": job["pipeline"],
                PREFIX + "tier": job["tier"],
                PREFIX + "outcome": "failed" if error is not None else "succeeded",
            },
        )
        if error is not None:
            root.set_status(Status(StatusCode.ERROR, f"step {job['step']} failed: {error}"))
        root.end()
