"""`jobrunner status`: tier depths, workers and recent jobs, or one job's record."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.table import Table

from config import TIERS, get_settings
from worker import broker, heartbeat
from worker.client import Client
from worker.jobs import INDEX

RECENT_JOBS = 10


def overview() -> dict[str, Any]:
    client = Client()
    settings = client.settings
    broker.check_reachable(settings)
    redis = broker.client(settings.broker_url)
    tiers = [
        {"tier": t, "queue": settings.queue(t), "depth": redis.llen(settings.queue(t))}
        for t in TIERS
    ]
    workers = [_worker_row(beat) for beat in heartbeat.read_all(client.store.redis)]
    recent_ids = [i.decode() for i in client.store.redis.zrevrange(INDEX, 0, RECENT_JOBS - 1)]
    recent = [client.store.get(job_id) for job_id in recent_ids]
    jobs = [_job_row(r) for r in recent if r is not None]
    return {"tiers": tiers, "workers": workers, "recent_jobs": jobs}


def _worker_row(beat: dict[str, str]) -> dict[str, Any]:
    """A worker's heartbeat, typed: what it runs, its headroom, and whether it admits work."""
    numbers = (
        "processes",
        "running",
        "held",
        "cpus",
        "memory_total_mb",
        "memory_available_mb",
        "memory_reserve_mb",
    )
    row: dict[str, Any] = {key: beat.get(key) for key in ("node", "pool", "state")}
    row.update({key: int(beat[key]) for key in numbers if beat.get(key)})
    row["load_per_cpu"] = float(beat.get("load_per_cpu") or 0)
    row["age_s"] = round(time.time() - float(beat.get("updated_at") or 0), 1)
    return row


def _job_row(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "pipeline": record.pipeline,
        "tier": record.tier,
        "state": record.state,
        "wait_s": record.wait_s,
        "run_s": record.run_s,
        "error": record.error,
    }


def job_status(job_id: str) -> dict[str, Any]:
    record = Client().job(job_id).record()
    data = asdict(record)
    data.update(
        wait_s=record.wait_s, run_s=record.run_s, age_s=round(time.time() - record.submitted_at, 3)
    )
    return data


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


def render_overview(data: dict[str, Any], console: Console) -> None:
    tiers = Table(title="tiers")
    for column in ("tier", "queue", "depth"):
        tiers.add_column(column)
    for row in data["tiers"]:
        tiers.add_row(row["tier"], row["queue"], str(row["depth"]))
    workers = Table(title="workers")
    for column in ("node", "pool", "procs", "running", "held", "free mem", "load", "state"):
        workers.add_column(column)
    for row in data["workers"]:
        free = row.get("memory_available_mb", 0) - row.get("memory_reserve_mb", 0)
        workers.add_row(
            row["node"],
            row["pool"],
            str(row.get("processes")),
            str(row.get("running")),
            str(row.get("held")),
            f"{free} MB",
            f"{row['load_per_cpu']:.2f}",
            row["state"],
        )
    jobs = Table(title="recent jobs")
    for column in ("id", "pipeline", "tier", "state", "wait", "run", "error"):
        jobs.add_column(column)
    for row in data["recent_jobs"]:
        jobs.add_row(
            row["id"],
            row["pipeline"],
            row["tier"],
            row["state"],
            _seconds(row["wait_s"]),
            _seconds(row["run_s"]),
            row["error"] or "",
        )
    console.print(tiers, workers, jobs)
    if not data["workers"]:
        console.print(f"no workers answered (pools configured: {', '.join(get_settings().pools)})")


def render_job(data: dict[str, Any], console: Console) -> None:
    table = Table(title=f"job {data['id']}", show_header=False)
    for key in ("pipeline", "tier", "state", "payload", "wait_s", "run_s", "error", "result"):
        value = data[key]
        shown = _seconds(value) if key.endswith("_s") else value
        table.add_row(key, "" if shown is None else str(shown))
    for failure in data["failures"]:
        table.add_row("failed step", f"{failure['step']}: {failure['error']}")
    for move in data.get("promotions", []):
        table.add_row("promoted", f"{move['from']} -> {move['to']} after {move['waited_s']:.0f} s")
    console.print(table)
