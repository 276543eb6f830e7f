"""`jobrunner cancel`, `pause` and `resume`: stop a job, or the fleet taking a tier's work."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from jobrunner.worker.cli.base import cli, print_json

TARGET_TIER = "the tier (high, medium or low) whose queues the whole fleet stops taking from"
TARGET_PIPELINE = "a pipeline instead of a tier: its steps are parked as workers take them"
BY_HELP = "who acts, recorded with it (default: user@host)"


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

    record = Client().cancel(job_id, terminate=terminate, by=by)
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
    from jobrunner.worker.client import Client

    _show(Client().pause(tier, pipeline=pipeline, by=by), as_json)


@cli.command()
def resume(
    tier: Annotated[str | None, typer.Argument(help="the paused tier")] = None,
    pipeline: Annotated[str | None, typer.Option(help=TARGET_PIPELINE)] = None,
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Resume a paused tier or pipeline: workers take its work again within about a second.
    Prints every pause still in force."""
    from jobrunner.worker.client import Client

    _show(Client().resume(tier, pipeline=pipeline, by=by), as_json)
