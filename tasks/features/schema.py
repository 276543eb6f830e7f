"""The data contract: what a raw row must be, and the feature table's columns in their fixed
order (part of what makes the feature file byte-for-byte reproducible)."""

from __future__ import annotations

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, NaiveDatetime


class Reading(BaseModel):
    """One valid raw row. Unknown fields, NaN and infinities are errors, not data."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    station: str = Field(pattern=r"^[A-Z]\d{2}$")
    timestamp: NaiveDatetime  # local station time; an offset would make hours ambiguous
    temperature_c: float = Field(ge=-60, le=60)
    humidity_pct: float = Field(ge=0, le=100)
    wind_ms: float = Field(ge=0)


RAW_COLUMNS = tuple(Reading.model_fields)

# Where each feature row came from: row-level lineage, and the last sort key, so equal
# (station, timestamp) pairs from different files still sort the same way every run.
SOURCE_COLUMNS = ("source_file", "source_line")

FEATURE_SCHEMA = pa.schema(
    [
        ("station", pa.string()),
        ("timestamp", pa.timestamp("us")),
        ("temperature_c", pa.float64()),
        ("humidity_pct", pa.float64()),
        ("wind_ms", pa.float64()),
        ("temperature_f", pa.float64()),
        ("dew_point_c", pa.float64()),
        ("humidity_frac", pa.float64()),
        ("hour", pa.int8()),
        ("weekday", pa.int8()),
        ("temperature_z", pa.float64()),
        ("source_file", pa.string()),
        ("source_line", pa.int64()),
    ]
)

# A valid row as validate hands it on: the raw columns typed, and where it came from (the work
# files between steps are Parquet: typed, read back by transform and DuckDB without parsing).
VALID_SCHEMA = pa.schema([FEATURE_SCHEMA.field(name) for name in (*RAW_COLUMNS, *SOURCE_COLUMNS)])
# The columns the dataset statistics describe (mean, population standard deviation, min, max).
STATISTICS_COLUMNS = ("temperature_c", "humidity_pct", "wind_ms", "dew_point_c")
