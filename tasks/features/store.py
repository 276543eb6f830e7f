"""`store`: publish the feature set as a new version of the versioned feature store
(`versions`: layout, commit protocol, rollback), at `data.store_url` or <data_dir>/features:

- the features as Parquet, as `aggregate` wrote them (`parquet`: pinned options, fixed row
  groups, so the same raw input gives the same bytes and sha256 on every rerun);
- the quarantine: the rows validate rejected, ordered by file and line;
- then one commit naming both, the job and its statistics: the new current version.

With `partition_by` (e.g. `["station", "date"]`), the features are split Hive-style first
(`partitioned`): the version's features are then a folder, data/<digest>/col=value/.../part-00000
.parquet, its name the digest of its files' names and sha256s, every file listed in the commit.

Both files are hashed in the job's work directory, then uploaded under their content names; the
commit comes last. Then the job's lineage record (naming the version) goes to <data_dir>/lineage/
and the work directory is removed. If anything fails before the commit, the files this run
uploaded that no version uses are removed: the current version stays as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from jobrunner.tasks.features.aggregate import AggregateResult
from jobrunner.tasks.features.files import sha256_file
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
from jobrunner.tasks.features.objects import Root
from jobrunner.tasks.features.partitioned import (
    PARTITION_COLUMNS,
    check_partition_by,
    write_partitioned,
)
from jobrunner.tasks.features.paths import work_dir
from jobrunner.tasks.features.shared import fetch, unshare
from jobrunner.tasks.features.versions import (
    DATA,
    Commit,
    DataFile,
    collect,
    publish,
    store_root,
    upload,
    upload_as,
)
from jobrunner.tasks.step import StepContext, StepPayload, step

CODE_VERSION = source_hash(__name__)


class StorePayload(StepPayload):
    output_name: str = Field(
        default="features", pattern=r"^[A-Za-z0-9_\-]{1,64}$", description="the feature set"
    )
    # The check is in the type, so the pipeline's payload model (built from the steps' field
    # types) refuses an unknown column at submission, before anything is enqueued.
    partition_by: Annotated[list[str], AfterValidator(check_partition_by)] = Field(
        default_factory=list,
        description=f"split the features Hive-style by these ({', '.join(PARTITION_COLUMNS)})",
    )


@dataclass(frozen=True)
class Upload:
    features: DataFile
    partitions: list[DataFile]


def _partitioned(root: Root, name: str, work: Path, features: Path, columns: list[str]) -> Upload:
    """Split the features by `columns` and upload the dataset under its digest's folder."""
    parts = write_partitioned(features, columns, work / "partitioned")
    listing = json.dumps([[p.relative, p.sha256] for p in parts]).encode()
    folder = f"{DATA}/{hashlib.sha256(listing).hexdigest()}/"
    files = [DataFile(file=folder + p.relative, sha256=p.sha256, rows=p.rows) for p in parts]
    for part, entry in zip(parts, files, strict=True):
        upload_as(root, name, entry.file, part.path)
    rows = sum(p.rows for p in parts)
    return Upload(DataFile(file=folder, sha256=folder[len(DATA) + 1 : -1], rows=rows), files)


@step(memory_mb=256)  # partition_by: DuckDB's 128 MB sort, 210-250 MB measured at 4M rows
def store(payload: StorePayload, upstream: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Publish features and quarantine as a new version, then the lineage record; returns where
    they are, the version, and the rows in/out/quarantined of every step (the job's data-flow
    metrics)."""
    started = time.time()
    merged = AggregateResult.model_validate(upstream)
    work = work_dir(ctx.data_dir, ctx.job_id)
    facts = fetch(ctx, str(work / INGEST_FACTS))
    ingested = IngestFacts.model_validate_json(facts.read_text(encoding="utf-8"))
    features_in = fetch(ctx, merged.features_path)
    quarantine_in = fetch(ctx, merged.quarantine_path)
    features_sha, quarantine_sha = sha256_file(features_in), sha256_file(quarantine_in)
    name, root = payload.output_name, store_root(ctx.data_dir)
    uploaded: list[str] = []
    try:
        if payload.partition_by:
            dataset = _partitioned(root, name, work, features_in, payload.partition_by)
            uploaded += [part.file for part in dataset.partitions]
        else:
            uploaded.append(upload(root, name, features_in, features_sha, ".parquet"))
            dataset = Upload(DataFile(file=uploaded[-1], sha256=features_sha, rows=merged.rows), [])
        uploaded.append(upload(root, name, quarantine_in, quarantine_sha, ".quarantine.jsonl"))
        version = publish(
            root,
            Commit(
                name=name,
                version=0,  # assigned by publish
                action="publish",
                committed_at="",
                job_id=ctx.job_id,
                features=dataset.features,
                quarantine=DataFile(
                    file=uploaded[-1], sha256=quarantine_sha, rows=merged.quarantined
                ),
                partition_by=payload.partition_by,
                partitions=dataset.partitions,
                statistics=merged.statistics,
                pipeline=ctx.pipeline,
                pipeline_version=pipeline_version(ctx.pipeline),
            ),
        )
    except BaseException:
        # Remove what this run uploaded and no version uses; if the store is gone too, the
        # first error is the one to report (what is left is unreferenced, never read).
        with contextlib.suppress(Exception):
            collect(root, name, uploaded)
        raise
    fact = StepFact.since(
        ctx, CODE_VERSION, started, payload, rows_in=merged.rows, rows_out=merged.rows
    )
    output = OutputFile(
        path=root.where(f"{name}/{version.features.file}"),
        sha256=version.features.sha256,
        rows=merged.rows,
    )
    rejected = OutputFile(
        path=root.where(f"{name}/{version.quarantine.file}"),
        sha256=quarantine_sha,
        rows=merged.quarantined,
    )
    record = LineageRecord(
        job_id=ctx.job_id,
        pipeline=ctx.pipeline,
        pipeline_version=version.pipeline_version,
        tier=ctx.tier,
        recorded_at=fact.ended_at,
        inputs=ingested.inputs,
        steps=[ingested.step, *merged.steps, fact],
        partitions=merged.partitions,
        output=output,
        quarantine=rejected,
        partition_files=[
            OutputFile(path=root.where(f"{name}/{part.file}"), sha256=part.sha256, rows=part.rows)
            for part in version.partitions
        ],
        feature_set=name,
        version=version.version,
        store=root.url,
        statistics=merged.statistics,
        environment=environment(),
    )
    lineage = write_record(ctx.data_dir, record)
    shutil.rmtree(work)
    unshare(ctx)
    return {
        "path": output.path,
        "sha256": output.sha256,
        "rows": output.rows,
        "quarantined": rejected.rows,
        "quarantine_path": rejected.path,
        "feature_set": name,
        "version": version.version,
        "lineage_path": str(lineage),
        "partitions": len(merged.partitions),
        "partition_files": [p.file for p in version.partitions],
        "steps": [f.model_dump(exclude={"params"}) for f in record.steps],
    }
