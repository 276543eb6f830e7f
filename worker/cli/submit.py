"""`jobrunner submit`: one job from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from jobrunner.worker.cli.base import TIER_HELP, audit, cli, console, fail, print_json


def _read_payload(payload: str | None, payload_file: Path | None) -> Any:
    if payload is not None and payload_file is not None:
        fail("give --payload or --payload-file, not both")
    if payload_file is not None:
        if not payload_file.is_file():
            fail(f"payload file {payload_file} does not exist")
        payload = payload_file.read_text(encoding="utf-8")
        source = f"payload file {payload_file}"
    else:
        source = "--payload"
    if payload is None:
        return {}
    from jobrunner.worker.validation import parse_json

    data = parse_json(payload, source)
    if data is None:  # the API's "no payload"; on the command line, a mistake
        fail(f"{source} must be a JSON object, got null")
    return data


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
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="run cached steps again, refreshing their entries")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Submit a job; prints its id, or with --wait its result."""
    from jobrunner.worker.client import Client

    data = _read_payload(payload, payload_file)
    client = Client()
    if no_cache and not client.pipeline(pipeline).cached():
        fail(f"--no-cache: pipeline {pipeline} has no cached steps")
    job = client.submit(
        pipeline,
        data,
        tier=priority,
        idempotency_key=idempotency_key,
        deadline_s=deadline,
        cache=not no_cache,
    )
    audit("submit", job.id, f"{pipeline} at {priority or 'default tier'}")
    if not wait:
        print_json({"job_id": job.id}) if as_json else print(job.id)
        return
    with console.status(f"job {job.id} running ..."):
        record = job.wait(timeout)
    if as_json:
        print_json(
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
        fail(f"job {job.id} failed: {record.error}")
