"""`jobrunner bench`: every scenario on jobrunner and on plain Celery (and, with --peers, Huey),
in one run, on one private Redis, with the same number of worker processes, one fleet at a time.

The machine may be shared and noisy, so the report leads with ratios against baselines measured
minutes apart in the same run, never with absolute figures from elsewhere. Everything runs on
127.0.0.1 in a temporary directory; every process started is stopped whatever happens
(exceptions, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from importlib.util import find_spec
from pathlib import Path
from types import FrameType

import redis
from rich.console import Console

from jobrunner.benchmarks import report
from jobrunner.benchmarks.drivers import PROCESSES, CeleryBaseline, HueyPeer, Jobrunner
from jobrunner.benchmarks.harness import (
    adopt,
    configure_environment,
    kill_leftovers,
    machine,
    progress,
)
from jobrunner.benchmarks.report import Row
from jobrunner.benchmarks.scenarios import (
    FULL,
    QUICK,
    Bench,
    Plan,
    api,
    chain,
    data,
    fan_out,
    fleet,
    memory,
    priority,
    throughput,
    tracing,
)
from jobrunner.config import JobrunnerError, get_settings
from jobrunner.worker.broker.embedded import EmbeddedRedis

SCENARIOS: dict[str, Callable[[Bench], list[Row]]] = {
    priority.NAME: priority.run,
    throughput.NAME: throughput.run,
    fan_out.NAME: fan_out.run,
    chain.NAME: chain.run,
    memory.NAME: memory.run,
    api.NAME: api.run,
    tracing.NAME: tracing.run,
    data.NAME: data.run,
    fleet.NAME: fleet.run,
}
# Left out of --quick unless named with --only: it starts an API server beside its workers.
NOT_QUICK = {api.NAME}


def selected(only: str | None, quick: bool = False) -> list[str]:
    if only is None:
        return [name for name in SCENARIOS if not (quick and name in NOT_QUICK)]
    if only not in SCENARIOS:
        raise JobrunnerError(f"unknown benchmark {only!r} (choose from: {', '.join(SCENARIOS)})")
    return [only]


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C does, so the same clean-up stops every process."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def bench_stack(plan: Plan, peers: bool) -> Iterator[Bench]:
    """A private Redis, the environment workers inherit, and a driver per system."""
    with tempfile.TemporaryDirectory(prefix="jobrunner-bench-") as tmp:
        data_dir, log_dir = Path(tmp) / "data", Path(tmp) / "logs"
        log_dir.mkdir()
        server = EmbeddedRedis(data_dir)
        try:
            url = server.start()
            assert server.process is not None
            adopt(server.process.pid)
            configure_environment(url, data_dir)
            progress(f"redis on 127.0.0.1:{server.port}")
            from jobrunner.worker.client import Client

            settings = get_settings()
            with redis.Redis.from_url(url) as broker:
                yield Bench(
                    plan=plan,
                    log_dir=log_dir,
                    jobrunner=Jobrunner(
                        broker, settings, Client(settings), [chain.WARM_UP_DEPTH, plan.chain_depth]
                    ),
                    celery=CeleryBaseline(broker, settings, tuned=False),
                    celery_tuned=CeleryBaseline(broker, settings, tuned=True),
                    huey=HueyPeer(broker, settings) if peers else None,
                )
        finally:
            server.stop()
            killed = kill_leftovers()
            stragglers = f" (SIGKILLed stragglers: {', '.join(map(str, killed))})" if killed else ""
            progress(f"every process this run started is stopped{stragglers}")


def run_benchmarks(
    *,
    quick: bool,
    as_json: bool,
    only: str | None,
    peers: bool,
    console: Console,
    data_sizes_mb: tuple[float, ...] = (),
    fleet_sizes: tuple[int, ...] = (),
) -> list[Row]:
    """Run the selected scenarios and print the report; the rows, for callers and tests."""
    names = selected(only, quick)
    if peers and find_spec("huey") is None:
        raise JobrunnerError("--peers needs Huey: pip install 'jobrunner[bench]'")
    plan = QUICK if quick else FULL
    if data_sizes_mb:
        plan = replace(plan, data_sizes_mb=data_sizes_mb)
    if fleet_sizes:
        plan = replace(plan, fleet_sizes=fleet_sizes)
    host = machine()
    began = time.monotonic()
    rows: list[Row] = []
    try:
        with sigterm_interrupts(), bench_stack(plan, peers) as bench:
            for name in names:
                progress(f"scenario {name}")
                rows += SCENARIOS[name](bench)
    except KeyboardInterrupt:
        raise JobrunnerError("interrupted; every process this run started was stopped") from None
    rows = report.judged(rows, thresholds=not quick)
    meta = {
        "machine": host,
        "processes": PROCESSES,
        "quick": quick,
        "wall_s": round(time.monotonic() - began, 1),
    }
    if as_json:
        print(report.as_json(rows, meta))
    else:
        report.render(rows, meta, console, thresholds=not quick)
    return rows
