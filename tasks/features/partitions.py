"""Partitions: the slices of input that run through validate → transform in parallel, what those
steps hand on, and errors that name the partition and file they came from.

Rows do not travel through Redis: a per-partition step writes them to the job's work directory
and its result carries only the path, counts and lineage facts (a few hundred bytes), so a
thousand partitions make a thousand small results, not the dataset in one chord message.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from jobrunner.tasks.features.columns import Moments
from jobrunner.tasks.features.lineage import PartitionSummary, StepFact
from jobrunner.tasks.features.paths import work_dir
from jobrunner.tasks.step import StepContext


class Partition(BaseModel):
    """Rows [offset, end) of one input file, starting at line `first_line`."""

    model_config = ConfigDict(frozen=True)

    index: int
    name: str  # the file, or file:first-last line for a row range
    file: str  # relative to the input directory: what features and lineage record
    path: str  # absolute, to read it; or the object's URL
    etag: str | None = None  # an object's ETag or version as ingest read it (`inputs`)
    format: str
    columns: tuple[str, ...]  # CSV header in file order; empty for JSON Lines
    offset: int
    end: int
    first_line: int
    rows: int
    sha256: str  # of bytes [offset, end) as ingest read them; validate reads only these


class PartitionResult(BaseModel):
    """What validate and transform hand on: where the partition's rows are now, and the facts."""

    partition: Partition
    rows_path: str
    quarantine_path: str
    rows: int
    quarantined: int
    steps: list[StepFact]
    # transform's: each statistics column's exact moments over the partition's rows, which
    # aggregate adds up (exact, so on any number of threads and for any partitioning)
    moments: dict[str, Moments] = {}
    # transform's: the earliest and latest timestamp of its rows (None without rows)
    span: tuple[datetime, datetime] | None = None

    def summary(self) -> PartitionSummary:
        return PartitionSummary(
            partition=self.partition.name,
            file=self.partition.file,
            first_line=self.partition.first_line,
            sha256=self.partition.sha256,
            rows_in=self.partition.rows,
            rows_out=self.rows,
            quarantined=self.quarantined,
        )


class PartitionError(RuntimeError):
    """A partition failed; the message names it and its file."""


@contextmanager
def failures_named(partition: Partition) -> Iterator[None]:
    """Re-raise any error as a PartitionError naming the partition and its file, so a failed job
    says where to look (a job's error otherwise names only the step)."""
    try:
        yield
    except PartitionError:
        raise
    except Exception as error:
        raise PartitionError(f"{describe(partition)}: {type(error).__name__}: {error}") from error


def describe(partition: Partition) -> str:
    return f"partition {partition.name} (file {partition.path})"


def partition_file(ctx: StepContext, partition: Partition, name: str) -> Path:
    """A work file of the partition: `valid.arrow`, `quarantine.jsonl`, `features.arrow`."""
    return work_dir(ctx.data_dir, ctx.job_id) / f"part-{partition.index:05d}.{name}"
