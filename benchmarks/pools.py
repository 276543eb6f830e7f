"""Benchmark jobrunner's pools on a private Redis and real workers, against a baseline each time.

    python -m benchmarks.pools [--quick] [--json]

The machine is shared and noisy, so every figure is a ratio against a baseline measured in the
same run, on the same Redis, one fleet at a time:

- express: how long a high job waits to start while a low backlog saturates the general pool,
  with the express pool (fleet A) and without it (fleet B, general only). Ratio B/A: how many
  times shorter the express pool makes the wait.
- admission: throughput of no-op jobs with admission control on and off, alternating on/off
  with fresh workers each round, so drift in the machine's load hits both modes alike. The
  jobs are queued before the workers start and timed from the first start to the last finish,
  so the workers, not this client's submit pace, set the figure. Cost = 1 - on/off.

Everything runs on 127.0.0.1 in a temp directory, and every process started here is stopped
(SIGTERM, then SIGKILL) whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import redis
from rich.console import Console
from rich.table import Table

from config import Settings, get_settings
from worker.embedded_redis import EmbeddedRedis

if TYPE_CHECKING:  # imported at run time only, once the environment names our Redis
    from worker.client import Client, Job

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
JOB_TIMEOUT_S = 120.0
BACKLOG_PAUSE_MS = 50
PROBE_EVERY_S = 0.1
GENERAL_CONCURRENCY = 2
MODES = ("on", "off")


@dataclass(frozen=True)
class Plan:
    """How much work each scenario does; --quick trades precision for time."""

    backlog: int  # low jobs saturating the general pool during the probes
    probes: int  # high jobs whose wait is measured
    noop_jobs: int  # jobs per admission round
    rounds: int  # admission rounds per mode


FULL = Plan(backlog=400, probes=40, noop_jobs=2000, rounds=4)
QUICK = Plan(backlog=150, probes=15, noop_jobs=500, rounds=1)

_began = time.monotonic()
_sessions: list[int] = []  # every process started here leads its own session


def progress(message: str) -> None:
    """One line per phase on stderr, so stdout stays the report (or the JSON)."""
    print(f"[{time.monotonic() - _began:6.1f} s] {message}", file=sys.stderr, flush=True)


def session_members(sid: int) -> list[psutil.Process]:
    """Live processes of the session `sid`: a worker and its prefork children, or Redis."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getsid(proc.pid) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, PermissionError):
            continue
    return found


def leftovers() -> list[psutil.Process]:
    return [proc for sid in _sessions for proc in session_members(sid)]


class Fleet:
    """Worker processes started exactly as the tests start them (`python -m worker worker`)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, pool: str, node: str, env: dict[str, str]) -> None:
        with open(self.log_dir / f"{node}.log", "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "worker", "worker", "--pool", pool, "--node-name", node],
                env={**os.environ, **env},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its session holds its children too, for the kill
            )
        self.processes[node] = process
        _sessions.append(process.pid)

    def wait_ready(self) -> None:
        """Until every worker answers a ping; started together, their start-ups overlap."""
        from worker.app import app

        deadline = time.monotonic() + START_TIMEOUT_S
        for node, process in self.processes.items():
            while not app.control.ping(destination=[node], timeout=0.5):
                if process.poll() is not None:
                    tail = (self.log_dir / f"{node}.log").read_text()[-2000:]
                    raise RuntimeError(f"worker {node} exited with {process.returncode}:\n{tail}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker {node} did not answer a ping in time")

    def stop(self) -> None:
        """Warm shutdown (SIGTERM: running steps finish), then SIGKILL whatever outlives it."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for child in session_members(process.pid):  # children a killed parent left behind
                child.kill()
        self.processes.clear()


@contextmanager
def fleet(log_dir: Path, workers: list[tuple[str, str, dict[str, str]]]) -> Iterator[None]:
    """Run (pool, node, env) workers for the block: all answer pings first, all stop after."""
    started = Fleet(log_dir)
    try:
        for pool, node, env in workers:
            started.start(pool, node, env)
        started.wait_ready()
        yield
    finally:
        started.stop()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), interpolated between samples."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def flush_queues(broker: redis.Redis, settings: Settings) -> None:
    """Empty every tier queue, so no earlier phase's work runs in the next."""
    broker.delete(*settings.all_queues())


def wait_busy(node: str, count: int, timeout_s: float = 30.0) -> None:
    """Until `node` runs `count` tasks at once, i.e. all its processes are busy."""
    from worker.app import app

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        active = app.control.inspect(destination=[node], timeout=0.5, limit=1).active() or {}
        if len(active.get(node, [])) >= count:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{node} never had {count} tasks running")


def high_waits(
    client: Client, broker: redis.Redis, settings: Settings, plan: Plan, general: str
) -> list[float]:
    """Milliseconds each high probe waited to start while a low backlog keeps `general` busy."""
    flush_queues(broker, settings)
    for _ in range(plan.backlog):
        client.submit("bench_pause", {"ms": BACKLOG_PAUSE_MS}, tier="low")
    wait_busy(general, GENERAL_CONCURRENCY)
    waits = []
    for _ in range(plan.probes):
        sent = time.monotonic()
        record = client.submit("bench_pause", {"ms": 0}, tier="high").wait(JOB_TIMEOUT_S)
        assert record.wait_s is not None
        waits.append(record.wait_s * 1000)
        time.sleep(max(0.0, sent + PROBE_EVERY_S - time.monotonic()))
    if broker.llen(settings.queue("low")) == 0:
        progress("warning: the low backlog ran out before the last probe; raise Plan.backlog")
    broker.delete(settings.queue("low"))  # the rest of the backlog is of no further use
    return waits


def express_scenario(
    client: Client, broker: redis.Redis, settings: Settings, plan: Plan, log_dir: Path
) -> dict[str, list[float]]:
    """High-job waits with the express pool (fleet A) and with the general pool alone (B)."""
    general = {"JOBRUNNER_POOLS__GENERAL__CONCURRENCY": str(GENERAL_CONCURRENCY)}
    express = {"JOBRUNNER_POOLS__EXPRESS__CONCURRENCY": "1"}
    fleets = {
        "A": [("express", "express-a@bench", express), ("general", "general-a@bench", general)],
        "B": [("general", "general-b@bench", general)],
    }
    waits = {}
    for name, workers in fleets.items():
        progress(f"express: fleet {name} starting ({', '.join(node for _, node, _ in workers)})")
        general_node = next(node for pool, node, _ in workers if pool == "general")
        with fleet(log_dir, workers):
            progress(f"express: fleet {name}: {plan.backlog} low jobs, then {plan.probes} probes")
            waits[name] = high_waits(client, broker, settings, plan, general_node)
        flush_queues(broker, settings)
    return waits


def drain_rate(jobs: list[Job]) -> float:
    """Jobs per second from the first job starting to the last one finishing."""
    records = [job.wait(JOB_TIMEOUT_S) for job in jobs]
    failed = [r.id for r in records if r.state != "SUCCESS"]
    if failed:
        raise RuntimeError(f"{len(failed)} no-op jobs failed, e.g. {failed[0]}")
    first = min(r.started_at or 0.0 for r in records)
    last = max(r.finished_at or 0.0 for r in records)
    return len(records) / (last - first)


@dataclass
class Rates:
    """Jobs per second, per admission mode, one figure per round."""

    throughput: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})


def admission_scenario(
    client: Client, broker: redis.Redis, settings: Settings, plan: Plan, log_dir: Path
) -> Rates:
    """No-op throughput with admission on and off alternately, fresh workers each round."""
    rates = Rates()
    for round_no in range(1, plan.rounds + 1):
        # Alternate which mode goes first, so drift within a round favours neither.
        for mode in MODES if round_no % 2 else tuple(reversed(MODES)):
            env = {
                "JOBRUNNER_POOLS__GENERAL__CONCURRENCY": str(GENERAL_CONCURRENCY),
                "JOBRUNNER_ADMISSION__ENABLED": "true" if mode == "on" else "false",
            }
            flush_queues(broker, settings)
            progress(f"admission {mode}, round {round_no}: queueing {plan.noop_jobs} no-op jobs")
            jobs = [client.submit("bench_noop", tier="medium") for _ in range(plan.noop_jobs)]
            with fleet(log_dir, [("general", f"general-{mode}{round_no}@bench", env)]):
                throughput = drain_rate(jobs)
            rates.throughput[mode].append(throughput)
            progress(f"admission {mode}, round {round_no}: {throughput:.0f} jobs/s")
    return rates


@dataclass(frozen=True)
class Row:
    """One figure, rounded to what is worth showing; numbers, so --json stays numeric."""

    scenario: str
    figure: str
    jobrunner: float | None  # with the feature
    baseline: float | None  # without it
    ratio: float


def rows(waits: dict[str, list[float]], rates: Rates) -> list[Row]:
    """The report: express ratios are baseline/jobrunner, admission ratios on/off."""
    table = []
    pickers: dict[str, Callable[[list[float]], float]] = {
        "median": statistics.median,
        "p95": lambda values: percentile(values, 95),
        "max": max,
    }
    for label, pick in pickers.items():
        a, b = pick(waits["A"]), pick(waits["B"])
        figure = f"high wait {label} (ms)"
        table.append(Row("express", figure, round(a, 1), round(b, 1), round(b / a, 2)))

    def throughput_row(figure: str, on: float, off: float) -> Row:
        return Row("admission", figure, round(on), round(off), round(on / off, 3))

    rounds = zip(rates.throughput["on"], rates.throughput["off"], strict=True)
    table += [
        throughput_row(f"round {i} (jobs/s)", on, off) for i, (on, off) in enumerate(rounds, 1)
    ]
    on, off = (statistics.median(rates.throughput[m]) for m in MODES)
    table.append(throughput_row("median (jobs/s)", on, off))
    table.append(
        Row("admission", "cost = 1 - on/off (%)", None, None, round(100 - 100 * on / off, 1))
    )
    return table


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": platform.python_version(),
        "load_1m_at_start": round(os.getloadavg()[0], 2),
    }


# Display formats (value, ratio) by the unit that ends a figure's name.
DISPLAY = {"(ms)": ("{:.1f}", "{:.2f}"), "(jobs/s)": ("{:.0f}", "{:.3f}"), "(%)": ("", "{:.1f}")}


def report(table: list[Row], host: dict[str, Any], plan: Plan, as_json: bool) -> None:
    if as_json:
        document = {"machine": host, "plan": asdict(plan), "rows": [asdict(r) for r in table]}
        print(json.dumps(document, indent=2))
        return
    console = Console()
    console.print(
        f"machine: {host['cores']} cores, {host['memory_gb']} GB, Python {host['python']}, "
        f"1-min load {host['load_1m_at_start']} at start"
    )
    out = Table(title="jobrunner pools benchmark")
    out.add_column("scenario")
    out.add_column("figure")
    for column in ("jobrunner", "baseline", "ratio"):
        out.add_column(column, justify="right")
    for row in table:
        value, ratio = DISPLAY[row.figure.rsplit(" ", 1)[-1]]
        shown = ["" if v is None else value.format(v) for v in (row.jobrunner, row.baseline)]
        out.add_row(row.scenario, row.figure, *shown, ratio.format(row.ratio))
    console.print(out)
    console.print("express:   jobrunner = express + general pools, baseline = general pool only;")
    console.print("           ratio = baseline / jobrunner (how many times shorter the wait)")
    console.print("admission: jobrunner = admission on, baseline = off; ratio = on / off;")
    console.print("           jobs queued first, timed from the first start to the last finish")


def configure_environment(redis_url: str, data_dir: Path) -> None:
    """Workers inherit this; worker.app reads it at import, so set it before importing that."""
    os.environ.update(
        {
            "JOBRUNNER_BROKER_URL": redis_url,
            "JOBRUNNER_DATA_DIR": str(data_dir),
            "JOBRUNNER_IMPORTS": "benchmarks.steps",
            "PYTHONPATH": str(ROOT),
        }
    )
    get_settings.cache_clear()


def run(plan: Plan) -> tuple[dict[str, list[float]], Rates]:
    with tempfile.TemporaryDirectory(prefix="jobrunner-bench-") as tmp:
        data_dir, log_dir = Path(tmp) / "data", Path(tmp) / "logs"
        log_dir.mkdir()
        server = EmbeddedRedis(data_dir)
        try:
            configure_environment(server.start(), data_dir)
            assert server.process is not None
            _sessions.append(server.process.pid)
            progress(f"redis on 127.0.0.1:{server.port}")
            from worker.client import Client

            settings = get_settings()
            client = Client(settings)
            with redis.Redis.from_url(settings.broker_url) as broker:
                waits = express_scenario(client, broker, settings, plan, log_dir)
                rates = admission_scenario(client, broker, settings, plan, log_dir)
        finally:
            server.stop()
            for proc in leftovers():
                proc.kill()
    left = leftovers()
    progress(f"processes left running: {', '.join(str(p.pid) for p in left) or 'none'}")
    return waits, rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="less work: done in about a minute")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    host = machine()
    waits, rates = run(plan)
    report(rows(waits, rates), host, plan, args.json)


if __name__ == "__main__":
    main()
