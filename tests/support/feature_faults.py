"""Fault injection for the feature pipeline's integration tests, loaded by their worker through
JOBRUNNER_IMPORTS. The real `transform` step raises on rows from input files named `explode*`
(every attempt) or `flaky*` (a partition's first attempt only), so a test fails one partition of
the real pipeline without changing its code. Other files are transformed as usual."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pyarrow as pa
import redis

# The module, not the step function that tasks.features exports under the same name.
transform_module = importlib.import_module("jobrunner.tasks.features.transform")
ATTEMPTS = "test:flaky-attempts"  # Redis hash: source file -> attempts at its first row

_derive = transform_module.derive_features


def _attempt(source_file: str) -> int:
    client = redis.Redis.from_url(os.environ["JOBRUNNER_BROKER_URL"])
    return int(client.hincrby(ATTEMPTS, source_file, 1))


def derive_or_fail(rows: pa.Table) -> pa.Table:
    """transform's `derive_features` over a block of rows, failing as the module says."""
    for row in rows.select(["source_file", "source_line"]).to_pylist():
        name, line = Path(row["source_file"]).name, row["source_line"]
        if name.startswith("explode"):
            raise RuntimeError(f"injected fault at line {line}")
        if name.startswith("flaky") and line == 2 and _attempt(name) == 1:
            raise RuntimeError("injected fault, first attempt only")
    return _derive(rows)


transform_module.derive_features = derive_or_fail
