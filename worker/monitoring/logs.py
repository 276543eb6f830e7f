"""Log lines a log pipeline can parse: `[logging] format = "json"` (or "text", Celery's usual).

JSON lines come from python-json-logger: timestamp, level, logger, message, and wherever the
process knows them the job's id, pipeline, tier and step, the task id, the worker and the trace
id, so one job's lines can be found across workers and joined with its trace. Workers apply it
to Celery's own loggers (its signals, connected by `jobrunner.celery`); the exporter and the CLI
call `configure`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import current_task
from celery.signals import after_setup_logger, after_setup_task_logger, celeryd_after_setup
from opentelemetry import trace
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from jobrunner.config import Settings

JOB_FIELDS = {"id": "job_id", "pipeline": "pipeline", "tier": "tier", "step": "step"}
# Celery attaches a task's arguments to its lines as `data`: payloads stay out of the log.
LEFT_OUT = ("data",)
TEXT_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s"


class JobContext(logging.Filter):
    """Adds what is known of the running job to each record (never overriding `extra=`)."""

    worker: str | None = None  # this process's Celery node name, once the worker named it

    def filter(self, record: logging.LogRecord) -> bool:
        request = current_task.request if current_task else None
        found: dict[str, Any] = {"worker": self.worker}
        if request is not None and request.id:
            found.update(task_id=request.id, worker=request.hostname or self.worker)
            job = (request.kwargs or {}).get("job")
            if isinstance(job, dict):
                found.update({name: job.get(key) for key, name in JOB_FIELDS.items()})
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            found["trace_id"] = format(context.trace_id, "032x")
        for name, value in found.items():
            if value is not None and not hasattr(record, name):
                setattr(record, name, value)
        return True


def formatter(settings: Settings) -> logging.Formatter:
    if settings.logging.format == "json":
        return JsonFormatter(
            "{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            reserved_attrs=[*RESERVED_ATTRS, *LEFT_OUT],
            timestamp=True,
        )
    return logging.Formatter(TEXT_FORMAT)


def apply(logger: logging.Logger, settings: Settings) -> None:
    """Give every handler of `logger` the configured format and the job context."""
    chosen = formatter(settings)
    for handler in logger.handlers:
        if settings.logging.format == "json":
            handler.setFormatter(chosen)
        if not any(isinstance(f, JobContext) for f in handler.filters):
            handler.addFilter(JobContext())


def configure(settings: Settings, level: int = logging.INFO) -> None:
    """A process of our own (exporter, CLI): its root logger writes the configured format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(settings))
    handler.addFilter(JobContext())
    logging.basicConfig(level=level, handlers=[handler], force=True)


def connect_celery(settings: Settings) -> None:
    """Workers: Celery's loggers (its own lines and the tasks') take the configured format."""

    def on_logger(logger: logging.Logger, **_: Any) -> None:
        apply(logger, settings)

    def on_node(sender: str, **_: Any) -> None:
        JobContext.worker = sender

    after_setup_logger.connect(on_logger, weak=False, dispatch_uid="jobrunner.logs.root")
    after_setup_task_logger.connect(on_logger, weak=False, dispatch_uid="jobrunner.logs.task")
    celeryd_after_setup.connect(on_node, weak=False, dispatch_uid="jobrunner.logs.node")
