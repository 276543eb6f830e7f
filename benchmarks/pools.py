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
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from rich.console import Console
from rich.table import Table

from jobrunner.benchmarks.harness import (
    adopt,
    configure_environment,
    fleet,
    jobrunner_app,
    jobrunner_worker,
    kill_leftovers,
    leftovers,
    machine,
    percentile,
    progress,
    wait_busy,
)
from jobrunner.config import Settings, get_settings
from jobrunner.worker.broker.embedded import EmbeddedRedis

if TYPE_CHECKING:  # imported at run time only, once the environment names our Redis
    from jobrunner.worker.client import Client, Job

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


def flush_queues(broker: redis.Redis, settings: Settings) -> None:
    """Empty every tier queue, so no earlier phase's work runs in the next."""
    broker.delete(*settings.all_queues())


def high_waits(
    client: Client, broker: redis.Redis, settings: Settings, plan: Plan, general: str
) -> list[float]:
    """Milliseconds each high probe waited to start while a low backlog keeps `general` busy."""
    app = jobrunner_app()

    flush_queues(broker, settings)
    for _ in range(plan.backlog):
        client.submit("bench_pause", {"ms": BACKLOG_PAUSE_MS}, tier="low")
    wait_busy(app, general, GENERAL_CONCURRENCY)
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
        with fleet(log_dir, [jobrunner_worker(*worker) for worker in workers]):
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
            node = f"general-{mode}{round_no}@bench"
            with fleet(log_dir, [jobrunner_worker("general", node, env)]):
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


def run(plan: Plan) -> tuple[dict[str, list[float]], Rates]:
    with tempfile.TemporaryDirectory(prefix="jobrunner-bench-") as tmp:
        data_dir, log_dir = Path(tmp) / "data", Path(tmp) / "logs"
        log_dir.mkdir()
        server = EmbeddedRedis(data_dir)
        try:
            configure_environment(server.start(), data_dir)
            assert server.process is not None
            adopt(server.process.pid)
            progress(f"redis on 127.0.0.1:{server.port}")
            from jobrunner.worker.client import Client

            settings = get_settings()
            client = Client(settings)
            with redis.Redis.from_url(settings.broker_url) as broker:
                waits = express_scenario(client, broker, settings, plan, log_dir)
                rates = admission_scenario(client, broker, settings, plan, log_dir)
        finally:
            server.stop()
            kill_leftovers()
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
