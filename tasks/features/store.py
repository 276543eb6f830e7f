"""`store`: write the feature set into the feature store, <data_dir>/features/:

- `<name>.parquet`: the features, columns in `schema.FEATURE_SCHEMA` order, written by pyarrow
  with every option that shapes the bytes pinned and nothing time-dependent inside (Parquet's
  `created_by` names only the library version), so the same raw input gives the same bytes, and
  the same sha256, on every rerun with the same pyarrow;
- `<name>.quarantine.jsonl`: the rows validate rejected, ordered by file and line;
- `<name>.manifest.json`: what the feature file holds and which job wrote it, written last.

Each file is written beside its target and renamed into place. Then the job's lineage record goes
to <data_dir>/lineage/ and the job's work directory is removed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from jobrunner.tasks.features.aggregate import AggregateResult
from jobrunner.tasks.features.files import atomic_path, read_jsonl, sha256_file, write_json
from jobrunner.tasks.features.lineage import (
    INGEST_FACTS,
    IngestFacts,
    LineageRecord,
    OutputFile,
    StepFact,
    environment,
    pipeline_version,
    source_hash,
    write_record,
)
from jobrunner.tasks.features.paths import own_work_file, work_dir
from jobrunner.tasks.features.schema import FEATURE_SCHEMA
from jobrunner.tasks.step import StepContext, StepPayload, step

CODE_VERSION = source_hash(__name__)

# Pinned rather than left to pyarrow's defaults, which may change between releases.
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "version": "2.6",
    "data_page_version": "1.0",
    "use_dictionary": True,
    "write_statistics": True,
    "row_group_size": 1 << 20,
}


class StorePayload(StepPayload):
    output_name: str = Field(default="features", pattern=r"^[A-Za-z0-9_\-]{1,64}$")


def feature_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """The rows as a table of exactly the feature columns; a missing column is a KeyError, not a
    column of nulls."""
    listed = list(rows)
    columns = {name: [row[name] for row in listed] for name in FEATURE_SCHEMA.names}
    columns["timestamp"] = [datetime.fromisoformat(value) for value in columns["timestamp"]]
    return pa.Table.from_pydict(columns, schema=FEATURE_SCHEMA)


def write_parquet(table: pa.Table, path: Path) -> str:
    """Write `table` to `path` atomically; returns the sha256 of the bytes written (hashed before
    the rename, so a concurrent writer of the same name cannot swap them)."""
    with atomic_path(path) as temp:
        pq.write_table(table, temp, **PARQUET_OPTIONS)
        return sha256_file(temp)


def copy_file(source: Path, path: Path) -> str:
    """Copy atomically (the source stays for a redelivered run); returns the sha256."""
    with atomic_path(path) as temp:
        shutil.copyfile(source, temp)
        return sha256_file(temp)


def _manifest(name: str, record: LineageRecord, lineage: Path) -> dict[str, Any]:
    return {
        "name": name,
        "features": {
            "file": Path(record.output.path).name,
            "format": "parquet",
            "sha256": record.output.sha256,
            "rows": record.output.rows,
            "columns": [{"name": f.name, "type": str(f.type)} for f in FEATURE_SCHEMA],
        },
        "quarantine": {
            "file": Path(record.quarantine.path).name,
            "sha256": record.quarantine.sha256,
            "rows": record.quarantine.rows,
        },
        "statistics": record.statistics,
        "job_id": record.job_id,
        "pipeline": record.pipeline,
        "pipeline_version": record.pipeline_version,
        "lineage": str(lineage),
    }


@step
def store(payload: StorePayload, upstream: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Write features, quarantine, lineage record and manifest; returns where they are, and the
    rows in/out/quarantined of every step (the job's data-flow metrics)."""
    started = time.time()
    merged = AggregateResult.model_validate(upstream)
    work = work_dir(ctx.data_dir, ctx.job_id)
    ingested = IngestFacts.model_validate_json((work / INGEST_FACTS).read_text(encoding="utf-8"))
    out = ctx.data_dir / "features"
    features = out / f"{payload.output_name}.parquet"
    quarantine = out / f"{payload.output_name}.quarantine.jsonl"
    manifest = out / f"{payload.output_name}.manifest.json"
    features_in = own_work_file(ctx.data_dir, ctx.job_id, merged.features_path)
    quarantine_in = own_work_file(ctx.data_dir, ctx.job_id, merged.quarantine_path)
    table = feature_table(read_jsonl(features_in))
    output = OutputFile(path=str(features), sha256=write_parquet(table, features), rows=len(table))
    rejected = OutputFile(
        path=str(quarantine),
        sha256=copy_file(quarantine_in, quarantine),
        rows=merged.quarantined,
    )
    fact = StepFact.since(
        ctx, CODE_VERSION, started, payload, rows_in=merged.rows, rows_out=len(table)
    )
    record = LineageRecord(
        job_id=ctx.job_id,
        pipeline=ctx.pipeline,
        pipeline_version=pipeline_version(ctx.pipeline),
        tier=ctx.tier,
        recorded_at=fact.ended_at,
        inputs=ingested.inputs,
        steps=[ingested.step, *merged.steps, fact],
        partitions=merged.partitions,
        output=output,
        quarantine=rejected,
        manifest=str(manifest),
        statistics=merged.statistics,
        environment=environment(),
    )
    lineage = write_record(ctx.data_dir, record)
    write_json(manifest, _manifest(payload.output_name, record, lineage))
    shutil.rmtree(work)
    return {
        "path": output.path,
        "sha256": output.sha256,
        "rows": output.rows,
        "quarantined": rejected.rows,
        "quarantine_path": rejected.path,
        "manifest_path": str(manifest),
        "lineage_path": str(lineage),
        "partitions": len(merged.partitions),
        "steps": [f.model_dump(exclude={"params"}) for f in record.steps],
    }
