"""Rows as Arrow columns: JSON Lines read and written a block at a time, and Python's rounding,
for the steps that work on many rows at once (validate, transform).

Why by hand rather than a JSON writer: pyarrow has none, and DuckDB's formats timestamps its own
way; building each line from columns with `binary_join_element_wise` keeps the work files in
the exact layout the row-at-a-time path writes, in C++.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from jobrunner.tasks.features.formats import BLOCK, line_blocks


def json_strings(values: pa.Array) -> pa.Array:
    """Each string as a JSON string (json.dumps, ensure_ascii=False), encoded once per distinct
    value: a column of station names has a handful."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(values)
    quoted = pa.array(
        [json.dumps(v, ensure_ascii=False) for v in encoded.dictionary.to_pylist()], pa.string()
    )
    return pc.take(quoted, encoded.indices)


def json_numbers(values: pa.Array) -> pa.Array:
    """Each float as a JSON number that reads back as the same float (Arrow writes the shortest
    such digits; a whole number gets ".0", as json.dumps writes it, so it stays a float)."""
    text = pc.cast(values, pa.string())
    whole = pc.match_substring_regex(text, r"^-?[0-9]+$")
    return pc.if_else(whole, pc.binary_join_element_wise(text, ".0", ""), text)


def json_lines(columns: dict[str, pa.Array]) -> pa.Array:
    """One JSON object per row, `{"name": value, ...}` in the order given, each value already
    JSON text (see json_strings, json_numbers), ending in a newline: json.dumps's layout."""
    parts: list[pa.Array | str] = []
    for i, (name, values) in enumerate(columns.items()):
        parts += [("{" if i == 0 else ", ") + json.dumps(name) + ": ", values]
    rows = pc.binary_join_element_wise(*parts, "}\n", "")
    return rows.combine_chunks() if isinstance(rows, pa.ChunkedArray) else rows


def joined(rows: pa.Array) -> bytes:
    """The strings of `rows` one after another, as bytes."""
    if len(rows) == 0:
        return b""
    whole = pa.ListArray.from_arrays(pa.array([0, len(rows)], pa.int32()), rows)
    return pc.binary_join(whole, "")[0].as_buffer().to_pybytes()


def read_jsonl(path: Path, schema: pa.Schema) -> Iterator[pa.Table]:
    """The rows of a JSON Lines file as tables of `schema`'s columns, a block at a time (bounded
    memory however long the file)."""
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    with path.open("rb") as handle:
        for block in line_blocks(handle, -1, BLOCK):
            yield pj.read_json(
                BytesIO(block),
                read_options=pj.ReadOptions(use_threads=False, block_size=len(block) + 1),
                parse_options=options,
            ).select(schema.names)


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
