"""`transform`: per-partition feature engineering on valid rows.

Only what one row determines is computed here (unit conversion, dew point, a fixed-range
normalization, calendar fields); whatever needs the whole dataset (z-scores) waits for
`aggregate`, so the features never depend on how the input was partitioned.

A partition that fails is retried (`RETRY`, any error: the step rewrites its one output file
atomically, so a rerun is harmless); if it still fails, the job fails naming partition and file.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from jobrunner.tasks.features.cache import CachedPayload, CachedRun, cached, key
from jobrunner.tasks.features.columns import (
    joined,
    json_lines,
    json_numbers,
    json_strings,
    python_round,
    read_jsonl,
)
from jobrunner.tasks.features.files import atomic_path
from jobrunner.tasks.features.lineage import StepFact, source_hash
from jobrunner.tasks.features.partitions import PartitionResult, failures_named, partition_file
from jobrunner.tasks.features.shared import fetch
from jobrunner.tasks.retry import RetryPolicy
from jobrunner.tasks.step import StepContext, step

CODE_VERSION = source_hash(__name__)
RETRY = RetryPolicy(max_retries=2, backoff_s=0.5)


class TransformPayload(CachedPayload):
    pass


# What transform reads of validate's rows; the timestamp stays text (as validate wrote it) and
# is written on as it came.
VALID_SCHEMA = pa.schema(
    [
        ("station", pa.string()),
        ("timestamp", pa.string()),
        ("temperature_c", pa.float64()),
        ("humidity_pct", pa.float64()),
        ("wind_ms", pa.float64()),
        ("source_file", pa.string()),
        ("source_line", pa.int64()),
    ]
)


def dew_point_c(temperature_c: pa.Array, humidity_pct: pa.Array) -> pa.Array:
    """Magnus formula; humidity is floored at 0.1 % because the logarithm of 0 is undefined.
    Each operation in the order the scalar formula takes it, so the doubles are the same."""
    a, b = 17.62, 243.12
    gamma = pc.add(
        pc.ln(pc.divide(pc.max_element_wise(humidity_pct, 0.1), 100)),
        pc.divide(pc.multiply(a, temperature_c), pc.add(b, temperature_c)),
    )
    return pc.divide(pc.multiply(b, gamma), pc.subtract(a, gamma))


def derive_features(rows: pa.Table) -> pa.Table:
    """The rows (VALID_SCHEMA) with their derived columns added, rounded as Python's `round`."""
    temperature, humidity = rows["temperature_c"], rows["humidity_pct"]
    when = pc.cast(rows["timestamp"], pa.timestamp("us"))
    derived = {
        "temperature_f": python_round(pc.add(pc.divide(pc.multiply(temperature, 9), 5), 32), 2),
        "dew_point_c": python_round(dew_point_c(temperature, humidity), 2),
        "humidity_frac": python_round(pc.divide(humidity, 100), 4),
        "hour": pc.hour(when),
        "weekday": pc.day_of_week(when),  # Monday 0, as datetime.weekday
    }
    for name, values in derived.items():
        rows = rows.append_column(name, values)
    return rows


def _json(rows: pa.Table) -> bytes:
    """The feature rows as JSON Lines, columns in the order transform always wrote them."""
    text = {"station", "timestamp", "source_file"}
    whole = {"source_line", "hour", "weekday"}
    return joined(
        json_lines(
            {
                name: json_strings(values)
                if name in text
                else pc.cast(values, pa.string())
                if name in whole
                else json_numbers(values)
                for name, values in zip(rows.column_names, rows.columns, strict=True)
            }
        )
    )


@step(retry=RETRY, memory_mb=128)  # a block of rows in Arrow at a time (BLOCK bytes)
def transform(
    payload: TransformPayload, upstream: dict[str, Any], ctx: StepContext
) -> PartitionResult:
    """Derive the per-row features of one partition (reused from the cache when the same valid
    rows were transformed by the same code before)."""
    started = time.time()
    done = PartitionResult.model_validate(upstream)
    rows = fetch(ctx, done.rows_path)
    features = partition_file(ctx, done.partition, "features")
    digest = key("transform", CODE_VERSION, payload.key_params(), done.cache_key)

    def result(cached: bool) -> PartitionResult:
        fact = StepFact.since(
            ctx,
            CODE_VERSION,
            started,
            payload,
            rows_in=done.rows,
            rows_out=done.rows,
            cached=cached,
        )
        return done.model_copy(
            update={"rows_path": str(features), "steps": [*done.steps, fact], "cache_key": digest}
        )

    def compute() -> PartitionResult:
        with (
            failures_named(done.partition),
            atomic_path(features) as temp,
            temp.open("wb") as out,
        ):
            for block in read_jsonl(rows, VALID_SCHEMA):
                out.write(_json(derive_features(block)))
        return result(cached=False)

    return cached(
        CachedRun(
            ctx,
            payload,
            digest,
            {"features.jsonl": features},
            PartitionResult,
            compute,
            lambda _: result(cached=True),
        )
    )
