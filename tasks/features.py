"""The sample feature pipeline's steps: ingest CSV partitions, validate rows (bad ones are
quarantined with a reason), transform each partition, aggregate into features, store them.

Declared in config/pipelines/features.toml; `jobrunner demo` runs it at every tier.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import tempfile
from datetime import datetime
from pathlib import Path
from statistics import fmean, pstdev
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from tasks.step import StepContext, StepPayload, step

SAMPLE_DATA_DIR = Path(__file__).with_name("sample_data")


class Reading(BaseModel):
    """One valid input row."""

    station: str = Field(pattern=r"^[A-Z]\d{2}$")
    timestamp: datetime
    temperature_c: float = Field(ge=-60, le=60)
    humidity_pct: float = Field(ge=0, le=100)
    wind_ms: float = Field(ge=0)


class IngestPayload(StepPayload):
    input_dir: str = str(SAMPLE_DATA_DIR)
    pattern: str = "*.csv"


class ValidatePayload(StepPayload):
    max_bad_row_rate: float = Field(default=0.2, ge=0, le=1)


class StorePayload(StepPayload):
    output_name: str = Field(default="features", pattern=r"^[A-Za-z0-9_\-]{1,64}$")


class NoPayload(StepPayload):
    pass


@step
def ingest(payload: IngestPayload, upstream: Any, ctx: StepContext) -> list[dict[str, str]]:
    """One partition per input file, in name order."""
    directory = Path(payload.input_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"input_dir {directory} is not a directory")
    files = sorted(directory.glob(payload.pattern))
    if not files:
        raise FileNotFoundError(f"no files matching {payload.pattern!r} in {directory}")
    return [{"partition": path.stem, "file": str(path)} for path in files]


def _reason(error: ValidationError) -> str:
    first = error.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"


@step
def validate(
    payload: ValidatePayload, upstream: dict[str, str], ctx: StepContext
) -> dict[str, Any]:
    """Split a partition into valid rows and quarantined rows (line number and reason)."""
    path = Path(upstream["file"])
    rows: list[dict[str, Any]] = []
    quarantined: list[dict[str, Any]] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        expected = list(Reading.model_fields)
        if reader.fieldnames != expected:
            raise ValueError(f"{path.name}: header {reader.fieldnames} != {expected}")
        for line, raw in enumerate(reader, start=2):
            try:
                rows.append(Reading.model_validate(raw).model_dump(mode="json"))
            except ValidationError as error:
                quarantined.append({"file": path.name, "line": line, "reason": _reason(error)})
    total = len(rows) + len(quarantined)
    if total and len(quarantined) / total > payload.max_bad_row_rate:
        raise ValueError(
            f"{path.name}: {len(quarantined)} of {total} rows are bad, "
            f"over the {payload.max_bad_row_rate:.0%} limit"
        )
    return {"partition": upstream["partition"], "rows": rows, "quarantined": quarantined}


def _dew_point_c(temperature_c: float, humidity_pct: float) -> float:
    """Magnus formula."""
    a, b = 17.62, 243.12
    gamma = math.log(max(humidity_pct, 0.1) / 100) + a * temperature_c / (b + temperature_c)
    return b * gamma / (a - gamma)


@step
def transform(payload: NoPayload, upstream: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Derived columns per row: Fahrenheit, dew point, hour of day."""
    rows = [
        {
            **row,
            "temperature_f": round(row["temperature_c"] * 9 / 5 + 32, 2),
            "dew_point_c": round(_dew_point_c(row["temperature_c"], row["humidity_pct"]), 2),
            "hour": datetime.fromisoformat(row["timestamp"]).hour,
        }
        for row in upstream["rows"]
    ]
    return {**upstream, "rows": rows}


@step
def aggregate(
    payload: NoPayload, upstream: list[dict[str, Any]], ctx: StepContext
) -> dict[str, Any]:
    """Merge partitions in a fixed order and add a dataset-wide temperature z-score."""
    rows = sorted(
        (row for part in upstream for row in part["rows"]),
        key=lambda row: (row["station"], row["timestamp"]),
    )
    temperatures = [row["temperature_c"] for row in rows]
    mean = fmean(temperatures) if rows else 0.0
    spread = pstdev(temperatures) if len(rows) > 1 else 0.0
    for row in rows:
        row["temperature_z"] = round((row["temperature_c"] - mean) / spread, 4) if spread else 0.0
    quarantined = [bad for part in upstream for bad in part["quarantined"]]
    return {
        "rows": rows,
        "quarantined": quarantined,
        "partitions": [part["partition"] for part in upstream],
        "stats": {"rows": len(rows), "temperature_mean_c": round(mean, 4)},
    }


def write_csv_atomically(path: Path, rows: list[dict[str, Any]]) -> str:
    """Write to a temp file beside `path`, then rename: readers never see half a file.

    Returns the file's sha256.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            if rows:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return hashlib.sha256(path.read_bytes()).hexdigest()


@step
def store(payload: StorePayload, upstream: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Write the feature set and the quarantine beside it under <data_dir>/features/."""
    out_dir = ctx.data_dir / "features"
    features = out_dir / f"{payload.output_name}.csv"
    quarantine = out_dir / f"{payload.output_name}.quarantine.csv"
    digest = write_csv_atomically(features, upstream["rows"])
    write_csv_atomically(quarantine, upstream["quarantined"])
    return {
        "path": str(features),
        "sha256": digest,
        "rows": len(upstream["rows"]),
        "quarantined": len(upstream["quarantined"]),
        "quarantine_path": str(quarantine),
        "partitions": upstream["partitions"],
    }
