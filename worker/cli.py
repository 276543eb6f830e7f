"""The `jobrunner` command. Errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from config import JobrunnerError, get_settings

cli = typer.Typer(
    help="Priority job runner for data and ML pipelines on Celery and Redis.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
TIER_HELP = "high, medium or low (default: the configured default_tier)"


def _fail(message: str) -> NoReturn:
    print(f"jobrunner: error: {message}", file=sys.stderr)
    raise typer.Exit(1)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _exec_celery(argv: list[str], env: dict[str, str]) -> NoReturn:
    """Replace this process by Celery, so signals (systemd, compose, Ctrl-C) reach it directly."""
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "celery", *argv], {**os.environ, **env})


@cli.command()
def up(
    no_flower: Annotated[bool, typer.Option(help="do not start Flower")] = False,
    no_metrics: Annotated[bool, typer.Option(help="do not start the metrics exporter")] = False,
) -> None:
    """Run the local stack in the foreground: broker, a worker per pool, Flower and the metrics
    exporter. Ctrl-C stops it warmly (running steps finish)."""
    from worker import flower, metrics
    from worker.stack import LocalStack

    settings = get_settings()
    with LocalStack(settings, with_flower=not no_flower, with_metrics=not no_metrics) as stack:
        nodes = stack.wait_for_workers()
        console.print(f"broker: {_redacted(stack.settings.broker_url)}")
        console.print(f"workers: {', '.join(nodes)}")
        if stack.credentials:
            creds = stack.credentials
            console.print(f"Flower: {flower.url(settings)} (user {creds.user}, {creds.source})")
        if stack.metrics_credentials:
            creds = stack.metrics_credentials
            console.print(f"metrics: {metrics.url(settings)} (user {creds.user}, {creds.source})")
        console.print("running; Ctrl-C stops")
        assert stack.supervisor is not None
        stack.supervisor.run()


def _redacted(url: str) -> str:
    from worker.broker import redact

    return redact(url)


@cli.command()
def demo(
    jobs: Annotated[int, typer.Option(min=1, max=200, help="jobs per tier")] = 8,
    keep: Annotated[bool, typer.Option(help="keep the stack running afterwards")] = False,
) -> None:
    """Run the sample feature pipeline at every tier on a local stack and summarize it."""
    from worker.demo import run_demo

    run_demo(get_settings(), jobs, keep, console)


def _read_payload(payload: str | None, payload_file: Path | None) -> Any:
    if payload is not None and payload_file is not None:
        _fail("give --payload or --payload-file, not both")
    if payload_file is not None:
        if not payload_file.is_file():
            _fail(f"payload file {payload_file} does not exist")
        payload = payload_file.read_text(encoding="utf-8")
        source = f"payload file {payload_file}"
    else:
        source = "--payload"
    if payload is None:
        return {}
    try:
        return json.loads(payload)
    except json.JSONDecodeError as error:
        _fail(f"{source} is not valid JSON: {error}")


@cli.command()
def submit(
    pipeline: Annotated[str, typer.Argument(help="pipeline name (see `jobrunner pipelines`)")],
    priority: Annotated[str | None, typer.Option("--priority", "-p", help=TIER_HELP)] = None,
    payload: Annotated[str | None, typer.Option(help="payload as a JSON object")] = None,
    payload_file: Annotated[Path | None, typer.Option(help="file holding the JSON payload")] = None,
    wait: Annotated[bool, typer.Option(help="wait for the job and print its result")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait with --wait")] = 300.0,
    idempotency_key: Annotated[
        str | None, typer.Option(help="submitting the same key again returns the first job")
    ] = None,
    deadline: Annotated[
        float | None, typer.Option(help="seconds before an unfinished job fails (default: config)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Submit a job; prints its id, or with --wait its result."""
    from worker.client import Client

    data = _read_payload(payload, payload_file)
    job = Client().submit(
        pipeline, data, tier=priority, idempotency_key=idempotency_key, deadline_s=deadline
    )
    if not wait:
        _print_json({"job_id": job.id}) if as_json else print(job.id)
        return
    with console.status(f"job {job.id} running ..."):
        record = job.wait(timeout)
    if as_json:
        _print_json(
            {
                "job_id": job.id,
                "state": record.state,
                "result": record.result,
                "error": record.error,
            }
        )
    elif record.state == "SUCCESS":
        print(json.dumps(record.result, indent=2))
    if record.state != "SUCCESS":
        _fail(f"job {job.id} failed: {record.error}")


@cli.command()
def status(
    job_id: Annotated[str | None, typer.Argument(help="a job id; omit for the overview")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Tier depths and oldest waits, workers and their headroom, alerts and recent failures; or
    one job's state and step tree (each step's state, worker, wait and run time)."""
    from worker.status import job_status, overview, render_job, render_overview

    if job_id:
        data = job_status(job_id)
        _print_json(data) if as_json else render_job(data, console)
    else:
        data = overview()
        _print_json(data) if as_json else render_overview(data, console)


@cli.command()
def lineage(
    job_id: Annotated[str | None, typer.Argument(help="a job id")] = None,
    output: Annotated[
        Path | None, typer.Option(help="a file a job wrote: which jobs, from which inputs")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """A job's lineage: inputs and their hashes, each step's code version and rows in, out and
    quarantined, the output and its hash. With --output PATH: the jobs that wrote that file."""
    from worker.lineage import find_by_output, lineage_of, render_lineage, render_output

    if output is not None and job_id is None:
        found = find_by_output(output)
        _print_json(found) if as_json else render_output(found, console)
    elif job_id is not None and output is None:
        record = lineage_of(job_id)
        _print_json(record) if as_json else render_lineage(record, console)
    else:
        _fail("give a JOB_ID or --output PATH")


@cli.command()
def pipelines(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """The registered pipelines, their steps and payload schema."""
    from tasks.registry import load_pipelines

    found = load_pipelines(get_settings())
    data = {
        name: {
            "description": p.description,
            "version": p.version,
            "steps": p.steps(),
            "flow": p.flow.model_dump(mode="json"),
            "payload_schema": p.payload_model().model_json_schema(),
        }
        for name, p in found.items()
    }
    if as_json:
        _print_json(data)
        return
    table = Table(title="pipelines")
    for column in ("name", "steps", "payload fields", "description"):
        table.add_column(column)
    for name, info in data.items():
        fields = [
            f"{field}: {spec.get('type', 'any')}"
            + (f" = {spec['default']!r}" if "default" in spec else " (required)")
            for field, spec in info["payload_schema"].get("properties", {}).items()
        ]
        table.add_row(name, " -> ".join(info["steps"]), "\n".join(fields), info["description"])
    console.print(table)


@cli.command()
def worker(
    pool: Annotated[str, typer.Option(help="pool name from the configuration")],
    node_name: Annotated[
        str | None, typer.Option(help="Celery node name (default POOL@host)")
    ] = None,
) -> None:
    """Run one pool's Celery worker (what systemd, Ansible and compose run)."""
    from tasks.registry import load_pipelines
    from worker import broker
    from worker.pools import worker_argv

    settings = broker.resolve(get_settings())
    argv = worker_argv(settings, pool, node_name)
    load_pipelines(settings)  # steps, pipelines and resource classes are sound before we start
    broker.check_reachable(settings)
    _exec_celery(argv, {"JOBRUNNER_BROKER_URL": settings.broker_url})


@cli.command("flower")
def flower_command(
    insecure_no_auth: Annotated[
        bool, typer.Option("--insecure-no-auth", help="run without authentication (local only)")
    ] = False,
) -> None:
    """Run Flower on the configured address and port, behind basic auth."""
    from worker import broker, flower

    settings = broker.resolve(get_settings())
    credentials = flower.configured_credentials(settings)
    if credentials is None and not insecure_no_auth:
        _fail(
            "Flower needs credentials: set JOBRUNNER_FLOWER__BASIC_AUTH=user:password "
            "(or pass --insecure-no-auth for local use)"
        )
    broker.check_reachable(settings)
    env = {"JOBRUNNER_BROKER_URL": settings.broker_url, **flower.flower_env(credentials)}
    _exec_celery(flower.flower_argv(settings), env)


@cli.command("metrics")
def metrics_command() -> None:
    """Serve Prometheus metrics (queues, jobs, workers, data flow, alerts) behind basic auth, and
    evaluate the alert rules. Run one per deployment."""
    from worker import broker, metrics

    settings = broker.resolve(get_settings())
    broker.check_reachable(settings)
    credentials = metrics.credentials(settings)
    try:
        exporter = metrics.Exporter(settings, credentials)
    except OSError as error:
        _fail(f"cannot serve metrics on {metrics.url(settings)}: {error.strerror or error}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    console.print(
        f"metrics: {metrics.url(settings)} (user {credentials.user}, {credentials.source})"
    )
    exporter.run()


@cli.command()
def deploy(
    inventory: Annotated[Path, typer.Option("-i", "--inventory", help="Ansible inventory")],
    limit: Annotated[str | None, typer.Option(help="only these hosts or groups")] = None,
    check: Annotated[bool, typer.Option(help="dry run: report what would change")] = False,
    tags: Annotated[str | None, typer.Option(help="only tasks with these tags")] = None,
) -> None:
    """Deploy or roll the fleet with the playbooks in playbooks/ (through ansible-runner)."""
    from worker.deploy import deploy as run_deploy

    try:
        run_deploy(inventory, limit=limit, check=check, tags=tags, console=console)
    except JobrunnerError as exc:
        _fail(str(exc))


@cli.command()
def bench(
    quick: Annotated[bool, typer.Option(help="a smoke run, under 2 minutes")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    only: Annotated[str | None, typer.Option(help="run only this scenario")] = None,
    peers: Annotated[bool, typer.Option(help="also run Huey (the bench extra)")] = False,
) -> None:
    """Benchmarks against plain Celery on the same Redis and processes: a table of ratios."""
    from benchmarks.run import run_benchmarks

    try:
        run_benchmarks(quick=quick, as_json=as_json, only=only, peers=peers, console=console)
    except JobrunnerError as exc:
        _fail(str(exc))


dlq = typer.Typer(
    help="The dead-letter store: failed jobs with their reasons.", no_args_is_help=True
)
cli.add_typer(dlq, name="dlq")
DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
SECONDS_PER = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _dead_letters() -> Any:
    from worker.client import Client
    from worker.dead_letter import DeadLetterStore

    return DeadLetterStore(Client().store.redis)


@dlq.command("list")
def dlq_list(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Every dead letter, oldest first."""
    entries = _dead_letters().entries()
    if as_json:
        _print_json(entries)
        return
    table = Table(title=f"dead letters ({len(entries)})")
    for column in ("job", "pipeline", "tier", "step", "deliveries", "age", "error"):
        table.add_column(column)
    for entry in entries:
        age = f"{(time.time() - entry['time']) / 3600:.1f} h"
        table.add_row(
            entry["job_id"],
            entry["pipeline"],
            entry["tier"],
            entry["step"],
            str(entry["deliveries"]),
            age,
            entry["error"],
        )
    console.print(table)


@dlq.command("show")
def dlq_show(job_id: Annotated[str, typer.Argument(help="the failed job's id")]) -> None:
    """One dead letter in full, traceback included (JSON)."""
    entry = _dead_letters().get(job_id)
    if entry is None:
        _fail(f"no dead letter for job {job_id}")
    _print_json(entry)


@dlq.command("retry")
def dlq_retry(
    job_id: Annotated[str | None, typer.Argument(help="the failed job's id")] = None,
    all_: Annotated[bool, typer.Option("--all", help="retry every dead letter")] = False,
) -> None:
    """Submit failed jobs again (same pipeline, tier and payload, as new jobs); each retried
    dead letter is removed. Prints `old-id -> new-id` per job."""
    from worker.client import Client

    if (job_id is None) == (not all_):
        _fail("give a job id or --all")
    letters = _dead_letters()
    ids = letters.ids() if all_ else [job_id]
    client = Client()
    for old in ids:
        entry = letters.get(old)
        if entry is None:
            _fail(f"no dead letter for job {old}")
        new = client.submit(entry["pipeline"], entry["payload"], tier=entry["tier"])
        letters.remove(old)
        print(f"{old} -> {new.id}")


@dlq.command("purge")
def dlq_purge(
    older_than: Annotated[str, typer.Option(help="age, e.g. 7d, 12h, 30m or seconds")],
) -> None:
    """Remove dead letters older than the given age (nothing else ever removes them)."""
    match = DURATION.match(older_than.strip())
    if match is None:
        _fail(f"--older-than {older_than!r} is not a duration like 7d, 12h, 30m or 90")
    seconds = float(match.group(1)) * SECONDS_PER[match.group(2)]
    print(f"purged {_dead_letters().purge(seconds)} dead letter(s) older than {older_than}")


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so a stack this process started is stopped, not orphaned."""
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        cli()
    except JobrunnerError as error:
        print(f"jobrunner: error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
