"""`jobrunner cancel`, `pause` and `resume`: stop a job, or the fleet taking a tier's work."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from jobrunner.config import JobrunnerError
from jobrunner.worker.cli.base import audit, cli, print_json

T = TypeVar("T")

TARGET_TIER = "the tier (high, medium or low) whose queues the whole fleet stops taking from"
TARGET_PIPELINE = "a pipeline instead of a tier: its steps are parked as workers take them"
BY_HELP = "who acts, recorded with it (default: user@host)"


def _audited(action: str, target: str, detail: str, call: Callable[[], T]) -> T:
    """Run the call, then audit it as the local user; a failure too, before its one line."""
    try:
        done = call()
    except JobrunnerError as error:
        audit(action, target, f"{detail}: {error}" if detail else str(error), "failed", quiet=True)
        raise
    audit(action, target, detail)
    return done


def _detail(by: str | None, *more: str) -> str:
    return ", ".join([*more, *([f"by {by}"] if by else [])])


@cli.command()
def cancel(
    job_id: Annotated[str, typer.Argument(help="the job's id")],
    terminate: Annotated[
        bool, typer.Option("--terminate", help="also terminate its running steps")
    ] = False,
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Cancel a job: none of its queued steps starts, running ones finish (or with --terminate
    are terminated), and it ends CANCELLED. An unknown or finished job is an error."""
    from jobrunner.worker.client import Client

    detail = _detail(by, *(["--terminate"] if terminate else []))
    record = _audited(
        "cancel", job_id, detail, lambda: Client().cancel(job_id, terminate=terminate, by=by)
    )
    if as_json:
        print_json({"job_id": record.id, "state": record.state, "error": record.error})
    else:
        print(f"{record.id} {record.state} ({record.error})")


def _show(pauses: dict[str, dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(pauses)
        return
    for target, entry in pauses.items():
        age = time.time() - entry["at"]
        parked = f", {entry['parked']} step(s) parked" if "parked" in entry else ""
        print(f"paused: {target} (by {entry['by']}, {age:.0f} s ago{parked})")
    if not pauses:
        print("nothing paused")


def _change(
    action: str, tier: str | None, pipeline: str | None, by: str | None, as_json: bool
) -> None:
    """Pause or resume (`action`) a tier or pipeline, audited; print every pause in force."""
    from jobrunner.worker.client import Client

    client = Client()
    change = {"pause": client.pause, "resume": client.resume}[action]
    target = f"pipeline:{pipeline}" if pipeline else str(tier)
    _show(
        _audited(action, target, _detail(by), lambda: change(tier, pipeline=pipeline, by=by)),
        as_json,
    )


@cli.command()
def pause(
    tier: Annotated[str | None, typer.Argument(help=TARGET_TIER)] = None,
    pipeline: Annotated[str | None, typer.Option(help=TARGET_PIPELINE)] = None,
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Pause a tier (or with --pipeline, a pipeline) for the whole fleet, live: workers run none
    of its work, which stays queued (a pipeline's: parked) and counted, until `jobrunner resume`.
    Prints every pause in force."""
    _change("pause", tier, pipeline, by, as_json)


@cli.command()
def resume(
    tier: Annotated[str | None, typer.Argument(help="the paused tier")] = None,
    pipeline: Annotated[str | None, typer.Option(help=TARGET_PIPELINE)] = None,
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Resume a paused tier or pipeline: workers take its work again within about a second.
    Prints every pause still in force."""
    _change("resume", tier, pipeline, by, as_json)
