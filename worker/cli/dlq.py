"""`jobrunner dlq`: the dead-letter store (list, show, retry, purge)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Table

from jobrunner.worker.cli.base import cli, console, duration_s, fail, print_json

dlq = typer.Typer(
    help="The dead-letter store: failed jobs with their reasons.", no_args_is_help=True
)

cli.add_typer(dlq, name="dlq")


def _dead_letters() -> Any:
    from jobrunner.worker.client import Client
    from jobrunner.worker.store.dead_letters import DeadLetterStore

    return DeadLetterStore(Client().store.redis)


@dlq.command("list")
def dlq_list(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Every dead letter, oldest first."""
    entries = _dead_letters().entries()
    if as_json:
        print_json(entries)
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
        fail(f"no dead letter for job {job_id}")
    print_json(entry)


@dlq.command("retry")
def dlq_retry(
    job_id: Annotated[str | None, typer.Argument(help="the failed job's id")] = None,
    all_: Annotated[bool, typer.Option("--all", help="retry every dead letter")] = False,
) -> None:
    """Submit failed jobs again (same pipeline, tier and payload, as new jobs); each retried
    dead letter is removed. Prints `old-id -> new-id` per job."""
    from jobrunner.worker.client import Client

    if (job_id is None) == (not all_):
        fail("give a job id or --all")
    letters = _dead_letters()
    ids = letters.ids() if all_ else [job_id]
    client = Client()
    for old in ids:
        entry = letters.get(old)
        if entry is None:
            fail(f"no dead letter for job {old}")
        new = client.submit(entry["pipeline"], entry["payload"], tier=entry["tier"])
        letters.remove(old)
        print(f"{old} -> {new.id}")


@dlq.command("purge")
def dlq_purge(
    older_than: Annotated[str, typer.Option(help="age, e.g. 7d, 12h, 30m or seconds")],
) -> None:
    """Remove dead letters older than the given age (nothing else ever removes them)."""
    seconds = duration_s(older_than, "--older-than")
    print(f"purged {_dead_letters().purge(seconds)} dead letter(s) older than {older_than}")
