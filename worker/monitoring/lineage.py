"""`jobrunner lineage`: a job's lineage record, or which jobs, from which inputs, wrote a file.

Records are files that the feature pipeline's `store` step writes under the data dir (layout and
reasons in tasks/features/lineage.py), so this reads the workers' data dir, not Redis: the local
stack's, or the shared storage of a fleet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobrunner.config import JobrunnerError, get_settings
from jobrunner.tasks.features.files import sha256_file
from jobrunner.tasks.features.lineage import jobs_with_output, lineage_dir, read_record


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


def _written(record: dict[str, Any], digest: str) -> tuple[str, str]:
    """As what the job wrote the file with this content hash, and where: its output, its
    quarantine, or one file of its partitioned output."""
    for kind in ("output", "quarantine"):
        if record[kind]["sha256"] == digest:
            return kind, record[kind]["path"]
    parts = [p for p in record.get("partition_files", ()) if p["sha256"] == digest]
    return "partition", parts[0]["path"]  # the index named this job: one of its files matches


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
        written_as, written_to = _written(record, digest)
        jobs.append(
            {
                "job_id": job_id,
                "pipeline": record["pipeline"],
                "pipeline_version": record["pipeline_version"],
                "tier": record["tier"],
                "recorded_at": record["recorded_at"],
                "written_as": written_as,
                "written_to": written_to,
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
