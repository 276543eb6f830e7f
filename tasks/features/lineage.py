"""Lineage: what each job read, which code processed it, what came out, and the rows it rejected.

Facts travel with the data. Every per-partition step appends a `StepFact` (code version, start
and end, rows in, out and quarantined) to its result, so the facts flow down the canvas with the
partitions; `ingest`, whose result must be the bare partition list that `map` fans out, leaves its
fact and the input files' hashes in the job's work directory instead. `store`, the last step,
writes the job's record to <data_dir>/lineage/<job_id>.json and indexes each file it wrote by
content hash (<data_dir>/lineage/outputs/<sha256>/<job_id>), which answers "which job, from which
inputs, made this file?" (several jobs, when reruns reproduced it byte for byte).

Files rather than Redis: a record must outlive the job's Redis keys (`result_expires`) and sit
beside the data it describes, and steps write it without tasks/ importing worker/. Only jobs that
succeed get a record; a failed job's errors are on its job record (`jobrunner status JOB_ID`).

The same facts are the pipeline's data-flow metrics (rows in/out/quarantined per step): they are
in every job result (`steps`) and lineage record, for the monitoring layer to export.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow
from pydantic import BaseModel

from jobrunner.config import get_settings
from jobrunner.tasks.cache import source_hash as source_hash  # the steps import it from here
from jobrunner.tasks.cache import work_files
from jobrunner.tasks.features.files import write_bytes, write_json
from jobrunner.tasks.features.paths import check_job_id
from jobrunner.tasks.features.shared import share
from jobrunner.tasks.registry import load_pipelines
from jobrunner.tasks.step import StepContext, StepPayload

INGEST_FACTS = "ingest.json"  # in the job's work directory


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


class StepFact(BaseModel):
    """One run of a step, or its runs over every partition merged into one."""

    step: str
    code_version: str
    started_at: str
    ended_at: str
    runs: int = 1
    rows_in: int
    rows_out: int
    quarantined: int = 0
    cached: int = 0  # runs that reused an earlier run's output (`cache`)
    params: dict[str, Any]  # the step's payload: what to pass to reproduce the run

    @classmethod
    def since(
        cls,
        ctx: StepContext,
        code_version: str,
        started: float,
        payload: StepPayload,
        *,
        rows_in: int,
        rows_out: int,
        quarantined: int = 0,
        cached: bool = False,
    ) -> StepFact:
        """The fact of the run of `ctx.step` that began at `started` (time.time()) and ends now."""
        return cls(
            step=ctx.step,
            code_version=code_version,
            started_at=_iso(started),
            ended_at=_iso(time.time()),
            rows_in=rows_in,
            rows_out=rows_out,
            quarantined=quarantined,
            cached=int(cached),
            params=payload.model_dump(mode="json"),
        )


def merge_facts(facts: Iterable[StepFact]) -> list[StepFact]:
    """One fact per step, in order of first appearance: runs and rows summed, the earliest start
    and the latest end (ISO timestamps in UTC compare as strings)."""
    merged: dict[str, StepFact] = {}
    for fact in facts:
        seen = merged.get(fact.step)
        merged[fact.step] = (
            fact
            if seen is None
            else seen.model_copy(
                update={
                    "started_at": min(seen.started_at, fact.started_at),
                    "ended_at": max(seen.ended_at, fact.ended_at),
                    "runs": seen.runs + fact.runs,
                    "rows_in": seen.rows_in + fact.rows_in,
                    "rows_out": seen.rows_out + fact.rows_out,
                    "quarantined": seen.quarantined + fact.quarantined,
                    "cached": seen.cached + fact.cached,
                }
            )
        )
    return list(merged.values())


def reused(result: dict[str, Any], upstream: Any, ctx: StepContext) -> dict[str, Any]:
    """A cached step's result made this run's (`@step(reuse=...)`): its own fact, the last one,
    marked cached and timed now, after this run's upstream facts (reused or not: the entry
    holds the earlier run's); its files shared with the job's other hosts (`shared`)."""
    share(ctx, *work_files(result, ctx))
    parts = upstream if isinstance(upstream, list) else [upstream]
    before = merge_facts(StepFact.model_validate(f) for p in parts for f in p.get("steps", ()))
    own = StepFact.model_validate(result["steps"][-1])
    now = _iso(time.time())
    own = own.model_copy(update={"cached": own.runs, "started_at": now, "ended_at": now})
    return {**result, "steps": [fact.model_dump(mode="json") for fact in (*before, own)]}


class InputFile(BaseModel):
    file: str  # relative to the input directory
    path: str  # absolute, or the object's URL
    etag: str | None = None  # an object's ETag or version as read; None: a local file
    format: str
    sha256: str
    bytes: int
    rows: int


class IngestFacts(BaseModel):
    inputs: list[InputFile]
    step: StepFact


class PartitionSummary(BaseModel):
    partition: str
    file: str
    first_line: int
    sha256: str  # of the bytes the partition's rows came from, checked when they were read
    rows_in: int
    rows_out: int
    quarantined: int


class OutputFile(BaseModel):
    path: str
    sha256: str
    rows: int


class LineageRecord(BaseModel):
    job_id: str
    pipeline: str
    pipeline_version: str | None
    tier: str
    recorded_at: str
    inputs: list[InputFile]
    steps: list[StepFact]
    partitions: list[PartitionSummary]
    output: OutputFile  # a folder, for partitioned features: its files are `partition_files`
    quarantine: OutputFile
    partition_files: list[OutputFile] = []  # with `partition_by`: each file of the folder
    feature_set: str
    version: int  # of the feature set, in the feature store (`versions`)
    store: str  # the feature store's URL
    statistics: dict[str, Any]
    environment: dict[str, str]  # what else decides the output's bytes


def environment() -> dict[str, str]:
    return {"python": platform.python_version(), "pyarrow": pyarrow.__version__}


def pipeline_version(name: str) -> str | None:
    """The declared version of pipeline `name` on this worker; None if it is not declared."""
    pipeline = load_pipelines(get_settings()).get(name)
    return None if pipeline is None else pipeline.version


def lineage_dir(data_dir: Path) -> Path:
    return data_dir / "lineage"


def record_path(data_dir: Path, job_id: str) -> Path:
    return lineage_dir(data_dir) / f"{check_job_id(job_id)}.json"


def _output_index(data_dir: Path, digest: str) -> Path:
    return lineage_dir(data_dir) / "outputs" / digest


def write_record(data_dir: Path, record: LineageRecord) -> Path:
    """Write the record, then index its output and quarantine files (and each partition file)
    by content hash."""
    path = record_path(data_dir, record.job_id)
    write_json(path, record.model_dump(mode="json"))
    for output in (record.output, record.quarantine, *record.partition_files):
        write_bytes(_output_index(data_dir, output.sha256) / record.job_id, b"")
    return path


def read_record(data_dir: Path, job_id: str) -> dict[str, Any] | None:
    path = record_path(data_dir, job_id)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def jobs_with_output(data_dir: Path, digest: str) -> list[str]:
    """The jobs that wrote a file with this content hash, in name order."""
    index = _output_index(data_dir, digest)
    return (
        sorted(p.name for p in index.iterdir() if not p.name.startswith("."))
        if index.is_dir()
        else []
    )
