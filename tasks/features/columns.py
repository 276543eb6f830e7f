"""Rows as Arrow columns, for the steps that work on many rows at once (validate, transform):
the Arrow work files between steps, and Python's rounding."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

# The work files between validate, transform and aggregate: Arrow IPC (Feather v2), LZ4-compressed
# batches. Measured against the Parquet (snappy, dictionary) work files they replace, on 500k
# feature rows: written ~3x faster, read ~2-5x faster (a memory map, no decoding but LZ4), about
# twice the size. They are read back by the next step only, never kept.
WORK_IPC = pa.ipc.IpcWriteOptions(compression="lz4")
WORK_BATCH_ROWS = 1 << 16  # rows a step reads from a work file at a time


def work_writer(path: Path, schema: pa.Schema) -> pa.ipc.RecordBatchFileWriter:
    """A writer of a work file (`path` from files.atomic_path, which keeps its mode)."""
    return pa.ipc.new_file(path, schema, options=WORK_IPC)


def write_work(writer: pa.ipc.RecordBatchFileWriter, table: pa.Table) -> None:
    """Append `table` to a work file in batches of WORK_BATCH_ROWS, the most a reader holds."""
    writer.write_table(table, max_chunksize=WORK_BATCH_ROWS)


def work_batches(path: Path) -> Iterator[pa.Table]:
    """The rows of a work file, a few batches at a time (bounded memory however long)."""
    with pa.memory_map(str(path)) as mapped:
        found = pa.ipc.open_file(mapped)
        for index in range(found.num_record_batches):
            yield pa.Table.from_batches([found.get_batch(index)])


def read_work(path: Path) -> pa.Table:
    """A whole work file (tests; a step reads `work_batches`)."""
    with pa.memory_map(str(path)) as mapped:
        return pa.ipc.open_file(mapped).read_all()


def work_reader(paths: list[Path], schema: pa.Schema) -> pa.RecordBatchReader:
    """Work files one batch at a time, in order, as one stream (for DuckDB, which reads Arrow
    streams, not Arrow IPC files). A stream, not a pyarrow dataset: a dataset scan reads ahead
    several files and batches at once (~600 MB more peak RSS measured at 200 MB of input)."""
    batches = (
        batch for path in paths for table in work_batches(path) for batch in table.to_batches()
    )
    return pa.RecordBatchReader.from_batches(schema, batches)


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


# An exact sum of float64s, in integers: each finite double is ±m·2^(e-1075), m < 2^53. Its
# mantissa is cut into pieces of at most 18 bits (a·2^36 + b·2^18 + c), so the pieces, their
# products and their sums over a batch (at most `EXACT_BATCH_ROWS` rows) all fit in int64 and
# pyarrow adds them exactly, grouped by exponent; Python's integers do the rest. Exact means the
# order of addition cannot matter: any partitioning, any thread count, the same bits.
PIECE_BITS = 18
PIECE = (1 << PIECE_BITS) - 1
EXACT_BATCH_ROWS = 1 << 24  # pieces' products < 2^37: 2^26 of them fit in int64, with margin
SUM_SCALE, SQUARES_SCALE = 1074, 2148  # every double is a multiple of 2^-1074, its square 2^-2148


def _signed(value: float) -> tuple[float, float]:
    """An order on doubles that puts -0.0 before 0.0, so the extremes of values holding both
    zeros do not depend on which came first (the partitioning)."""
    return value, math.copysign(1.0, value)


def _either(a: float | None, b: float | None, pick: Callable[..., float]) -> float | None:
    return a if b is None else b if a is None else pick(a, b, key=_signed)


class Moments(BaseModel):
    """A column's count, sum and sum of squares over some rows, exactly (each a fraction, as
    text: `p/q`), and its least and greatest value, so partitions' moments add up to the
    dataset's whatever the partitioning (aggregate then needs no pass over the rows)."""

    rows: int = 0
    sum: str = "0"
    squares: str = "0"
    low: float | None = None  # None without rows
    high: float | None = None

    @classmethod
    def of(cls, values: pa.Array | pa.ChunkedArray) -> Moments:
        total, squares = exact_sums(values)
        extremes = pc.min_max(values)
        low, high = extremes["min"].as_py(), extremes["max"].as_py()
        if low == 0.0 or high == 0.0:  # which zero min_max returns depends on the order
            zeros = {_signed(z) for z in pc.filter(values, pc.equal(values, 0.0)).to_pylist()}
            low, high = (
                (min(zeros)[0] if low == 0.0 else low),
                (max(zeros)[0] if high == 0.0 else high),
            )
        return cls(
            rows=len(values),
            sum=str(Fraction(total, 1 << SUM_SCALE)),
            squares=str(Fraction(squares, 1 << SQUARES_SCALE)),
            low=low,
            high=high,
        )

    def __add__(self, other: Moments) -> Moments:
        return Moments(
            rows=self.rows + other.rows,
            sum=str(Fraction(self.sum) + Fraction(other.sum)),
            squares=str(Fraction(self.squares) + Fraction(other.squares)),
            low=_either(self.low, other.low, min),
            high=_either(self.high, other.high, max),
        )

    def mean_and_std(self) -> tuple[float, float]:
        """The mean and the population standard deviation, each correctly rounded from the
        exact values (the square root of the correctly rounded variance)."""
        mean = Fraction(self.sum) / self.rows
        variance = Fraction(self.squares) / self.rows - mean * mean
        return float(mean), math.sqrt(float(variance))


def exact_sums(values: pa.Array | pa.ChunkedArray) -> tuple[int, int]:
    """Σx·2^SUM_SCALE and Σx²·2^SQUARES_SCALE over finite float64 `values`, as exact integers."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    total = squares = 0
    for start in range(0, len(values), EXACT_BATCH_ROWS):
        sums = _exact_batch(values.slice(start, EXACT_BATCH_ROWS))
        for exponent, a, b, c, aa, ab, bb_ac, bc, cc in zip(*sums.values(), strict=True):
            total += ((a << 2 * PIECE_BITS) + (b << PIECE_BITS) + c) << (exponent - 1)
            pieces = (aa << 72) + (ab << 54) + (bb_ac << 36) + (bc << 18) + cc
            squares += pieces << (2 * exponent - 2)
    return total, squares


def _exact_batch(values: pa.Array) -> dict[str, list[int]]:
    bits = pa.Array.from_buffers(pa.int64(), len(values), values.buffers(), offset=values.offset)
    exponent = pc.shift_right(pc.bit_wise_and(bits, 0x7FF0000000000000), 52)
    if pc.any(pc.equal(exponent, 0x7FF)).as_py():
        raise ValueError("an infinite or NaN value has no exact sum")
    mantissa = pc.bit_wise_and(bits, (1 << 52) - 1)
    mantissa = pc.if_else(pc.greater(exponent, 0), pc.bit_wise_or(mantissa, 1 << 52), mantissa)
    a = pc.shift_right(mantissa, 2 * PIECE_BITS)
    b = pc.bit_wise_and(pc.shift_right(mantissa, PIECE_BITS), PIECE)
    c = pc.bit_wise_and(mantissa, PIECE)
    negative = pc.less(bits, 0)

    def signed(piece: pa.Array) -> pa.Array:
        return pc.if_else(negative, pc.negate(piece), piece)

    pieces = pa.table(
        {
            "exponent": pc.max_element_wise(exponent, 1),  # subnormals: 2^(1-1075) too
            "a": signed(a),
            "b": signed(b),
            "c": signed(c),
            "aa": pc.multiply(a, a),
            "ab": pc.multiply(pc.multiply(a, b), 2),
            "bb_ac": pc.add(pc.multiply(b, b), pc.multiply(pc.multiply(a, c), 2)),
            "bc": pc.multiply(pc.multiply(b, c), 2),
            "cc": pc.multiply(c, c),
        }
    )
    names = pieces.column_names[1:]
    grouped = pieces.group_by("exponent", use_threads=False).aggregate([(n, "sum") for n in names])
    return {name: grouped[name].to_pylist() for name in ["exponent", *(f"{n}_sum" for n in names)]}
