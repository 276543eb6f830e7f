"""Tracing's cost: what the tracing hooks cost a step while tracing is off (measured directly,
beside hooks that do nothing), and, outside --quick, no-op jobs end to end with tracing off
against tracing on, exporting every span to a local OTLP/HTTP sink."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from jobrunner.benchmarks.harness import fleet, progress
from jobrunner.benchmarks.report import Goal, Row, row
from jobrunner.benchmarks.scenarios import QUICK, Bench, timed
from jobrunner.benchmarks.scenarios.throughput import WARM_UP_JOBS, end_to_end
from jobrunner.tasks.middleware import Middleware
from jobrunner.worker.monitoring.tracing import Tracing

NAME = "tracing"
HOOK_CALLS = 200_000
OFF_GOAL = Goal("jobrunner", "<=", 1.0)  # a microsecond beside steps of milliseconds
JOB = {"id": "0" * 32, "pipeline": "bench", "tier": "high", "step": "noop", "final": True}


def hook_cost_us(hooks: Middleware) -> float:
    """Microseconds one step's hooks (before, after success) take, outside any task."""

    def calls() -> None:
        for _ in range(HOOK_CALLS):
            hooks.before_task(JOB)
            hooks.after_success(JOB, None)

    return timed(calls) / HOOK_CALLS * 1e6


@contextmanager
def otlp_sink(token: str) -> Iterator[str]:
    """An OTLP/HTTP endpoint that accepts (with the token) and drops every export."""

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            allowed = self.headers.get("Authorization") == f"Bearer {token}"
            self.send_response(200 if allowed else 401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def jobs_per_s(bench: Bench, tag: str, env: dict[str, str]) -> float:
    driver = bench.jobrunner
    driver.reset()
    launches = [
        replace(launch, env={**launch.env, **env}) for launch in driver.launches("general", tag)
    ]
    with fleet(bench.log_dir, launches):
        end_to_end(driver, WARM_UP_JOBS, results=False)
        return end_to_end(driver, bench.plan.throughput_jobs, results=False)


def run(bench: Bench) -> list[Row]:
    began = time.perf_counter()
    off, nothing = hook_cost_us(Tracing()), hook_cost_us(Middleware())
    progress(f"tracing: hooks while off {off:.3f} us/step, empty hooks {nothing:.3f} us/step")
    figure = "hooks per step, tracing off (us)"
    rows = [row(NAME, figure, "empty hooks", off, nothing, "lower", OFF_GOAL)]
    if bench.plan is QUICK:
        return rows
    token = secrets.token_urlsafe(12)
    with otlp_sink(token) as url:
        traced = {
            "JOBRUNNER_TRACING__ENDPOINT": url,
            "JOBRUNNER_TRACING__HEADERS": f"Authorization=Bearer {token}",
        }
        plain = jobs_per_s(bench, "troff", {})
        on = jobs_per_s(bench, "tron", traced)
    progress(
        f"tracing: {plain:,.0f} jobs/s off, {on:,.0f} on ({time.perf_counter() - began:.0f} s)"
    )
    figure = "no-op jobs, tracing off vs on (jobs/s)"
    return [*rows, row(NAME, figure, "tracing on", plain, on, "higher")]
