"""`jobrunner status`: tier depths, workers and recent jobs, or one job's record."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.table import Table

from config import TIERS, get_settings
from worker import broker
from worker.app import app
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
    stats = app.control.inspect(timeout=1.0).stats() or {}
    active = app.control.inspect(timeout=1.0).active() or {}
    workers = [
        {
            "node": node,
            "pool": node.split("@", 1)[0],
            "concurrency": info.get("pool", {}).get("max-concurrency"),
            "running": len(active.get(node, [])),
            "pid": info.get("pid"),
        }
        for node, info in sorted(stats.items())
    ]
    recent_ids = [i.decode() for i in client.store.redis.zrevrange(INDEX, 0, RECENT_JOBS - 1)]
    recent = [client.store.get(job_id) for job_id in recent_ids]
    jobs = [_job_row(r) for r in recent if r is not None]
    return {"tiers": tiers, "workers": workers, "recent_jobs": jobs}


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
    for column in ("node", "pool", "concurrency", "running"):
        workers.add_column(column)
    for row in data["workers"]:
        workers.add_row(row["node"], row["pool"], str(row["concurrency"]), str(row["running"]))
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
