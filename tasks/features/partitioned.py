"""Partitioned outputs: the feature file split Hive-style by columns (`partition_by`), one
directory per value, `station=E01/date=2026-06-01/part-00000.parquet`, as Spark, DuckDB, pyarrow
and Trino read them.

One pass in bounded memory: DuckDB sorts the feature file by the partition directory, then by
the feature file's own order (station, timestamp, source file, source line), spilling past
`DUCKDB_MEMORY`; the sorted rows stream as Arrow batches, cut wherever the directory changes, and
each run goes through the feature file's pinned writer (`parquet.write_batches`). So each
partition's file holds exactly that partition's rows in one fixed order, written with the same
options: the same inputs give the same bytes, whatever else the dataset holds. Why not
`pyarrow.dataset.write_dataset`: it keeps a writer (and a row group's buffer) open per partition
seen, so its memory grows with the number of partitions, and its file names come from a counter
over the order batches arrive in. Why not DuckDB's `COPY ... PARTITION_BY`: DuckDB's own Parquet
writer would decide the bytes, not the pinned one the unpartitioned feature file uses.

As Hive does, a partition column lives in the path only, not in the file; `date` is derived
(the reading's calendar date) and exists only in the path.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from jobrunner.tasks.features.aggregate import BATCH_ROWS, connect
from jobrunner.tasks.features.parquet import write_batches
from jobrunner.tasks.features.schema import FEATURE_SCHEMA

# Column -> (its value in SQL, its type when read back). Each value is made of letters, digits
# and dashes only (station matches [A-Z]\d{2}), so it goes into a path as it is.
PARTITION_COLUMNS: dict[str, tuple[str, pa.DataType]] = {
    "station": ("station", pa.string()),
    "date": ("CAST(CAST(timestamp AS DATE) AS VARCHAR)", pa.date32()),
    "hour": ("CAST(hour AS VARCHAR)", pa.int8()),
    "weekday": ("CAST(weekday AS VARCHAR)", pa.int8()),
}
DUCKDB_MEMORY = "128MB"  # the sort's own limit; it spills to the work directory beyond it
PART_FILE = "part-00000.parquet"  # one file per partition (a row group at a time in memory)
DIRECTORY = "__partition"  # the sort key column, dropped before writing


def check_partition_by(columns: list[str]) -> list[str]:
    """Known columns, each once; else one line naming the offender and what is known."""
    for column in columns:
        if column not in PARTITION_COLUMNS:
            known = ", ".join(PARTITION_COLUMNS)
            raise ValueError(f"partition_by: unknown column {column!r} (known: {known})")
    if len(set(columns)) != len(columns):
        raise ValueError(f"partition_by: a column is named twice in {columns}")
    return columns


def file_schema(columns: list[str]) -> pa.Schema:
    """The columns a partition file holds: the features without the partition columns."""
    return pa.schema([f for f in FEATURE_SCHEMA if f.name not in columns])


@dataclass(frozen=True)
class PartFile:
    relative: str  # e.g. station=E01/date=2026-06-01/part-00000.parquet
    path: Path
    sha256: str
    rows: int


def _runs(batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Each batch cut where the partition directory changes: (directory, slice) pairs."""
    for batch in batches:
        directories = batch.column(DIRECTORY)
        if not len(directories):
            continue
        changes = pc.not_equal(directories[1:], directories[:-1])
        cuts = [0, *(i + 1 for i in pc.indices_nonzero(changes).to_pylist()), len(batch)]
        for start, end in itertools.pairwise(cuts):
            yield directories[start].as_py(), batch.slice(start, end - start)


def write_partitioned(source: Path, columns: list[str], target: Path) -> list[PartFile]:
    """Split the feature file `source` by `columns` into `target`/col=value/.../part-00000.parquet;
    returns the files in directory order. DuckDB spills to `target`'s parent."""
    schema = file_schema(check_partition_by(columns))
    directory = " || '/' || ".join(f"'{c}=' || {PARTITION_COLUMNS[c][0]}" for c in columns)
    quoted = "'" + str(source).replace("'", "''") + "'"
    query = (
        f"SELECT {', '.join(schema.names)}, {directory} AS {DIRECTORY} FROM read_parquet({quoted}) "
        f"ORDER BY {DIRECTORY}, station, timestamp, source_file, source_line"
    )
    written = []
    with connect(target.parent, DUCKDB_MEMORY) as db:
        reader = db.sql(query).to_arrow_reader(BATCH_ROWS)
        for name, run in itertools.groupby(_runs(reader), key=lambda pair: pair[0]):
            relative = f"{name}/{PART_FILE}"
            path = target / relative
            digest, rows = write_batches(
                (batch.select(schema.names) for _, batch in run), schema, path
            )
            written.append(PartFile(relative, path, digest, rows))
    return written


def partition_values(relative: str) -> dict[str, str]:
    """`col=value` directories of a partition file's path -> {col: value}."""
    return dict(part.split("=", 1) for part in relative.split("/")[:-1] if "=" in part)


def with_partition_columns(table: pa.Table, relative: str) -> pa.Table:
    """A partition file's rows with its partition columns put back (typed), as Hive readers do."""
    for column, value in partition_values(relative).items():
        kind = PARTITION_COLUMNS[column][1]
        table = table.append_column(
            pa.field(column, kind), pa.array([value] * table.num_rows, pa.string()).cast(kind)
        )
    return table
