"""The feature file's bytes: Parquet written by pyarrow with every option that shapes them
pinned, in row groups of a fixed number of rows, from a stream of record batches.

Row groups are cut by row count, never by how the batches arrived, so the file is the same
bytes however the rows were produced (partitioned or not, any batch size); and only one row
group is held at a time, so memory stays bounded however many rows there are. Nothing
time-dependent goes in: Parquet's `created_by` names only the library version.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobrunner.tasks.features.files import atomic_path, sha256_file

# Pinned rather than left to pyarrow's defaults, which may change between releases. Dictionary
# encoding only where values repeat (`dictionary_columns`): on floats and on unique line numbers
# it only cost time (5M feature rows: written in ~1 s instead of 2.1 s, and no larger).
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "version": "2.6",
    "data_page_version": "1.0",
    "write_statistics": True,
}
ROW_GROUP_ROWS = 1 << 17  # rows per row group: about 15 MB of features in memory at a time


def row_groups(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.Table]:
    """The rows of `batches` as tables of exactly ROW_GROUP_ROWS rows (the last may be short),
    cast to `schema`."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        while held >= ROW_GROUP_ROWS:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, ROW_GROUP_ROWS).cast(schema)
            rest = table.slice(ROW_GROUP_ROWS)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending).cast(schema)


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns written dictionary-encoded: text, timestamps and small integers (stations,
    hours, weekdays); not floats or 64-bit integers (line numbers, unique)."""
    kinds = (pa.types.is_string, pa.types.is_timestamp, pa.types.is_int8, pa.types.is_int16)
    return [field.name for field in schema if any(kind(field.type) for kind in kinds)]


def write_batches(
    batches: Iterable[pa.RecordBatch], schema: pa.Schema, path: Path
) -> tuple[str, int]:
    """Write the rows of `batches` to `path` atomically; returns the sha256 of the bytes written
    (hashed before the rename) and the row count."""
    rows = 0
    with atomic_path(path) as temp:
        with pq.ParquetWriter(
            temp, schema, use_dictionary=dictionary_columns(schema), **PARQUET_OPTIONS
        ) as writer:
            for table in row_groups(batches, schema):
                writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
                rows += table.num_rows
        return sha256_file(temp), rows


def write_parquet(table: pa.Table, path: Path) -> str:
    """Write `table` (in the feature file's layout); returns the sha256 of its bytes."""
    return write_batches(table.to_batches(), table.schema, path)[0]
