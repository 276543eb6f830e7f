"""`jobrunner scheduler`, `schedules` and `backfill`: pipelines submitted on a clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from jobrunner.config import get_settings
from jobrunner.worker.cli.base import TIER_HELP, cli, console, exec_celery, fail, print_json

if TYPE_CHECKING:
    from jobrunner.worker.scheduling.schedules import Schedules

BATCH = 500  # firings per submit_many: one round trip each for keys, records and messages


def _schedules() -> Schedules:
    from jobrunner.worker.broker import connection
    from jobrunner.worker.client import Client
    from jobrunner.worker.scheduling.schedules import Schedules

    settings = connection.resolve(get_settings())
    connection.check_reachable(settings)
    return Schedules(Client(settings), settings)


@cli.command()
def scheduler() -> None:
    """Run the scheduler (celery beat with a Redis lock): fires the configured schedules and
    watches the triggers' folders. Run two for availability; exactly one fires. A bad schedule
    or trigger stops it with one line."""
    from jobrunner.worker.scheduling.beat import SCHEDULER_CLASS
    from jobrunner.worker.scheduling.triggers import Triggers

    schedules = _schedules()
    schedules.check()
    Triggers(schedules.client, schedules.settings).check()
    argv = ["-A", "jobrunner", "beat", "-S", SCHEDULER_CLASS, "--loglevel", "INFO"]
    exec_celery(argv, {"JOBRUNNER_BROKER_URL": schedules.settings.broker_url})


def _when(at: float | None) -> str:
    return "-" if at is None else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@cli.command("schedules")
def schedules_command(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Each schedule with its next and last firing and the last job's state."""
    rows = _schedules().describe(time.time())
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"schedules ({len(rows)})")
    for column in ("name", "pipeline", "tier", "clock", "next", "last", "last job", "state"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["name"],
            row["pipeline"],
            row["tier"],
            row["clock"],
            _when(row["next_at"]),
            _when(row["last_at"]),
            row["last_job"] or "-",
            row["last_state"] or "-",
        )
    console.print(table)


def _instant(value: str, option: str) -> float:
    """A date or date-time (ISO 8601; UTC unless it names a zone) as Unix seconds."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r} is not a date like 2026-11-01 or 2026-11-01T02:00")
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _submit(
    schedules: Schedules, name: str, times: list[float], tier: str | None, *, bar: bool
) -> list[dict[str, str]]:
    """Submit the firings at `times` in batches (one submit_many each), with a progress bar on
    stderr (`bar`, and stderr a terminal): stdout stays what a script reads. Each firing with
    its job."""
    stderr = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    jobs: list[dict[str, str]] = []
    with Progress(
        *columns, TimeElapsedColumn(), console=stderr, disable=not (bar and stderr.is_terminal)
    ) as progress:
        task = progress.add_task("submitting", total=len(times))
        for i in range(0, len(times), BATCH):
            batch = times[i : i + BATCH]
            submitted = schedules.submit_many(name, batch, tier=tier)
            jobs += [
                {"at": _when(at), "job": job.id} for at, job in zip(batch, submitted, strict=True)
            ]
            progress.advance(task, len(batch))
    return jobs


@cli.command()
def backfill(
    schedule: Annotated[str, typer.Argument(help="schedule name (see `jobrunner schedules`)")],
    start: Annotated[str, typer.Option("--from", help="first time, e.g. 2026-11-01 (UTC)")],
    end: Annotated[str, typer.Option("--to", help="last time, included, e.g. 2026-11-30")],
    priority: Annotated[str | None, typer.Option("--priority", "-p", help=TIER_HELP)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only list what is missing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Submit one job per firing time of SCHEDULE in the range that has none yet (the
    scheduler's idempotency keys), in batches of 500 with a progress bar, so a second backfill
    fills only the gaps."""
    first, last = _instant(start, "--from"), _instant(end, "--to")
    if last < first:
        fail(f"--to {end} is before --from {start}")
    schedules = _schedules()
    if priority is not None:
        schedules.settings.queue(priority)  # an unknown tier is an error before anything is sent
    times = list(schedules.backfill(schedule, first, last))
    missing = [at for at, job_id in times if job_id is None]
    if not as_json:
        print(f"{schedule}: {len(times)} firing(s) in range, {len(missing)} missing", flush=True)
    jobs = [] if dry_run else _submit(schedules, schedule, missing, priority, bar=not as_json)
    if as_json:
        missed = [_when(at) for at in missing]
        print_json({"schedule": schedule, "firings": len(times), "missing": missed, "jobs": jobs})
    elif dry_run:
        for at in missing:
            print(_when(at))
    else:
        print(f"submitted {len(jobs)} job(s)")
