"""`transform`: per-partition feature engineering on valid rows.

Only what one row determines is computed here (unit conversion, dew point, a fixed-range
normalization, calendar fields); whatever needs the whole dataset (z-scores) waits for
`aggregate`, so the features never depend on how the input was partitioned.

A partition that fails is retried (`RETRY`, any error: the step rewrites its one output file
atomically, so a rerun is harmless); if it still fails, the job fails naming partition and file.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from jobrunner.tasks.features.columns import (
    Moments,
    python_round,
    work_batches,
    work_writer,
    write_work,
)
from jobrunner.tasks.features.files import atomic_path
from jobrunner.tasks.features.lineage import StepFact, reused, source_hash
from jobrunner.tasks.features.partitions import PartitionResult, failures_named, partition_file
from jobrunner.tasks.features.schema import FEATURE_SCHEMA, STATISTICS_COLUMNS, VALID_SCHEMA
from jobrunner.tasks.features.shared import fetch, share
from jobrunner.tasks.retry import RetryPolicy
from jobrunner.tasks.step import StepContext, StepPayload, step

CODE_VERSION = source_hash(__name__)
RETRY = RetryPolicy(max_retries=2, backoff_s=0.5)
DERIVED = ("temperature_f", "dew_point_c", "humidity_frac", "hour", "weekday")


class TransformPayload(StepPayload):
    pass


# transform's work file: the valid rows and what one row determines (FEATURE_SCHEMA's
# columns but the dataset's z-score).
WORK_SCHEMA = pa.schema(
    [
        *VALID_SCHEMA,
        *(FEATURE_SCHEMA.field(name) for name in DERIVED),
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
    """The rows (VALID_SCHEMA) with their derived columns added (WORK_SCHEMA), rounded as
    Python's `round`."""
    temperature, humidity, when = rows["temperature_c"], rows["humidity_pct"], rows["timestamp"]
    derived = {
        "temperature_f": python_round(pc.add(pc.divide(pc.multiply(temperature, 9), 5), 32), 2),
        "dew_point_c": python_round(dew_point_c(temperature, humidity), 2),
        "humidity_frac": python_round(pc.divide(humidity, 100), 4),
        "hour": pc.cast(pc.hour(when), pa.int8()),
        "weekday": pc.cast(pc.day_of_week(when), pa.int8()),  # Monday 0, as datetime.weekday
    }
    for name, values in derived.items():
        rows = rows.append_column(name, values)
    return rows


@step(retry=RETRY, memory_mb=128, cache=True, reuse=reused)  # a block of rows in Arrow at a time
def transform(
    payload: TransformPayload, upstream: dict[str, Any], ctx: StepContext
) -> PartitionResult:
    """Derive the per-row features of one partition (reused from the cache when the same valid
    rows were transformed by the same code before)."""
    started = time.time()
    done = PartitionResult.model_validate(upstream)
    rows = fetch(ctx, done.rows_path)
    features = partition_file(ctx, done.partition, "features.arrow")
    moments = {name: Moments() for name in STATISTICS_COLUMNS}
    spans: list[datetime] = []  # each block's earliest and latest timestamp
    with (
        failures_named(done.partition),
        atomic_path(features) as temp,
        work_writer(temp, WORK_SCHEMA) as out,
    ):
        for block in work_batches(rows):
            derived = derive_features(block)
            write_work(out, derived)
            for name in STATISTICS_COLUMNS:
                moments[name] = moments[name] + Moments.of(derived[name])
            if derived.num_rows:
                spans.extend(pc.min_max(derived["timestamp"]).as_py().values())
    share(ctx, features)
    fact = StepFact.since(
        ctx, CODE_VERSION, started, payload, rows_in=done.rows, rows_out=done.rows
    )
    span = (min(spans), max(spans)) if spans else None
    update = {
        "rows_path": str(features),
        "steps": [*done.steps, fact],
        "moments": moments,
        "span": span,
    }
    return done.model_copy(update=update)
