"""`jobrunner demo`: the sample feature pipeline at every tier on a local stack, then a summary.

Low jobs are submitted first and high jobs last, so the summary shows priority at work: high jobs
wait least although they queued last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from statistics import median

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from jobrunner.config import TIERS, JobrunnerError, Settings
from jobrunner.worker.client import Client
from jobrunner.worker.monitoring import flower
from jobrunner.worker.ops.stack import LocalStack
from jobrunner.worker.store.jobs import SUCCESS, JobRecord

PIPELINE = "features"


@dataclass(frozen=True)
class TierSummary:
    tier: str
    jobs: int
    succeeded: int
    median_wait_s: float
    median_run_s: float
    median_total_s: float


def summarize(records: list[JobRecord]) -> list[TierSummary]:
    rows = []
    for tier in TIERS:
        mine = [r for r in records if r.tier == tier]
        if not mine:
            continue
        rows.append(
            TierSummary(
                tier=tier,
                jobs=len(mine),
                succeeded=sum(r.state == SUCCESS for r in mine),
                median_wait_s=median(r.wait_s or 0.0 for r in mine),
                median_run_s=median(r.run_s or 0.0 for r in mine),
                median_total_s=median(r.total_s or 0.0 for r in mine),
            )
        )
    return rows


def _table(rows: list[TierSummary]) -> Table:
    table = Table(title=f"{PIPELINE} pipeline, per tier")
    columns = ("tier", "jobs", "succeeded", "median wait", "median run", "median total")
    for column in columns:
        table.add_column(column, justify="left" if column == "tier" else "right")
    for row in rows:
        table.add_row(
            row.tier,
            str(row.jobs),
            str(row.succeeded),
            f"{row.median_wait_s * 1000:.0f} ms",
            f"{row.median_run_s * 1000:.0f} ms",
            f"{row.median_total_s * 1000:.0f} ms",
        )
    table.caption = "wait: submitted to first step; run: first step to done; total: both"
    return table


def run_demo(settings: Settings, jobs_per_tier: int, keep: bool, console: Console) -> None:
    log_dir = settings.data_dir / "logs"
    with LocalStack(settings, log_dir=log_dir) as stack:
        console.print(f"starting broker, pools ({', '.join(settings.pools)}) and Flower ...")
        stack.wait_for_workers()
        client = Client(stack.settings)
        jobs = [
            client.submit(PIPELINE, {"output_name": f"demo-{tier}-{i}"}, tier=tier)
            for tier in reversed(TIERS)
            for i in range(jobs_per_tier)
        ]
        records: dict[str, JobRecord] = {}
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task("running jobs", total=len(jobs))
            deadline = time.monotonic() + 300
            while len(records) < len(jobs) and time.monotonic() < deadline:
                for job in jobs:
                    if job.id not in records:
                        record = job.record()
                        if record.finished:
                            records[job.id] = record
                progress.update(bar, completed=len(records))
                time.sleep(0.1)
        if len(records) < len(jobs):
            raise JobrunnerError(f"{len(jobs) - len(records)} demo jobs did not finish in 300 s")
        finished = list(records.values())
        console.print(_table(summarize(finished)))
        failed = [r for r in finished if r.state != SUCCESS]
        for record in failed:
            console.print(f"[red]job {record.id} failed:[/red] {record.error}")
        sample = next((r for r in finished if r.state == SUCCESS), None)
        if sample:
            stored = sample.result
            console.print(
                f"features: {stored['rows']} rows per job from {stored['partitions']} partitions, "
                f"{stored['quarantined']} bad rows quarantined, e.g.\n  {stored['path']}\n"
                f"  {stored['quarantine_path']}\n  lineage: jobrunner lineage {sample.id}"
            )
        creds = stack.credentials
        assert creds is not None
        console.print(
            f"Flower: {flower.url(settings)} (user {creds.user}, password {creds.source})"
        )
        if not keep:
            console.print("(Flower stops with the demo: `jobrunner demo --keep` or `jobrunner up`)")
        else:
            console.print("stack is running; Ctrl-C stops it")
            assert stack.supervisor is not None
            stack.supervisor.run()
        if failed:
            raise JobrunnerError(f"{len(failed)} of {len(jobs)} demo jobs failed")
