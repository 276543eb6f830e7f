"""`jobrunner dlq`: the dead-letter store (list, show, retry, purge)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from jobrunner.worker.cli.base import (
    audit,
    cli,
    duration_s,
    fail,
    hours_ago,
    print_entries,
    print_json,
)

dlq = typer.Typer(
    help="The dead-letter store: failed jobs with their reasons.", no_args_is_help=True
)

cli.add_typer(dlq, name="dlq")


def _dead_letters() -> Any:
    from jobrunner.worker.client import Client
    from jobrunner.worker.store.dead_letters import DeadLetterStore

    store = Client().store
    return DeadLetterStore(store.redis, store.cipher)


@dlq.command("list")
def dlq_list(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Every dead letter, oldest first."""
    print_entries(
        _dead_letters().entries(),
        as_json=as_json,
        title="dead letters",
        columns=("job", "pipeline", "tier", "step", "deliveries", "age", "error"),
        row=lambda e: (
            e["job_id"],
            e["pipeline"],
            e["tier"],
            e["step"],
            str(e["deliveries"]),
            hours_ago(e["time"]),
            e["error"],
        ),
    )


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
        new = client.submit(entry["pipeline"], entry["payload"], tier=entry["tier"], retry_of=old)
        letters.remove(old)
        audit("retry", old, f"resubmitted as {new.id}")
        print(f"{old} -> {new.id}")


@dlq.command("purge")
def dlq_purge(
    older_than: Annotated[str, typer.Option(help="age, e.g. 7d, 12h, 30m or seconds")],
) -> None:
    """Remove dead letters older than the given age (nothing else ever removes them)."""
    seconds = duration_s(older_than, "--older-than")
    purged = _dead_letters().purge(seconds)
    audit("purge", "dlq", f"{purged} older than {older_than}")
    print(f"purged {purged} dead letter(s) older than {older_than}")
