"""`jobrunner lineage`: a job's lineage, or the jobs that wrote a file, rendered (the data comes
from worker/monitoring/lineage.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from jobrunner.worker.cli.base import cli, console, fail, print_json

HASH_CHARS = 16  # of a sha256, in tables


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
    from jobrunner.worker.monitoring.lineage import find_by_output, lineage_of

    if output is not None and job_id is None:
        found = find_by_output(output)
        print_json(found) if as_json else render_output(found, console)
    elif job_id is not None and output is None:
        record = lineage_of(job_id)
        print_json(record) if as_json else render_lineage(record, console)
    else:
        fail("give a JOB_ID or --output PATH")


def _took(fact: dict[str, Any]) -> str:
    seconds = (
        datetime.fromisoformat(fact["ended_at"]) - datetime.fromisoformat(fact["started_at"])
    ).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _inputs_table(inputs: list[dict[str, Any]]) -> Table:
    table = Table(title="inputs")
    for column in ("file", "format", "rows", "bytes", "sha256"):
        table.add_column(column, justify="right" if column in ("rows", "bytes") else "left")
    for item in inputs:
        table.add_row(
            item["file"],
            item["format"],
            str(item["rows"]),
            str(item["bytes"]),
            item["sha256"][:HASH_CHARS],
        )
    return table


def render_lineage(record: dict[str, Any], console: Console) -> None:
    job = Table(title=f"job {record['job_id']}", show_header=False)
    job.add_row("pipeline", f"{record['pipeline']} (version {record['pipeline_version']})")
    job.add_row("tier", record["tier"])
    job.add_row("recorded", record["recorded_at"])
    for key in ("output", "quarantine"):
        written = record[key]
        job.add_row(key, f"{written['path']}\n{written['rows']} rows, sha256 {written['sha256']}")
    job.add_row(
        "version", f"{record['feature_set']} version {record['version']} in {record['store']}"
    )
    job.add_row("partitions", str(len(record["partitions"])))
    steps = Table(title="steps")
    columns = ("step", "code", "runs", "cached", "started", "took", "rows in", "out", "quarantined")
    for column in columns:
        steps.add_column(column, justify="left" if column in ("step", "code") else "right")
    for fact in record["steps"]:
        steps.add_row(
            fact["step"],
            fact["code_version"],
            str(fact["runs"]),
            str(fact.get("cached", 0)),  # runs that reused an earlier run's output
            fact["started_at"][11:23],  # the time of day; the date is the record's
            _took(fact),
            str(fact["rows_in"]),
            str(fact["rows_out"]),
            str(fact["quarantined"]),
        )
    console.print(job, _inputs_table(record["inputs"]), steps)


def render_output(found: dict[str, Any], console: Console) -> None:
    console.print(f"{found['path']}\nsha256 {found['sha256']}")
    jobs = Table(title="written by")
    for column in ("job", "pipeline", "tier", "recorded", "written to"):
        jobs.add_column(column)
    for job in found["jobs"]:
        jobs.add_row(
            job["job_id"],
            f"{job['pipeline']} v{job['pipeline_version']}",
            job["tier"],
            job["recorded_at"],
            job["written_to"],
        )
    console.print(jobs, _inputs_table(found["jobs"][-1]["inputs"]))
    if len(found["jobs"]) > 1:
        console.print("(inputs of the latest job; `--json` lists each job's)")
