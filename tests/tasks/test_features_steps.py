"""The feature pipeline's steps, run in this process on temp files: quarantine, transform, the
failure threshold, ingest's errors, a reproducible feature file and a lineage record consistent
with the files it names. (tests/worker/test_features_pipeline.py runs them on real workers.)"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobrunner.tasks.features import SAMPLE_DATA_DIR
from jobrunner.tasks.features.columns import read_work
from jobrunner.tasks.features.files import read_jsonl, sha256_file
from jobrunner.tasks.features.formats import InputError
from jobrunner.tasks.features.parquet import write_batches, write_parquet
from jobrunner.tasks.features.partitions import PartitionError
from jobrunner.tasks.features.schema import FEATURE_SCHEMA, VALID_SCHEMA
from jobrunner.tasks.features.transform import derive_features
from tests.support.features import (
    CSV_HEADER,
    JOB_ID,
    check_lineage,
    check_quarantine,
    csv_readings,
    inputs_under,
    run_features,
    run_step,
    write_inputs,
)
from tests.support.sample_data import ROWS_PER_FILE, bad_rows, sample_files

SAMPLE_JOB = "5a3d1e0f9b7c4d2e8f6a1b3c5d7e9f00"


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    data_dir = tmp_path_factory.mktemp("data")
    return data_dir, run_features(data_dir, {"output_name": "sample"}, job_id=SAMPLE_JOB)


def test_shipped_sample_data_is_what_the_generator_makes() -> None:
    shipped = {p.name: p.read_text() for p in SAMPLE_DATA_DIR.iterdir()}
    assert shipped == {name: text for name, (text, _) in sample_files().items()}
    assert sum(len(text) for text in shipped.values()) < 200_000


def test_quarantine_holds_exactly_the_bad_rows_with_reasons(
    sample_run: tuple[Path, dict[str, Any]],
) -> None:
    _, result = sample_run
    check_quarantine(result["quarantine_path"])
    assert result["quarantined"] == len(bad_rows())


def test_features_are_every_good_row_in_a_fixed_order(
    sample_run: tuple[Path, dict[str, Any]],
) -> None:
    _, result = sample_run
    table = pq.read_table(result["path"])
    assert table.schema.equals(FEATURE_SCHEMA)
    total = ROWS_PER_FILE * len(sample_files())
    assert table.num_rows == result["rows"] == total - len(bad_rows())
    rows = table.to_pylist()
    keys = [(r["station"], r["timestamp"], r["source_file"], r["source_line"]) for r in rows]
    assert keys == sorted(keys)
    assert {r["source_file"] for r in rows} == set(sample_files())
    assert abs(sum(r["temperature_z"] for r in rows)) < 1e-3  # standardized over the dataset


def test_lineage_record_is_consistent_with_the_files(
    sample_run: tuple[Path, dict[str, Any]],
) -> None:
    data_dir, result = sample_run
    record = json.loads(Path(result["lineage_path"]).read_text())
    check_lineage(record, result)
    assert record["job_id"] == SAMPLE_JOB
    assert (record["pipeline"], record["pipeline_version"], record["tier"]) == (
        "features",
        "1",
        "medium",
    )
    assert [i["file"] for i in record["inputs"]] == sorted(sample_files())
    assert len(record["partitions"]) == result["partitions"] == len(sample_files())
    assert not (data_dir / "work" / SAMPLE_JOB).exists()


def test_rerun_writes_the_same_bytes(
    sample_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    _, first = sample_run
    again = run_features(tmp_path, {"output_name": "sample"}, job_id="a" * 32)
    assert Path(again["path"]).read_bytes() == Path(first["path"]).read_bytes()
    assert again["sha256"] == first["sha256"]
    assert again["steps"][1]["code_version"] == first["steps"][1]["code_version"]


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(partition_rows=st.integers(1, 400))
def test_partitioning_does_not_change_the_feature_file(
    sample_run: tuple[Path, dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
    partition_rows: int,
) -> None:
    _, whole_files = sample_run
    data_dir = tmp_path_factory.mktemp("ranges")
    # One bad row in a range of a few is over any threshold; the threshold is not the point here.
    payload = {"partition_rows": partition_rows, "max_bad_row_rate": 1.0}
    result = run_features(data_dir, payload)
    assert result["sha256"] == whole_files["sha256"]
    assert result["partitions"] == len(sample_files()) * -(-ROWS_PER_FILE // partition_rows)


def test_parquet_writer_is_deterministic_and_timeless(tmp_path: Path) -> None:
    (row,) = _derived(
        {
            "station": "E01",
            "timestamp": "2026-06-01T12:00:00",
            "temperature_c": 20.0,
            "humidity_pct": 50.0,
            "wind_ms": 1.0,
            "source_file": "a.csv",
            "source_line": 2,
        }
    )
    row = {**row, "temperature_z": 0.0}
    table = pa.Table.from_pylist([row] * 5, schema=FEATURE_SCHEMA)
    first, second = tmp_path / "1.parquet", tmp_path / "2.parquet"
    assert write_parquet(table, first) == sha256_file(first)
    batches = [table.slice(i, 1).to_batches()[0] for i in range(5)]  # arriving in pieces
    assert write_batches(batches, FEATURE_SCHEMA, second) == (sha256_file(first), 5)
    assert first.read_bytes() == second.read_bytes()
    metadata = pq.read_metadata(first)
    assert metadata.created_by.startswith("parquet-cpp-arrow version ")
    assert set(metadata.metadata) == {b"ARROW:schema"}  # nothing time-dependent besides
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def _derived(*rows: dict[str, Any]) -> list[dict[str, Any]]:
    """transform's features of `rows` (missing columns null)."""
    typed = [{**row, "timestamp": datetime.fromisoformat(row["timestamp"])} for row in rows]
    return derive_features(pa.Table.from_pylist(typed, schema=VALID_SCHEMA)).to_pylist()


def test_derived_columns() -> None:
    (row,) = _derived(
        {"timestamp": "2026-06-03T14:00:00", "temperature_c": 20.0, "humidity_pct": 100.0}
    )
    assert row["temperature_f"] == 68.0
    assert row["dew_point_c"] == 20.0  # saturated air: dew point is the temperature
    assert (row["humidity_frac"], row["hour"], row["weekday"]) == (1.0, 14, 2)


def _partition(tmp_path: Path, text: str) -> dict[str, Any]:
    directory = write_inputs(inputs_under(tmp_path), {"part.csv": text})
    (partition,) = run_step("ingest", {"input_dir": str(directory)}, None, tmp_path, JOB_ID)
    return partition


def test_too_many_bad_rows_fail_the_partition_naming_it_after_quarantining_them(
    tmp_path: Path,
) -> None:
    partition = _partition(tmp_path, csv_readings(1) + "E01,2026-06-01T01:00:00,15,60\n")
    with pytest.raises(PartitionError) as failed:
        run_step("validate", {"max_bad_row_rate": 0.4}, partition, tmp_path, JOB_ID)
    message = str(failed.value)
    assert message.startswith(f"partition part.csv (file {inputs_under(tmp_path) / 'part.csv'}): ")
    assert "1 of 2 rows are bad, over the 40% limit" in message
    quarantine = Path(message.rsplit("see ", 1)[1])
    assert list(read_jsonl(quarantine)) == [
        {
            "file": "part.csv",
            "line": 3,
            "partition": "part.csv",
            "reason": "expected 5 fields, got 4",
            "raw": "E01,2026-06-01T01:00:00,15,60",
        }
    ]
    passed = run_step("validate", {"max_bad_row_rate": 0.5}, partition, tmp_path, JOB_ID)
    assert (passed["rows"], passed["quarantined"]) == (1, 1)


def test_columns_may_come_in_any_order(tmp_path: Path) -> None:
    partition = _partition(
        tmp_path,
        "wind_ms,station,timestamp,temperature_c,humidity_pct\n"
        "2.5,E01,2026-06-01T00:00:00,15.5,60\n",
    )
    result = run_step("validate", {}, partition, tmp_path, JOB_ID)
    (row,) = read_work(result["rows_path"]).to_pylist()
    assert (row["station"], row["wind_ms"], row["source_line"]) == ("E01", 2.5, 2)


@pytest.mark.parametrize(
    ("files", "error"),
    [
        ({}, r"no input files matching '\*' in .*/in \(\.csv, \.jsonl\)"),
        ({"notes.txt": "x"}, r"notes\.txt: unsupported input format \(expected \.csv, \.jsonl"),
        ({"gone.csv": None}, r"cannot read input file .*/gone\.csv: No such file or directory"),
        ({"a.csv": CSV_HEADER, "b.csv": b"station\n\xff\n"}, r"b\.csv: line 2 is not UTF-8 text"),
        (
            {"a.csv": "station,time,temperature_c,humidity_pct,wind_ms,pressure\n"},
            r"a\.csv: header mismatch: missing timestamp; unexpected time, pressure "
            r"\(expected station, timestamp, temperature_c, humidity_pct, wind_ms\)",
        ),
        ({"a.csv": CSV_HEADER.strip() + ",wind_ms\n"}, r"header mismatch: repeated wind_ms"),
        ({"a.csv": ""}, r"a\.csv: no header line"),
    ],
    ids=["empty", "unsupported", "unreadable", "not-utf8", "header", "repeated", "blank"],
)
def test_bad_input_is_one_clear_error_and_nothing_is_written(
    tmp_path: Path, files: dict[str, str | bytes | None], error: str
) -> None:
    data_dir = tmp_path / "data"
    directory = write_inputs(inputs_under(data_dir), files)
    with pytest.raises(InputError, match=error):
        run_features(data_dir, {"input_dir": str(directory)})
    assert [p.name for p in data_dir.iterdir()] == ["inputs"]  # nothing written


def test_input_dir_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"input_dir .*/nowhere is not a directory"):
        run_step(
            "ingest", {"input_dir": str(inputs_under(tmp_path, "nowhere"))}, None, tmp_path, JOB_ID
        )


def test_pattern_selects_files_and_descends(tmp_path: Path) -> None:
    shutil.copytree(SAMPLE_DATA_DIR, inputs_under(tmp_path) / "2026" / "june")
    (inputs_under(tmp_path) / "README.md").write_text("not data")
    partitions = run_step(
        "ingest",
        {"input_dir": str(inputs_under(tmp_path)), "pattern": "**/*.csv", "partition_rows": 100},
        None,
        tmp_path,
        JOB_ID,
    )
    assert [p["name"] for p in partitions[:4]] == [
        "2026/june/readings_east.csv:2-101",
        "2026/june/readings_east.csv:102-201",
        "2026/june/readings_east.csv:202-301",
        "2026/june/readings_east.csv:302-337",
    ]
    assert len(partitions) == 16
    assert [p["index"] for p in partitions] == list(range(16))


def test_an_input_changed_after_ingest_fails_its_partition_naming_the_file(
    tmp_path: Path,
) -> None:
    """Lineage cannot name bytes the rows did not come from: validate hashes what it reads."""
    directory = write_inputs(inputs_under(tmp_path), {"a.csv": csv_readings(6)})
    partitions = run_step(
        "ingest", {"input_dir": str(directory), "partition_rows": 3}, None, tmp_path, JOB_ID
    )
    path = directory / "a.csv"
    same_size = path.read_text().replace("E04,", "E05,")  # in the second range only
    path.write_text(same_size)
    first = run_step("validate", {}, partitions[0], tmp_path, JOB_ID)  # untouched bytes: fine
    assert first["rows"] == 3
    with pytest.raises(PartitionError) as failed:
        run_step("validate", {}, partitions[1], tmp_path, JOB_ID)
    message = str(failed.value)
    assert message.startswith(f"partition a.csv:5-7 (file {path}): InputError: bytes ")
    assert "changed since ingest hashed them" in message
    assert "\n" not in message
    lineage = [p["sha256"] for p in partitions]
    assert len(set(lineage)) == 2 and all(len(digest) == 64 for digest in lineage)
