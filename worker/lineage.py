"""`jobrunner lineage`: a job's lineage record, or which jobs, from which inputs, wrote a file.

Records are files that the feature pipeline's `store` step writes under the data dir (layout and
reasons in tasks/features/lineage.py), so this reads the workers' data dir, not Redis: the local
stack's, or the shared storage of a fleet.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from config import JobrunnerError, get_settings
from tasks.features.files import sha256_file
from tasks.features.lineage import jobs_with_output, lineage_dir, read_record

HASH_CHARS = 16  # of a sha256, in tables


class LineageError(JobrunnerError):
    """No lineage to show: the message says what was looked for, and where."""


def _data_dir(data_dir: Path | None) -> Path:
    return (data_dir or get_settings().data_dir).resolve()


def lineage_of(job_id: str, data_dir: Path | None = None) -> dict[str, Any]:
    """The lineage record of job `job_id`."""
    where = _data_dir(data_dir)
    try:
        record = read_record(where, job_id)
    except ValueError as error:
        raise LineageError(str(error)) from None
    if record is None:
        raise LineageError(
            f"no lineage record for job {job_id} in {lineage_dir(where)} (records are written "
            "when a data pipeline job succeeds; see `jobrunner status JOB_ID`)"
        )
    return record


def find_by_output(path: Path, data_dir: Path | None = None) -> dict[str, Any]:
    """The jobs that wrote a file with the content `path` has now (several, when reruns
    reproduced it), each with its inputs; found by content hash, so a renamed or copied output
    is still found and a modified one is not mistaken for the original."""
    where = _data_dir(data_dir)
    if not path.is_file():
        raise LineageError(f"{path} is not a file")
    digest = sha256_file(path)
    jobs = []
    for job_id in jobs_with_output(where, digest):
        record = lineage_of(job_id, where)
        written_as = "output" if record["output"]["sha256"] == digest else "quarantine"
        jobs.append(
            {
                "job_id": job_id,
                "pipeline": record["pipeline"],
                "pipeline_version": record["pipeline_version"],
                "tier": record["tier"],
                "recorded_at": record["recorded_at"],
                "written_as": written_as,
                "written_to": record[written_as]["path"],
                "inputs": record["inputs"],
            }
        )
    if not jobs:
        raise LineageError(
            f"no job recorded in {lineage_dir(where)} wrote a file with the content of {path} "
            f"(sha256 {digest}): not a pipeline output, or changed since"
        )
    jobs.sort(key=lambda job: job["recorded_at"])
    return {"path": str(path.resolve()), "sha256": digest, "jobs": jobs}


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
    job.add_row("manifest", record["manifest"])
    job.add_row("partitions", str(len(record["partitions"])))
    steps = Table(title="steps")
    for column in ("step", "code", "runs", "started", "took", "rows in", "out", "quarantined"):
        steps.add_column(column, justify="left" if column in ("step", "code") else "right")
    for fact in record["steps"]:
        steps.add_row(
            fact["step"],
            fact["code_version"],
            str(fact["runs"]),
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
