"""`jobrunner lineage`'s logic on records written by in-process runs of the feature pipeline: a
job's record, and the jobs behind a file, found by its content."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from jobrunner.worker.cli.lineage import render_lineage, render_output
from jobrunner.worker.monitoring.lineage import LineageError, find_by_output, lineage_of
from tests.support.features import run_features

A, B = "a" * 32, "b" * 32  # job ids in the client's format


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """Two jobs writing the same output name: the second reproduces the first's files."""
    data_dir = tmp_path_factory.mktemp("data")
    return data_dir, [run_features(data_dir, {"output_name": "x"}, job_id=j) for j in (A, B)]


def _printed(render: Any, data: dict[str, Any]) -> str:
    console = Console(record=True, width=240)
    render(data, console)
    return console.export_text()


def test_lineage_of_a_job(runs: tuple[Path, list[dict[str, Any]]]) -> None:
    data_dir, (first, _) = runs
    record = lineage_of(A, data_dir)
    assert record["output"]["sha256"] == first["sha256"]
    shown = _printed(render_lineage, record)
    for text in (
        f"job {A}",
        "features (version 1)",
        "readings_east.csv",
        "transform",
        first["sha256"],
    ):
        assert text in shown


@pytest.mark.parametrize(
    ("job_id", "error"),
    [
        ("c" * 32, r"no lineage record for job c{32} in .*/lineage"),
        ("nope", r"'nope' is not a job id"),
        ("../a", r"'\.\./a' is not a job id"),
    ],
)
def test_unknown_job(runs: tuple[Path, list[dict[str, Any]]], job_id: str, error: str) -> None:
    with pytest.raises(LineageError, match=error):
        lineage_of(job_id, runs[0])


def test_output_is_traced_to_every_job_that_wrote_its_content(
    runs: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    data_dir, (first, second) = runs
    copy = shutil.copy(first["path"], tmp_path / "renamed.parquet")
    found = find_by_output(Path(copy), data_dir)
    assert found["sha256"] == first["sha256"] == second["sha256"]
    assert [job["job_id"] for job in found["jobs"]] == [A, B]
    assert {job["written_as"] for job in found["jobs"]} == {"output"}
    assert found["jobs"][0]["inputs"] == lineage_of(A, data_dir)["inputs"]
    assert "written by" in _printed(render_output, found)
    quarantine = find_by_output(Path(first["quarantine_path"]), data_dir)
    assert quarantine["jobs"][0]["written_as"] == "quarantine"


def test_a_changed_or_missing_file_has_no_lineage(
    runs: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    changed = tmp_path / "changed.parquet"
    changed.write_bytes(Path(runs[1][0]["path"]).read_bytes() + b"\0")
    with pytest.raises(LineageError, match=r"no job recorded .* changed since"):
        find_by_output(changed, runs[0])
    with pytest.raises(LineageError, match="is not a file"):
        find_by_output(tmp_path / "missing.parquet", runs[0])


def test_one_file_of_a_partitioned_output_is_traced_to_its_job(tmp_path: Path) -> None:
    """A partitioned version's features are a folder; each of its files has its own lineage."""
    data_dir = tmp_path / "data"
    result = run_features(data_dir, {"output_name": "p", "partition_by": ["date"]}, job_id=A)
    assert len(result["partition_files"]) > 1
    store = data_dir / "features" / "p"
    part = result["partition_files"][1]
    found = find_by_output(store / part, data_dir)
    (job,) = found["jobs"]
    assert (job["job_id"], job["written_as"]) == (A, "partition")
    assert job["written_to"].endswith(f"/p/{part}")
    assert job["inputs"] == lineage_of(A, data_dir)["inputs"]
