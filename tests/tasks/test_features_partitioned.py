"""Partitioned outputs (`partition_by`), on a local directory and on a real S3-compatible server:
Hive-style files, the same bytes on a rerun, read back whole, rollback restoring the previous
partition set; an unknown column refused in one line at submission."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobrunner.config import PIPELINES_DIR, get_settings
from jobrunner.tasks.errors import PayloadError
from jobrunner.tasks.features.objects import Root, open_root
from jobrunner.tasks.features.versions import current, read_features, rollback, versions
from jobrunner.tasks.pipeline import load_pipeline_file
from jobrunner.worker.client import validate_payload
from tests.support.features import csv_readings, inputs_under, run_features, write_inputs

BY = ["weekday", "date"]  # two levels; 7 partitions of the hourly readings


@pytest.fixture(params=["local", "s3"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Root]:
    if request.param == "local":
        url = str(tmp_path / "store")
    else:
        url = f"s3://{request.getfixturevalue('s3_bucket')}/store"
    monkeypatch.setenv("JOBRUNNER_DATA__STORE_URL", url)
    get_settings.cache_clear()
    yield open_root(url)
    monkeypatch.undo()
    get_settings.cache_clear()


def _run(data_dir: Path, rows: int, job: str, **payload: object) -> dict[str, object]:
    inputs = write_inputs(inputs_under(data_dir), {"a.csv": csv_readings(rows)})
    return run_features(data_dir, {"input_dir": str(inputs), "output_name": "p", **payload}, job)


def test_partitioned_output_is_hive_style_identical_on_rerun_and_rolls_back(
    store: Root, tmp_path: Path
) -> None:
    first = _run(tmp_path / "one", 150, "a" * 32, partition_by=BY, partition_rows=40)
    again = _run(tmp_path / "two", 150, "b" * 32, partition_by=BY)  # cut differently
    v1, v2 = versions(store, "p")
    assert first["path"] == again["path"] == store.where(f"p/{v1.features.file}")
    assert v1.partitions == v2.partitions  # same names, same sha256 for each partition
    files = [part.file for part in v1.partitions]
    assert files[0] == f"{v1.features.file}weekday=0/date=2026-06-01/part-00000.parquet"
    assert len(files) == 7  # 150 hourly readings: 7 days, 2026-06-01 a Monday
    for part in v1.partitions:  # each file's bytes are what the commit says
        with store.open(f"p/{part.file}") as handle:
            table = pq.read_table(handle)
        assert "weekday" not in table.column_names and table.num_rows == part.rows
    whole = read_features(store, v1)
    assert whole.num_rows == v1.features.rows == 150
    assert sorted(whole.column("source_line").to_pylist()) == list(range(2, 152))
    assert {str(d) for d in whole.column("date").to_pylist()} == {
        "2026-06-01",
        "2026-06-02",
        "2026-06-03",
        "2026-06-04",
        "2026-06-05",
        "2026-06-06",
        "2026-06-07",
    }
    _run(tmp_path / "three", 30, "c" * 32, partition_by=["hour"])
    assert current(store, "p").partition_by == ["hour"]
    back = rollback(store, "p", 2)
    assert (back.partition_by, back.partitions) == (BY, v1.partitions)
    assert read_features(store, current(store, "p")).equals(whole)


def test_an_unknown_partition_column_is_refused_at_submission_in_one_line() -> None:
    pipeline = load_pipeline_file(PIPELINES_DIR / "features.toml")
    with pytest.raises(PayloadError) as refused:
        validate_payload(pipeline, {"partition_by": ["station", "nope"]}, 65536)
    message = str(refused.value)
    assert "partition_by: unknown column 'nope' (known: station, date, hour, weekday)" in message
    assert "\n" not in message
