"""`aggregate`: the fan-in after the partitions. Merges them in a fixed order, standardizes
temperature over the whole dataset, and computes the dataset statistics (data quality included:
the share of bad rows).

The order is (station, timestamp, source file, source line): it depends only on the data, never
on partitioning or on which worker finished first, which is what makes the feature file
reproducible.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from statistics import fmean, pstdev
from typing import Any

from pydantic import BaseModel

from jobrunner.tasks.features.files import read_jsonl, write_jsonl
from jobrunner.tasks.features.lineage import PartitionSummary, StepFact, merge_facts, source_hash
from jobrunner.tasks.features.partitions import PartitionResult
from jobrunner.tasks.features.paths import own_work_file, work_dir
from jobrunner.tasks.step import StepContext, StepPayload, step

CODE_VERSION = source_hash(__name__)

STATISTICS_COLUMNS = ("temperature_c", "humidity_pct", "wind_ms", "dew_point_c")


class AggregatePayload(StepPayload):
    pass


class AggregateResult(BaseModel):
    features_path: str
    quarantine_path: str
    rows: int
    quarantined: int
    statistics: dict[str, Any]
    partitions: list[PartitionSummary]
    steps: list[StepFact]  # validate and transform merged over partitions, then aggregate's


def _order(row: dict[str, Any]) -> tuple[str, datetime, str, int]:
    timestamp = datetime.fromisoformat(row["timestamp"])
    return row["station"], timestamp, row["source_file"], row["source_line"]


def _column(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(fmean(values), 6),
        "std": round(pstdev(values), 6),
        "min": min(values),
        "max": max(values),
    }


def statistics(rows: list[dict[str, Any]], quarantined: int) -> dict[str, Any]:
    """Dataset statistics, for the manifest and the lineage record."""
    seen = len(rows) + quarantined
    times = [datetime.fromisoformat(row["timestamp"]) for row in rows]
    return {
        "rows": len(rows),
        "quarantined": quarantined,
        "bad_row_rate": round(quarantined / seen, 6) if seen else 0.0,
        "stations": len({row["station"] for row in rows}),
        "first_timestamp": min(times).isoformat() if rows else None,
        "last_timestamp": max(times).isoformat() if rows else None,
        "columns": (
            {name: _column([row[name] for row in rows]) for name in STATISTICS_COLUMNS}
            if rows
            else {}
        ),
    }


def standardize(rows: list[dict[str, Any]], column: str, into: str) -> None:
    """Add `into`: `column` as a z-score over all rows (0 when every value is the same)."""
    values = [row[column] for row in rows]
    mean = fmean(values) if values else 0.0
    spread = pstdev(values) if len(values) > 1 else 0.0
    for row in rows:
        row[into] = round((row[column] - mean) / spread, 6) if spread else 0.0


@step
def aggregate(
    payload: AggregatePayload, upstream: list[dict[str, Any]], ctx: StepContext
) -> AggregateResult:
    """Merge the partitions' features and quarantines, each in a fixed order, into the job's
    work directory, with the dataset statistics."""
    started = time.time()
    parts = [PartitionResult.model_validate(part) for part in upstream]

    def rows_of(path: str) -> Iterator[dict[str, Any]]:
        return read_jsonl(own_work_file(ctx.data_dir, ctx.job_id, path))

    rows = sorted((row for part in parts for row in rows_of(part.rows_path)), key=_order)
    standardize(rows, "temperature_c", "temperature_z")
    bad = sorted(
        (row for part in parts for row in rows_of(part.quarantine_path)),
        key=lambda row: (row["file"], row["line"]),
    )
    work = work_dir(ctx.data_dir, ctx.job_id)
    features_path, quarantine_path = work / "features.jsonl", work / "quarantine.jsonl"
    write_jsonl(features_path, rows)
    write_jsonl(quarantine_path, bad)
    merged_in = sum(part.rows for part in parts)
    fact = StepFact.since(
        ctx, CODE_VERSION, started, payload, rows_in=merged_in, rows_out=len(rows)
    )
    return AggregateResult(
        features_path=str(features_path),
        quarantine_path=str(quarantine_path),
        rows=len(rows),
        quarantined=len(bad),
        statistics=statistics(rows, len(bad)),
        partitions=[part.summary() for part in parts],
        steps=[*merge_facts(f for part in parts for f in part.steps), fact],
    )
