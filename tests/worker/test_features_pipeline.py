"""The feature pipeline on a real worker: the sample data end to end with its lineage, a rerun
that writes the same bytes, a failing partition retried and then named in the job's error, bad
input stopped at ingest with nothing in the feature store, and a thousand partitions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobrunner.config import get_settings
from jobrunner.tasks.features.transform import RETRY
from jobrunner.worker.client import Client
from jobrunner.worker.monitoring.lineage import LineageError, find_by_output, lineage_of
from tests.conftest import Workers
from tests.support.features import (
    check_lineage,
    check_quarantine,
    csv_readings,
    inputs_under,
    write_inputs,
)
from tests.support.sample_data import ROWS_PER_FILE, bad_rows, sample_files

pytestmark = pytest.mark.integration

TIMEOUT_S = 60


@pytest.fixture(scope="module", autouse=True)
def general(workers: Workers) -> Iterator[None]:
    workers.start(
        "general",
        "general-features@test",
        JOBRUNNER_POOLS__GENERAL__CONCURRENCY="2",
        JOBRUNNER_IMPORTS="tests.support.steps,tests.support.feature_faults",
    )
    yield


def _inputs(tmp_path: Path) -> Path:
    """A fresh input directory under the workers' input root (<data_dir>/inputs)."""
    return inputs_under(get_settings().data_dir, tmp_path.name)


def _feature_store() -> Path:
    return get_settings().data_dir / "features"


def test_sample_data_end_to_end(client: Client) -> None:
    job = client.submit("features", {"output_name": "end-to-end"}, tier="high")
    result = job.result(timeout=TIMEOUT_S)
    rows = ROWS_PER_FILE * len(sample_files())
    assert pq.read_table(result["path"]).num_rows == result["rows"] == rows - len(bad_rows())
    published = _feature_store().resolve() / "end-to-end" / "data" / f"{result['sha256']}.parquet"
    assert result["path"] == str(published)
    check_quarantine(result["quarantine_path"])
    record = lineage_of(job.id)
    check_lineage(record, result)
    assert (record["job_id"], record["pipeline"], record["tier"]) == (job.id, "features", "high")
    assert [p["partition"] for p in record["partitions"]] == sorted(sample_files())


def test_rerun_writes_a_byte_identical_feature_file(client: Client) -> None:
    jobs, files = [], []
    for _ in range(2):
        jobs.append(client.submit("features", {"output_name": "rerun"}))
        result = jobs[-1].result(timeout=TIMEOUT_S)
        files.append((Path(result["path"]).read_bytes(), result["sha256"]))
    assert files[0] == files[1]
    writers = [job["job_id"] for job in find_by_output(Path(result["path"]))["jobs"]]
    assert {job.id for job in jobs} <= set(writers)


def test_failing_transform_is_retried_then_fails_the_job_naming_partition_and_file(
    client: Client, tmp_path: Path
) -> None:
    # tests/support/feature_faults.py makes transform raise on every row of explode*.
    inputs = write_inputs(
        _inputs(tmp_path), {"fine.csv": csv_readings(5), "explode.csv": csv_readings(5)}
    )
    job = client.submit("features", {"input_dir": str(inputs), "output_name": "exploded"})
    record = job.wait(TIMEOUT_S)
    assert record.state == "FAILURE"
    assert f"partition explode.csv (file {inputs / 'explode.csv'})" in (record.error or "")
    assert "RuntimeError: injected fault at line 2" in (record.error or "")
    assert [failure["step"] for failure in record.failures] == ["transform"]
    assert record.retries == RETRY.max_retries
    assert list(_feature_store().glob("exploded*")) == []
    with pytest.raises(LineageError):
        lineage_of(job.id)


def test_transform_failing_once_is_retried_and_the_job_succeeds(
    client: Client, tmp_path: Path
) -> None:
    # feature_faults fails a flaky* partition on its first attempt only.
    inputs = write_inputs(_inputs(tmp_path), {f"flaky-{uuid.uuid4().hex}.csv": csv_readings(5)})
    job = client.submit("features", {"input_dir": str(inputs)})
    assert job.result(timeout=TIMEOUT_S)["rows"] == 5
    assert job.record().retries == 1
    transform = next(fact for fact in lineage_of(job.id)["steps"] if fact["step"] == "transform")
    assert transform["runs"] == 1  # the attempt that succeeded


@pytest.mark.parametrize(
    ("files", "error"),
    [
        ({}, "no input files matching '*' in {inputs}"),
        ({"a.csv": csv_readings(3), "b.csv": None}, "cannot read input file {inputs}/b.csv"),
        (
            {"a.csv": csv_readings(3).replace("wind_ms", "wind")},
            "{inputs}/a.csv: header mismatch: missing wind_ms; unexpected wind",
        ),
    ],
    ids=["empty", "unreadable", "header"],
)
def test_bad_input_fails_at_ingest_and_writes_nothing(
    client: Client, tmp_path: Path, files: dict[str, str | None], error: str
) -> None:
    inputs = write_inputs(_inputs(tmp_path), files)
    name = f"bad-{tmp_path.name}"
    job = client.submit("features", {"input_dir": str(inputs), "output_name": name})
    record = job.wait(TIMEOUT_S)
    assert record.state == "FAILURE"
    assert f"InputError: {error.format(inputs=inputs)}" in (record.error or "")
    assert [failure["step"] for failure in record.failures] == ["ingest"]
    assert list(_feature_store().glob(f"{name}*")) == []
    assert not (get_settings().data_dir / "work" / job.id).exists()


def test_a_thousand_partitions(client: Client, tmp_path: Path) -> None:
    inputs = write_inputs(_inputs(tmp_path), {"many.csv": csv_readings(1000)})
    payload = {"input_dir": str(inputs), "partition_rows": 1, "output_name": "thousand"}
    job = client.submit("features", payload)
    result = job.result(timeout=120)
    assert (result["partitions"], result["rows"], result["quarantined"]) == (1000, 1000, 0)
    record = lineage_of(job.id)
    check_lineage(record, result)
    assert record["partitions"][999]["partition"] == "many.csv:1001-1001"
