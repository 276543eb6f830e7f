"""Rows as Arrow columns, for the steps that work on many rows at once (validate, transform):
the Parquet work files between steps, and Python's rounding."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# Parquet options of the work files between steps: fast to write and read, not kept.
WORK_PARQUET: dict[str, Any] = {"compression": "snappy", "use_dictionary": True}
WORK_BATCH_ROWS = 1 << 16  # rows a step reads from a work file at a time


def work_parquet(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A writer of a work file (`path` from files.atomic_path, which keeps its mode)."""
    return pq.ParquetWriter(path, schema, **WORK_PARQUET)


def work_batches(path: Path) -> Iterator[pa.Table]:
    """The rows of a work file, WORK_BATCH_ROWS at a time (bounded memory however long)."""
    with pq.ParquetFile(path) as found:
        for batch in found.iter_batches(batch_size=WORK_BATCH_ROWS):
            yield pa.Table.from_batches([batch])


def python_round(values: pa.Array, digits: int) -> pa.Array:
    """round(x, digits) for each x, bit for bit as Python's `round` (pc.round differs: it breaks
    ties on the scaled double, and leaves some values unrounded). Scales, rounds half to even,
    divides back (correctly rounded, like Python's decimal round trip); the rare values within
    rounding error of a tie are rounded by Python itself."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    scale = 10.0**digits
    scaled = pc.multiply(values, scale)
    out = pc.if_else(
        pc.greater_equal(pc.abs(scaled), 2.0**52),  # no fractional digits left: x itself
        values,
        pc.divide(pc.round(scaled, 0, round_mode="half_to_even"), scale),
    )
    distance = pc.abs(pc.subtract(pc.abs(pc.subtract(scaled, pc.floor(scaled))), 0.5))
    near_tie = pc.less_equal(distance, pc.add(pc.multiply(pc.abs(scaled), 1e-12), 1e-12))
    if not pc.any(near_tie).as_py():
        return out
    exact = [round(x, digits) for x in pc.filter(values, near_tie).to_pylist()]
    return pc.replace_with_mask(out, near_tie, pa.array(exact, pa.float64()))
