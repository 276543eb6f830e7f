"""Pipelines compiled to chain, group, chord, nested chords and map run end to end on a real
worker; failures name the step, and a failed fan-out lists every failed member."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow.parquet as pq
import pytest

from jobrunner.worker.client import Client, JobError
from tests.conftest import Workers
from tests.support.sample_data import bad_rows, sample_files

pytestmark = pytest.mark.integration

TIMEOUT_S = 60


@pytest.fixture(scope="module", autouse=True)
def general(workers: Workers) -> Iterator[None]:
    workers.start("general", "general-canvas@test", JOBRUNNER_POOLS__GENERAL__CONCURRENCY="2")
    yield


@pytest.mark.parametrize(
    ("pipeline", "payload", "expected"),
    [
        ("chain3", {"start": 5}, 7),
        ("group_sum", {"start": 1}, 6),  # three parallel inc of 1
        ("chord_first", {"start": 4}, 8),  # the flow opens with a chord
        ("nested", {"start": 1}, 6),  # chord-in-chain: (1+1+1) + (1+1), then +1
        ("map_sum", {"count": 4}, 10),  # fan-out sized at run time: 1+2+3+4
        ("map_sum", {"count": 0}, 0),  # empty fan-out joins at once
    ],
)
def test_pipeline_result(client: Client, pipeline: str, payload: dict, expected: int) -> None:
    job = client.submit(pipeline, payload, tier="medium")
    assert job.result(timeout=TIMEOUT_S) == expected
    record = job.record()
    assert record.state == "SUCCESS"
    assert record.started_at is not None and record.finished_at is not None


def test_failing_step_fails_job_naming_step(client: Client) -> None:
    job = client.submit("fails", {"start": 1}, tier="low")
    with pytest.raises(JobError, match=r"step explode failed: RuntimeError: boom"):
        job.result(timeout=TIMEOUT_S)
    assert job.state == "FAILURE"


def test_failed_fan_out_lists_every_failed_member(client: Client) -> None:
    job = client.submit("map_sum", {"count": 10, "fail_on": [2, 5, 9]}, tier="high")
    record = job.wait(TIMEOUT_S)
    assert record.state == "FAILURE"
    assert "3 parallel member(s) failed" in (record.error or "")
    for item in (2, 5, 9):
        assert f"item {item} is bad" in (record.error or "")
    assert sorted(f["error"] for f in record.failures) == [
        f"ValueError: item {i} is bad" for i in (2, 5, 9)
    ]


def test_failed_static_group_lists_both_failed_members(client: Client) -> None:
    record = client.submit("group_fails", {"start": 1}).wait(TIMEOUT_S)
    assert record.state == "FAILURE"
    assert record.error is not None and record.error.startswith("2 parallel member(s) failed")
    assert [f["step"] for f in record.failures] == ["explode", "explode"]


def test_sample_feature_pipeline(client: Client) -> None:
    """The built-in pipeline's map fans out one partition per sample file; the thorough checks
    are in test_features_pipeline.py."""
    result = client.submit("features", {"output_name": "canvas-test"}).result(timeout=TIMEOUT_S)
    assert result["partitions"] == len(sample_files())
    assert result["quarantined"] == len(bad_rows())
    assert [step["runs"] for step in result["steps"]] == [1, 5, 5, 1, 1]
    assert pq.read_table(result["path"]).num_rows == result["rows"]
