"""Per-step metrics: a middleware measuring each step run in the pool process that runs it.

Run time, queue wait (the publish stamp to the run starting), peak RSS, bytes read and written,
rows out and the quarantine rate of data steps, and what the step reported with `ctx.metric`;
written when the run ends (worker/store/step_stats.py), in the same round trip as job tracking's
own record of the run (`tracking.ride_with_run_end`). Kept apart from job
tracking (worker/runtime/tracking.py) so either can change alone; the app names both.

Peak RSS is the process's high-water mark, reset when the run starts (Linux `clear_refs`), so it
is this run's peak, not the process's lifetime one; elsewhere the RSS at the end is the figure.
Bytes are what the process asked the OS to read and write (psutil's `read_chars` and
`write_chars`): page-cache hits count, as a step's own I/O should.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from celery import current_task

from jobrunner.config import get_settings
from jobrunner.tasks.cache import CACHED
from jobrunner.tasks.middleware import Middleware
from jobrunner.tasks.step import REPORTED
from jobrunner.worker.broker.queues import QUEUED_AT_HEADER
from jobrunner.worker.runtime import tracking
from jobrunner.worker.store import step_stats
from jobrunner.worker.store.jobs import data_flow

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")
RESET_PEAK = b"5"  # clear_refs: reset the peak RSS to the current RSS (Linux 4.0+)

log = logging.getLogger("jobrunner.step_metrics")


@dataclass
class _Started:
    at: float  # monotonic
    wall: float
    read: int
    written: int
    peak_reset: bool


def _io(process: psutil.Process) -> tuple[int, int]:
    try:
        counters = process.io_counters()
    except (psutil.Error, AttributeError, NotImplementedError):  # no per-process I/O here
        return 0, 0
    return (
        getattr(counters, "read_chars", counters.read_bytes),
        getattr(counters, "write_chars", counters.write_bytes),
    )


def _reset_peak() -> bool:
    try:
        CLEAR_REFS.write_bytes(RESET_PEAK)
    except OSError:
        return False
    return True


def _peak_rss(process: psutil.Process, reset: bool) -> int:
    """This run's peak RSS in bytes (the RSS now if the peak could not be reset)."""
    if reset:
        try:
            for line in STATUS.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
    return int(process.memory_info().rss)


def _rows(job: dict[str, Any], result: Any) -> tuple[int | None, float | None]:
    """(rows out, quarantined / rows in) of this step's data-flow facts in its result."""
    flows = [flow for flow in data_flow(result) if flow[0] == job.get("step")]
    if not flows:
        return None, None
    rows_in = sum(flow[1] for flow in flows)
    rows_out = sum(flow[2] for flow in flows)
    quarantined = sum(flow[3] for flow in flows)
    return rows_out, (quarantined / rows_in if rows_in else None)


def _run_id() -> str | None:
    """The running task's id (hooks run inside the task call); None outside a task."""
    request = current_task.request if current_task else None
    return getattr(request, "id", None)


class StepMetrics(Middleware):
    """Measures every job task run; one instance per app in each pool process."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.started: dict[str, _Started] = {}  # task id -> the run's starting figures

    def before_task(self, job: dict[str, Any]) -> None:
        run_id = _run_id()
        if run_id is None:
            return
        read, written = _io(self.process)
        self.started[run_id] = _Started(time.monotonic(), time.time(), read, written, _reset_peak())

    def after_success(self, job: dict[str, Any], result: Any) -> None:
        # A reused run (tasks/cache.py) is counted apart and kept out of the anomaly history.
        self._ended(job, "cached" if job.get(CACHED) else "succeeded", result)

    def after_failure(self, job: dict[str, Any], error: BaseException) -> None:
        self._ended(job, "failed")

    def after_retry(self, job: dict[str, Any], error: BaseException) -> None:
        self._ended(job, "retried")

    def _ended(self, job: dict[str, Any], outcome: str, result: Any = None) -> None:
        run_id = _run_id()
        started = self.started.pop(run_id, None) if run_id is not None else None
        if started is None:
            return
        read, written = _io(self.process)
        queued_at = getattr(current_task.request, QUEUED_AT_HEADER, None)
        rows_out, quarantine_rate = _rows(job, result)
        run = step_stats.StepRun(
            pipeline=job["pipeline"],
            step=job["step"],
            outcome=outcome,
            run_s=time.monotonic() - started.at,
            wait_s=started.wall - float(queued_at) if queued_at is not None else None,
            peak_rss_bytes=_peak_rss(self.process, started.peak_reset),
            read_bytes=max(0, read - started.read),
            written_bytes=max(0, written - started.written),
            rows_out=rows_out,
            quarantine_rate=quarantine_rate,
            reported=dict(job.get(REPORTED) or {}),
        )
        settings = get_settings()
        tracking.ride_with_run_end(
            step_stats.run_write(
                tracking.store().redis,
                job["id"],
                run,
                run_bounds=settings.metrics.run_buckets_s,
                wait_bounds=settings.metrics.wait_buckets_s,
                history=settings.alerts.anomaly.history,
            )
        )
