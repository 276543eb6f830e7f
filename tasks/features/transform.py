"""`transform`: per-partition feature engineering on valid rows.

Only what one row determines is computed here (unit conversion, dew point, a fixed-range
normalization, calendar fields); whatever needs the whole dataset (z-scores) waits for
`aggregate`, so the features never depend on how the input was partitioned.

A partition that fails is retried (`RETRY`, any error: the step rewrites its one output file
atomically, so a rerun is harmless); if it still fails, the job fails naming partition and file.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

from jobrunner.tasks.features.files import read_jsonl, write_jsonl
from jobrunner.tasks.features.lineage import StepFact, reused, source_hash
from jobrunner.tasks.features.partitions import PartitionResult, failures_named, partition_file
from jobrunner.tasks.features.shared import fetch, share
from jobrunner.tasks.retry import RetryPolicy
from jobrunner.tasks.step import StepContext, StepPayload, step

CODE_VERSION = source_hash(__name__)
RETRY = RetryPolicy(max_retries=2, backoff_s=0.5)


class TransformPayload(StepPayload):
    pass


def dew_point_c(temperature_c: float, humidity_pct: float) -> float:
    """Magnus formula; humidity is floored at 0.1 % because the logarithm of 0 is undefined."""
    a, b = 17.62, 243.12
    gamma = math.log(max(humidity_pct, 0.1) / 100) + a * temperature_c / (b + temperature_c)
    return b * gamma / (a - gamma)


def derive_features(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its derived columns added."""
    when = datetime.fromisoformat(row["timestamp"])
    return {
        **row,
        "temperature_f": round(row["temperature_c"] * 9 / 5 + 32, 2),
        "dew_point_c": round(dew_point_c(row["temperature_c"], row["humidity_pct"]), 2),
        "humidity_frac": round(row["humidity_pct"] / 100, 4),
        "hour": when.hour,
        "weekday": when.weekday(),
    }


@step(retry=RETRY, memory_mb=64, cache=True, reuse=reused)  # streams: one row at a time
def transform(
    payload: TransformPayload, upstream: dict[str, Any], ctx: StepContext
) -> PartitionResult:
    """Derive the per-row features of one partition (reused from the cache when the same valid
    rows were transformed by the same code before)."""
    started = time.time()
    done = PartitionResult.model_validate(upstream)
    rows = fetch(ctx, done.rows_path)
    features = partition_file(ctx, done.partition, "features")
    with failures_named(done.partition):
        write_jsonl(features, (derive_features(row) for row in read_jsonl(rows)))
    share(ctx, features)
    fact = StepFact.since(
        ctx, CODE_VERSION, started, payload, rows_in=done.rows, rows_out=done.rows
    )
    return done.model_copy(update={"rows_path": str(features), "steps": [*done.steps, fact]})
