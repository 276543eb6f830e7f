"""`aggregate`: the fan-in after the partitions. Merges them in a fixed order, standardizes
temperature over the whole dataset, computes the dataset statistics (data quality included: the
share of bad rows), and writes the feature file (Parquet) and the merged quarantine.

The order is (station, timestamp, source file, source line): it depends only on the data, never
on partitioning or on which worker finished first, which is what makes the feature file
reproducible.

Out of core, in bounded memory: DuckDB reads the partitions' Arrow work files once and sorts
them, spilling to the work directory past `DUCKDB_MEMORY`, and hands the sorted rows on as Arrow
batches that `parquet.write_batches` writes one row group at a time. Why DuckDB:
the sort over the whole dataset is the one operation here that cannot stream, and DuckDB's sort is
external with an explicit memory limit (pyarrow has no external sort; Polars' streaming engine
would be the other candidate, not measured here). DuckDB runs on every core, and nothing it
computes depends on the number of threads: the sort's keys are unique (one order), and it sums
no floating-point numbers. Means and standard deviations come from the exact sums transform took
of each partition (`columns.Moments`): exact, so in any order and for any partitioning the same
bits, and the same inputs give the same bytes. The other statistics need no pass of their own
either: counts and extremes come with the moments, and the stations are counted as the sorted
rows are written.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from jobrunner.tasks.features.columns import Moments, work_reader
from jobrunner.tasks.features.files import atomic_path
from jobrunner.tasks.features.lineage import (
    PartitionSummary,
    StepFact,
    merge_facts,
    reused,
    source_hash,
)
from jobrunner.tasks.features.parquet import write_batches
from jobrunner.tasks.features.partitions import PartitionResult
from jobrunner.tasks.features.paths import make_dirs, work_dir
from jobrunner.tasks.features.schema import FEATURE_SCHEMA, STATISTICS_COLUMNS
from jobrunner.tasks.features.shared import fetch, share
from jobrunner.tasks.features.transform import WORK_SCHEMA
from jobrunner.tasks.step import StepContext, StepPayload, step

CODE_VERSION = source_hash(__name__)

DUCKDB_MEMORY = "256MB"  # DuckDB's own limit; it spills to the work directory beyond it
MEMORY_MB = 384  # declared: DuckDB's limit, a row group in Arrow, duckdb itself (measured ~260)
BATCH_ROWS = 1 << 16
THREADS = os.cpu_count() or 1  # DuckDB's: nothing it computes depends on their number

QUARANTINE_COLUMNS = {
    "file": "VARCHAR",
    "line": "BIGINT",
    "partition": "VARCHAR",
    "reason": "VARCHAR",
    "raw": "VARCHAR",
}


class AggregatePayload(StepPayload):
    pass


class AggregateResult(BaseModel):
    features_path: str  # Parquet, in the job's work directory
    quarantine_path: str
    rows: int
    quarantined: int
    statistics: dict[str, Any]
    partitions: list[PartitionSummary]
    steps: list[StepFact]  # validate and transform merged over partitions, then aggregate's


def connect(work: Path, memory: str = DUCKDB_MEMORY) -> duckdb.DuckDBPyConnection:
    """DuckDB held to `memory`, spilling to `work`, on every core."""
    spill = make_dirs(work / "duckdb")
    return duckdb.connect(
        config={
            "memory_limit": memory,
            "threads": THREADS,
            "temp_directory": str(spill),
            "preserve_insertion_order": True,
        }
    )


def _listed(files: list[Path]) -> str:
    return ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)


def _source(files: list[Path], columns: dict[str, str]) -> str:
    """A DuckDB table function over JSON Lines files with fixed column types."""
    typed = ", ".join(f"'{name}': '{kind}'" for name, kind in columns.items())
    return f"read_json([{_listed(files)}], format = 'newline_delimited', columns = {{{typed}}})"


def _features(db: duckdb.DuckDBPyConnection, files: list[Path]) -> str:
    """transform's work files (Arrow) as a table DuckDB can read once; returns its name."""
    db.register("transformed", work_reader(files, WORK_SCHEMA))
    return "transformed"


def dataset_moments(parts: list[PartitionResult]) -> dict[str, Moments]:
    """Each statistics column's exact moments and extremes over the whole dataset: the
    partitions' added up (`columns.Moments`)."""
    return {
        name: sum((part.moments[name] for part in parts), Moments()) for name in STATISTICS_COLUMNS
    }


def statistics(
    parts: list[PartitionResult], moments: dict[str, Moments], quarantined: int, stations: int
) -> dict[str, Any]:
    """Dataset statistics, for the version's commit and the lineage record, from what transform
    took of each partition: exact moments and extremes (`dataset_moments`), earliest and latest
    timestamps; so no pass over the rows. `stations` is counted while the sorted rows are
    written (`Runs`)."""
    count = sum(part.rows for part in parts)
    seen = count + quarantined
    spans = [part.span for part in parts if part.span is not None]
    return {
        "rows": count,
        "quarantined": quarantined,
        "bad_row_rate": round(quarantined / seen, 6) if seen else 0.0,
        "stations": stations,
        "first_timestamp": min(s[0] for s in spans).isoformat() if count else None,
        "last_timestamp": max(s[1] for s in spans).isoformat() if count else None,
        "columns": {
            name: {
                "mean": round(mean, 6),
                "std": round(std, 6),
                "min": moments[name].low,
                "max": moments[name].high,
            }
            for name, (mean, std) in ((n, m.mean_and_std()) for n, m in moments.items())
        }
        if count
        else {},
    }


class Runs:
    """Counts the runs of equal values of one column in a stream of batches, batch boundaries
    included: in rows sorted by that column, the number of distinct values."""

    def __init__(self, column: str) -> None:
        self.column = column
        self.count = 0
        self._last: Any = None  # the last value seen (the column holds no nulls)

    def through(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """`batches`, passed on unchanged, counted on the way."""
        for batch in batches:
            values = batch.column(self.column)
            if len(values):
                inside = pc.not_equal(values.slice(1), values.slice(0, len(values) - 1))
                new_run = self._last is None or values[0].as_py() != self._last
                self.count += (pc.sum(inside).as_py() or 0) + new_run
                self._last = values[-1].as_py()
            yield batch


def _feature_query(rows: str, mean: float, spread: float) -> str:
    """The feature rows in their fixed order, temperature standardized over the dataset (0 when
    every value is the same)."""
    z = f"round((temperature_c - {mean!r}) / {spread!r}, 6)" if spread else "0.0"
    columns = [f"{z} AS temperature_z" if n == "temperature_z" else n for n in FEATURE_SCHEMA.names]
    return (
        f"SELECT {', '.join(columns)} FROM {rows} "
        "ORDER BY station, timestamp, source_file, source_line"
    )


def _write_quarantine(db: duckdb.DuckDBPyConnection, rows: str, path: Path) -> int:
    """The quarantined rows in file and line order, as JSON Lines; returns how many."""
    count = 0
    cursor = db.execute(f"SELECT * FROM {rows} ORDER BY file, line")
    names = [d[0] for d in cursor.description]
    with atomic_path(path) as temp, temp.open("w", encoding="utf-8") as out:
        while chunk := cursor.fetchmany(BATCH_ROWS):
            for values in chunk:
                out.write(
                    json.dumps(dict(zip(names, values, strict=True)), ensure_ascii=False) + "\n"
                )
            count += len(chunk)
    return count


@step(memory_mb=MEMORY_MB, cache=True, reuse=reused)
def aggregate(
    payload: AggregatePayload, upstream: list[dict[str, Any]], ctx: StepContext
) -> AggregateResult:
    """Merge the partitions' features into one sorted Parquet file and their quarantines into
    one file, in the job's work directory, with the dataset statistics (reused from the cache
    when every partition's key and this code match an earlier run)."""
    started = time.time()
    parts = [PartitionResult.model_validate(part) for part in upstream]
    features_in = [fetch(ctx, p.rows_path) for p in parts]
    quarantine_in = [fetch(ctx, p.quarantine_path) for p in parts]
    work = work_dir(ctx.data_dir, ctx.job_id)
    features_path, quarantine_path = work / "features.parquet", work / "quarantine.jsonl"
    with connect(work) as db:
        bad = _write_quarantine(db, _source(quarantine_in, QUARANTINE_COLUMNS), quarantine_path)
        moments = dataset_moments(parts)
        temperature = moments["temperature_c"]
        mean, spread = temperature.mean_and_std() if temperature.rows else (0.0, 0.0)
        query = _feature_query(_features(db, features_in), mean, spread)
        stations = Runs("station")
        reader = stations.through(db.sql(query).to_arrow_reader(BATCH_ROWS))
        _, written = write_batches(reader, FEATURE_SCHEMA, features_path)
    stats = statistics(parts, moments, bad, stations.count)
    share(ctx, features_path, quarantine_path)
    merged_in = sum(part.rows for part in parts)
    fact = StepFact.since(ctx, CODE_VERSION, started, payload, rows_in=merged_in, rows_out=written)
    return AggregateResult(
        features_path=str(features_path),
        quarantine_path=str(quarantine_path),
        rows=written,
        quarantined=bad,
        statistics=stats,
        partitions=[part.summary() for part in parts],
        steps=[*merge_facts(f for part in parts for f in part.steps), fact],
    )
