"""`jobrunner status`: the overview or one job's step tree, rendered (the data comes from
worker/monitoring/status.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from jobrunner.config import get_settings
from jobrunner.worker.cli.base import cli, console, fail, print_json

JOB_ID_CHARS = 12  # of a job id in tables; --json has it whole

LONG_VALUE_CHARS = 300  # of a payload or result in the job table


@cli.command()
def status(
    job_id: Annotated[str | None, typer.Argument(help="a job id; omit for the overview")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Tier depths and oldest waits, workers and their headroom, alerts and recent failures; or
    one job's state and step tree (each step's state, worker, wait and run time)."""
    from jobrunner.worker.monitoring.status import job_status, overview

    if job_id:
        from jobrunner.worker.validation import is_job_id

        if not is_job_id(job_id):
            fail(f"{job_id!r} is not a job id (32 hex digits)")
        data = job_status(job_id)
        print_json(data) if as_json else render_job(data, console)
    else:
        data = overview()
        print_json(data) if as_json else render_overview(data, console)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 0.01:
        return f"{value * 1000:.1f} ms"
    return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


STATE_STYLE = {
    "SUCCESS": "green",
    "FAILURE": "red",
    "CANCELLED": "magenta",
    "RETRY": "yellow",
    "STARTED": "cyan",
}


def render_overview(data: dict[str, Any], console: Console) -> None:
    tiers = Table(title="tiers")
    for column in ("tier", "queues", "depth", "oldest waiting"):
        tiers.add_column(column, justify="left" if column in ("tier", "queues") else "right")
    for row in data["tiers"]:
        age = _seconds(row["oldest_age_s"]) if row["depth"] else "-"
        name = f"{row['tier']} [yellow](paused)[/]" if row.get("paused") else row["tier"]
        tiers.add_row(name, ", ".join(row["queues"]), str(row["depth"]), age)
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
    console.print(f"payloads: {data['payloads']}")
    for pipeline, pause in data.get("paused_pipelines", {}).items():
        console.print(f"pipeline {pipeline} paused by {pause['by']}: {pause['parked']} parked")


def _run_label(run: dict[str, Any]) -> str:
    style = STATE_STYLE.get(run["state"], "white")
    text = (
        f"[{style}]{run['state']}[/]{' [cyan](cached)[/]' if run.get('cached') else ''} "
        f"on {run['worker'] or '?'}, "
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
        # A record written before payloads were checked may hold a lone surrogate.
        shown = shown.encode("utf-8", "backslashreplace").decode("utf-8")
        if len(shown) > LONG_VALUE_CHARS:
            shown = shown[:LONG_VALUE_CHARS] + " ... (--json shows all)"
        table.add_row(key, shown)
    for failure in data["failures"]:
        table.add_row("failed step", f"{failure['step']}: {failure['error']}")
    for move in data.get("promotions", []):
        table.add_row("promoted", f"{move['from']} -> {move['to']} after {move['waited_s']:.0f} s")
    if data.get("retry_of") or data.get("retried_as"):  # a chain of attempts
        table.add_row("attempt", str(data["attempt"]))
        for key, label in (("retry_of", "retries job"), ("retried_as", "retried as job")):
            if data.get(key):
                table.add_row(label, data[key])
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
