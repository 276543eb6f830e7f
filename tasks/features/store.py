"""`store`: publish the feature set as a new version of the versioned feature store
(`versions`: layout, commit protocol, rollback), at `data.store_url` or <data_dir>/features:

- the features as Parquet, as `aggregate` wrote them (`parquet`: pinned options, fixed row
  groups, so the same raw input gives the same bytes and sha256 on every rerun);
- the quarantine: the rows validate rejected, ordered by file and line;
- then one commit naming both, the job and its statistics: the new current version.

Both files are hashed in the job's work directory, then uploaded under their content names; the
commit comes last. Then the job's lineage record (naming the version) goes to <data_dir>/lineage/
and the work directory is removed. If anything fails before the commit, the files this run
uploaded that no version uses are removed: the current version stays as it was.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from typing import Any

from pydantic import Field

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
from jobrunner.tasks.features.paths import work_dir
from jobrunner.tasks.features.shared import fetch, unshare
from jobrunner.tasks.features.versions import (
    Commit,
    DataFile,
    collect,
    publish,
    store_root,
    upload,
)
from jobrunner.tasks.step import StepContext, StepPayload, step

CODE_VERSION = source_hash(__name__)


class StorePayload(StepPayload):
    output_name: str = Field(
        default="features", pattern=r"^[A-Za-z0-9_\-]{1,64}$", description="the feature set"
    )


@step(memory_mb=64)  # hashes and uploads files in chunks
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
        for source, digest, suffix in (
            (features_in, features_sha, ".parquet"),
            (quarantine_in, quarantine_sha, ".quarantine.jsonl"),
        ):
            uploaded.append(upload(root, name, source, digest, suffix))
        version = publish(
            root,
            Commit(
                name=name,
                version=0,  # assigned by publish
                action="publish",
                committed_at="",
                job_id=ctx.job_id,
                features=DataFile(file=uploaded[0], sha256=features_sha, rows=merged.rows),
                quarantine=DataFile(
                    file=uploaded[1], sha256=quarantine_sha, rows=merged.quarantined
                ),
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
        path=root.where(f"{name}/{version.features.file}"), sha256=features_sha, rows=merged.rows
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
        "steps": [f.model_dump(exclude={"params"}) for f in record.steps],
    }
