"""`jobrunner status`: tiers (depth, oldest wait), workers (concurrency, headroom, admission),
firing alerts and recent failures; or one job's record with its step tree.

The step tree is the pipeline's declared shape (chain / group / chord / map) with, on each step,
the runs recorded as its tasks ended (worker/middleware/job_tracking.py): outcome, worker, wait
and run time. Celery's result backend is not used (steps store no results there).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from config import get_settings
from tasks.builtin import COLLECT_TASK, FAN_OUT_TASK, START_TASK
from tasks.pipeline import ChainNode, ChordNode, GroupNode, MapNode, Node, StepNode
from worker import alerts, broker, heartbeat
from worker.client import Client
from worker.dead_letter import INDEX as DEAD_LETTERS
from worker.dead_letter import DeadLetterStore
from worker.jobs import INDEX
from worker.queues import by_tier, queue_stats

RECENT_JOBS = 10
RECENT_FAILURES = 5
JOB_ID_CHARS = 12  # of a job id in tables; --json has it whole
LONG_VALUE_CHARS = 300  # of a payload or result in the job table
PLUMBING = {START_TASK: "start", COLLECT_TASK: "collect", FAN_OUT_TASK: "map"}


def overview() -> dict[str, Any]:
    client = Client()
    settings = client.settings
    broker.check_reachable(settings)
    redis = broker.client(settings.broker_url)
    results = client.store.redis
    stats = queue_stats(redis, settings)
    tiers = [
        {
            "tier": tier,
            "queues": [s.queue for s in stats if s.tier == tier],
            "depth": depth,
            "oldest_age_s": age,
        }
        for tier, (depth, age) in by_tier(stats).items()
    ]
    workers = [_worker_row(beat) for beat in heartbeat.read_all(results)]
    recent_ids = [i.decode() for i in results.zrevrange(INDEX, 0, RECENT_JOBS - 1)]
    recent = [client.store.get(job_id) for job_id in recent_ids]
    letters = DeadLetterStore(results)
    failed_ids = [i.decode() for i in results.zrevrange(DEAD_LETTERS, 0, RECENT_FAILURES - 1)]
    failures = [_failure_row(e) for i in failed_ids if (e := letters.get(i)) is not None]
    return {
        "tiers": tiers,
        "workers": workers,
        "alerts": alerts.firing(results),
        "recent_failures": failures,
        "recent_jobs": [_job_row(r) for r in recent if r is not None],
    }


def _worker_row(beat: dict[str, str]) -> dict[str, Any]:
    """A worker's heartbeat, typed: what it runs, its headroom, and whether it admits work."""
    numbers = (
        "processes",
        "min_processes",
        "max_processes",
        "running",
        "held",
        "cpus",
        "memory_total_mb",
        "memory_available_mb",
        "memory_reserve_mb",
    )
    row: dict[str, Any] = {key: beat.get(key) for key in ("node", "pool", "state")}
    row.update({key: int(beat[key]) for key in numbers if beat.get(key)})
    row["headroom_mb"] = row.get("memory_available_mb", 0) - row.get("memory_reserve_mb", 0)
    row["load_per_cpu"] = float(beat.get("load_per_cpu") or 0)
    row["cpu_percent"] = float(beat.get("cpu_percent") or 0)
    row["age_s"] = round(time.time() - float(beat.get("updated_at") or 0), 1)
    return row


def _failure_row(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: entry.get(key) for key in ("job_id", "pipeline", "tier", "step", "error", "time")}


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


def _runs(client: Client, job_id: str) -> list[dict[str, Any]]:
    """Every task run of the job (each attempt of a retried step too), oldest first, with its
    state, worker, wait and run time."""
    runs = []
    for entry in sorted(client.store.steps(job_id), key=lambda e: e["started_at"]):
        queued = entry.get("queued_at")
        run = {
            "task_id": entry["task_id"],
            "step": PLUMBING.get(entry.get("task") or "", entry["step"]),
            "state": entry["state"],
            "worker": entry.get("worker"),
            "retries": entry.get("retries", 0),
            "wait_s": round(entry["started_at"] - queued, 3) if queued else None,
            "run_s": round(entry["finished_at"] - entry["started_at"], 3),
        }
        if entry.get("error"):
            run["error"] = entry["error"]
        runs.append(run)
    return runs


class _Assigner:
    """Hands each declared step its runs: in declaration order, earliest task first, each task
    with all its attempts."""

    def __init__(self, runs: list[dict[str, Any]]) -> None:
        self.left = list(runs)

    def take(self, step: str, *, every: bool) -> list[dict[str, Any]]:
        mine = [run for run in self.left if run["step"] == step]
        if not every and mine:  # one task, with every attempt of it (retries keep its id)
            mine = [run for run in mine if run["task_id"] == mine[0]["task_id"]]
        taken = mine
        self.left = [run for run in self.left if run not in taken]
        return taken

    def tree(self, node: Node, *, mapped: bool = False) -> dict[str, Any]:
        """A node of the declared flow with its runs; inside a map, a step takes all its runs."""
        match node:
            case StepNode(step=name):
                return {"kind": "step", "step": name, "runs": self.take(name, every=mapped)}
            case ChainNode(chain=children):
                return {
                    "kind": "chain",
                    "children": [self.tree(c, mapped=mapped) for c in children],
                }
            case GroupNode(group=children):
                members = [self.tree(c, mapped=mapped) for c in children]
                return {"kind": "group", "members": members, "join": self._join(mapped)}
            case ChordNode(chord=children, then=then):
                members = [self.tree(c, mapped=mapped) for c in children]
                join = self._join(mapped)
                return {
                    "kind": "chord",
                    "members": members,
                    "join": join,
                    "then": self.tree(then, mapped=mapped),
                }
            case MapNode(map=child):
                fan_out = self.take("map", every=mapped)
                each = self.tree(child, mapped=True)
                return {"kind": "map", "fan_out": fan_out, "each": each, "join": self._join(mapped)}
        raise AssertionError(f"unhandled node {node!r}")

    def _join(self, mapped: bool) -> list[dict[str, Any]]:
        return self.take("collect", every=mapped)


def step_tree(client: Client, job_id: str, pipeline: str) -> dict[str, Any]:
    """The job's declared flow with each step's runs; runs matching no declared step (a pipeline
    this process does not load, or plumbing) are listed under `other`."""
    assigner = _Assigner(_runs(client, job_id))
    start = assigner.take("start", every=False)
    declared = client.pipelines.get(pipeline)
    flow = assigner.tree(declared.flow) if declared is not None else None
    return {"start": start, "flow": flow, "other": assigner.left}


def job_status(job_id: str) -> dict[str, Any]:
    client = Client()
    record = client.job(job_id).record()
    data = asdict(record)
    data.update(
        wait_s=record.wait_s, run_s=record.run_s, age_s=round(time.time() - record.submitted_at, 3)
    )
    data["steps"] = step_tree(client, job_id, record.pipeline)
    return data


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 0.01:
        return f"{value * 1000:.1f} ms"
    return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


STATE_STYLE = {"SUCCESS": "green", "FAILURE": "red", "RETRY": "yellow", "STARTED": "cyan"}


def render_overview(data: dict[str, Any], console: Console) -> None:
    tiers = Table(title="tiers")
    for column in ("tier", "queues", "depth", "oldest waiting"):
        tiers.add_column(column, justify="left" if column in ("tier", "queues") else "right")
    for row in data["tiers"]:
        age = _seconds(row["oldest_age_s"]) if row["depth"] else "-"
        tiers.add_row(row["tier"], ", ".join(row["queues"]), str(row["depth"]), age)
    workers = Table(title="workers")
    workers.add_column("node", overflow="fold")
    workers.add_column("pool", no_wrap=True)
    workers.add_column("procs", no_wrap=True)
    workers.add_column("busy", no_wrap=True)
    workers.add_column("headroom", justify="right", no_wrap=True)
    workers.add_column("cpu", justify="right", no_wrap=True)
    workers.add_column("state", overflow="fold", min_width=9)
    for row in data["workers"]:
        procs = str(row.get("processes", "-"))
        if row.get("min_processes") and row.get("max_processes"):
            procs += f" ({row['min_processes']}-{row['max_processes']})"
        busy = f"{row.get('running', 0)}" + (f" +{row['held']} held" if row.get("held") else "")
        state = row["state"] or ""
        workers.add_row(
            row["node"],
            row["pool"],
            procs,
            busy,
            f"{row['headroom_mb']} MB",
            f"{row['cpu_percent']:.0f}%",
            f"[green]{state}[/]" if state == "admitting" else f"[yellow]{state}[/]",
        )
    renderables: list[Any] = [tiers, workers]
    if data["alerts"]:
        firing = Table(title="alerts firing", title_style="bold red")
        for column in ("rule", "since", "message"):
            firing.add_column(column)
        for alert in data["alerts"]:
            since = datetime.fromtimestamp(alert["since"]).strftime("%H:%M:%S")
            firing.add_row(alert["rule"], since, alert["message"])
        renderables.append(firing)
    failures = Table(title="recent failures")
    failures.add_column("job", no_wrap=True)
    failures.add_column("pipeline / tier", no_wrap=True)
    failures.add_column("step", no_wrap=True)
    failures.add_column("when", no_wrap=True)
    failures.add_column("error", overflow="fold")
    for row in data["recent_failures"]:
        when = datetime.fromtimestamp(row["time"]).strftime("%H:%M:%S")
        failures.add_row(
            row["job_id"][:JOB_ID_CHARS],
            f"{row['pipeline']} / {row['tier']}",
            row["step"],
            when,
            row["error"],
        )
    renderables.append(failures)
    console.print(*renderables)
    if not data["workers"]:
        console.print(f"no workers answered (pools configured: {', '.join(get_settings().pools)})")
    if not data["alerts"]:
        console.print("no alerts firing")


def _run_label(run: dict[str, Any]) -> str:
    style = STATE_STYLE.get(run["state"], "white")
    text = (
        f"[{style}]{run['state']}[/] on {run['worker'] or '?'}, "
        f"waited {_seconds(run['wait_s'])}, ran {_seconds(run['run_s'])}"
    )
    if run.get("retries"):
        text += f", retry {run['retries']}"
    if run.get("error"):
        text += f" [red]{run['error']}[/]"
    return text


def _add_runs(branch: Tree, name: str, runs: list[dict[str, Any]]) -> None:
    if not runs:
        branch.add(f"[bold]{name}[/] [dim]not run (or still running)[/]")
    elif len(runs) == 1:
        branch.add(f"[bold]{name}[/] {_run_label(runs[0])}")
    else:
        many = branch.add(f"[bold]{name}[/] x{len(runs)}")
        for run in runs:
            many.add(_run_label(run))


def _add_node(branch: Tree, node: dict[str, Any]) -> None:
    kind = node["kind"]
    if kind == "step":
        _add_runs(branch, node["step"], node["runs"])
    elif kind == "chain":
        sub = branch.add("chain")
        for child in node["children"]:
            _add_node(sub, child)
    elif kind in ("group", "chord"):
        sub = branch.add(kind)
        members = sub.add("members (in parallel)")
        for member in node["members"]:
            _add_node(members, member)
        if node["join"]:
            _add_runs(sub, "collect (join)", node["join"])
        if kind == "chord":
            then = sub.add("then (callback)")
            _add_node(then, node["then"])
    elif kind == "map":
        sub = branch.add("map")
        if node["fan_out"]:
            _add_runs(sub, "fan out", node["fan_out"])
        each = sub.add("for each item")
        _add_node(each, node["each"])
        if node["join"]:
            _add_runs(sub, "collect (join)", node["join"])


def render_job(data: dict[str, Any], console: Console) -> None:
    table = Table(title=f"job {data['id']}", show_header=False)
    for key in ("pipeline", "tier", "state", "payload", "wait_s", "run_s", "error", "result"):
        value = data[key]
        shown = "" if value is None else _seconds(value) if key.endswith("_s") else str(value)
        if len(shown) > LONG_VALUE_CHARS:
            shown = shown[:LONG_VALUE_CHARS] + " ... (--json shows all)"
        table.add_row(key, shown)
    for failure in data["failures"]:
        table.add_row("failed step", f"{failure['step']}: {failure['error']}")
    for move in data.get("promotions", []):
        table.add_row("promoted", f"{move['from']} -> {move['to']} after {move['waited_s']:.0f} s")
    console.print(table)
    steps = data["steps"]
    tree = Tree(f"steps of {data['pipeline']} ({data['state']})")
    if steps["start"]:
        _add_runs(tree, "start", steps["start"])
    if steps["flow"] is not None:
        _add_node(tree, steps["flow"])
    for run in steps["other"]:
        _add_runs(tree, run["step"], [run])
    console.print(tree)
