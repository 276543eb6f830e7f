"""The feature pipeline's cached steps (`@step(cache=True)`, entries in a real Redis): a rerun on
unchanged inputs reuses validate, transform and aggregate (marked in lineage) and publishes the
same bytes; a changed byte, parameter or `use_cache=False` recomputes exactly what it must."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from jobrunner.worker.store.step_cache import StepCache
from tests.support.features import csv_readings, inputs_under, run_features, write_inputs

FIRST, SECOND, THIRD = "1" * 32, "2" * 32, "3" * 32


def _cached(result: dict[str, Any]) -> tuple[int, ...]:
    """Runs reused from the cache, per step: ingest, validate, transform, aggregate, store."""
    assert [f["step"] for f in result["steps"]] == [
        "ingest",
        "validate",
        "transform",
        "aggregate",
        "store",
    ]
    return tuple(fact["cached"] for fact in result["steps"])


@pytest.fixture
def cache(redis_client: redis.Redis) -> StepCache:
    return StepCache(redis_client, 600, 600)


def _run(
    data_dir: Path, job: str, cache: StepCache, use_cache: bool = True, **payload: Any
) -> dict[str, Any]:
    inputs = inputs_under(data_dir)
    payload = {"input_dir": str(inputs), "partition_rows": 4, **payload}
    return run_features(data_dir, payload, job, cache, use_cache)


def test_a_rerun_reuses_every_cached_step_and_publishes_the_same_bytes(
    tmp_path: Path, cache: StepCache
) -> None:
    write_inputs(inputs_under(tmp_path), {"a.csv": csv_readings(10), "b.csv": csv_readings(3)})
    first = _run(tmp_path, FIRST, cache)
    assert _cached(first) == (0, 0, 0, 0, 0)
    again = _run(tmp_path, SECOND, cache)
    assert _cached(again) == (0, 4, 4, 1, 0)
    assert (again["sha256"], again["rows"]) == (first["sha256"], first["rows"])
    assert Path(again["path"]).read_bytes() == Path(first["path"]).read_bytes()
    record = json.loads(Path(again["lineage_path"]).read_text())
    assert {f["step"]: f["cached"] for f in record["steps"]}["aggregate"] == 1
    forced = _run(tmp_path, THIRD, cache, use_cache=False)
    assert _cached(forced) == (0, 0, 0, 0, 0)
    assert forced["sha256"] == first["sha256"]


def test_a_changed_byte_or_parameter_recomputes_what_depends_on_it(
    tmp_path: Path, cache: StepCache
) -> None:
    inputs = write_inputs(
        inputs_under(tmp_path), {"a.csv": csv_readings(8), "b.csv": csv_readings(3)}
    )
    first = _run(tmp_path, FIRST, cache)
    text = (inputs / "b.csv").read_text()
    (inputs / "b.csv").write_text(text.replace("E02,", "E07,"))
    changed = _run(tmp_path, SECOND, cache)
    # a.csv's two partitions are reused; b.csv's one is new, and so is everything after it.
    assert _cached(changed) == (0, 2, 2, 0, 0)
    assert changed["sha256"] != first["sha256"]
    stricter = _run(tmp_path, THIRD, cache, max_bad_row_rate=0.5)
    assert _cached(stricter) == (0, 0, 0, 0, 0)  # new valid rows: new keys all the way down
    assert stricter["sha256"] == changed["sha256"]
