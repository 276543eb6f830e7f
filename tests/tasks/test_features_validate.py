"""validate's block checks against the row model: on random and mutated CSV rows, the valid
rows, the quarantined rows and their reasons are exactly what `check_row` (schema.Reading) gives
row by row."""

from __future__ import annotations

import importlib
import json
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobrunner.tasks.features.columns import read_work
from jobrunner.tasks.features.formats import read
from jobrunner.tasks.features.partitions import Partition
from jobrunner.tasks.features.schema import RAW_COLUMNS
from tests.support.features import JOB_ID, inputs_under, run_step

# The module, not the step function that tasks.features exports under the same name.
validate = importlib.import_module("jobrunner.tasks.features.validate")

# Each field mostly in its plainest spelling, within, on or just past its bounds; else another
# spelling pydantic accepts, or one it refuses. Drawn with `random` from a seed hypothesis
# gives: hypothesis favours its simplest values, and the rows that matter here are the rare
# near-misses among many good ones.
ODD_STATION = ["e01", "E1", "E001", "E0\u0661", " E01", "", "\u00c901"]
ODD_STAMP = [
    "2026-06-01 00:00:00",
    "2026-06-01T00:00",
    "2026-06-01T00:00:00.5",
    "2026-02-29T00:00:00",
    "2026-06-31T00:00:00",
    "2026-06-01T24:00:00",
    "2026-06-01T23:59:60",
    "0000-01-01T00:00:00",
    "0999-01-01T00:00:00",
    "2026-06-01T00:00:00Z",
    "2026-06-01T00:00:00+02:00",
    "1780000000",
    "x",
    "",
]
ODD_NUMBER = ["1e1", " 5", "+5", "5.", ".5", "007", "-0", "nan", "inf", "1_0", "x", "", "9" * 400]
BOUNDS = {"temperature_c": (-60, 60), "humidity_pct": (0, 100), "wind_ms": (0, 30)}
ROWS = 2000


def _number(draw: random.Random, lowest: int, highest: int) -> str:
    if draw.random() < 0.3:  # on or just past a bound
        return f"{draw.choice([lowest, highest]) + draw.choice([-1, -0.5, 0, 0.5, 1]):g}"
    return f"{draw.uniform(lowest, highest):.{draw.randrange(4)}f}"


def _row(draw: random.Random) -> dict[str, str]:
    def field(plain: str, odd: list[str]) -> str:
        return draw.choice(odd) if draw.random() < 0.03 else plain

    stamp = datetime(2000, 1, 1) + timedelta(seconds=draw.randrange(2_000_000_000))
    return {
        "station": field(f"{draw.choice('AEZ')}{draw.randrange(100):02d}", ODD_STATION),
        "timestamp": field(stamp.isoformat(), ODD_STAMP),
        **{name: field(_number(draw, *bounds), ODD_NUMBER) for name, bounds in BOUNDS.items()},
    }


def _line(draw: random.Random, order: list[str], gaps: bool) -> str:
    """A row with its fields in the header's order; with `gaps`, sometimes a field short or
    over."""
    fields = [_row(draw)[name] for name in order]
    kind = draw.random() if gaps else 1.0
    return ",".join(fields[:4] if kind < 0.01 else [*fields, "1"] if kind < 0.02 else fields)


def _partition(tmp_path: Path, directory: Path) -> Partition:
    """The one partition ingest makes of the file in `directory`."""
    (partition,) = run_step("ingest", {"input_dir": str(directory)}, None, tmp_path, JOB_ID)
    return Partition.model_validate(partition)


def _row_by_row(partition: Partition, path: Path) -> tuple[list[Any], list[Any]]:
    valid, bad = [], []
    for record in read(
        path, "csv", partition.offset, partition.end, partition.first_line, partition.sha256
    ):
        checked = validate.check_row(record, partition.columns)
        if isinstance(checked, str):
            bad.append(validate.quarantined(partition, record, checked))
        else:
            valid.append({**checked, "source_file": partition.file, "source_line": record.line})
    return valid, bad


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**32))
@pytest.mark.parametrize("gaps", [True, False])
def test_block_checks_agree_with_the_row_model(tmp_path: Path, seed: int, gaps: bool) -> None:
    """With `gaps` (blank lines, rows with another field count), blocks are split line by line;
    without, pyarrow's CSV reader reads them (`csv_fields`): both must agree with the model."""
    draw = random.Random(seed)
    order = draw.sample(RAW_COLUMNS, len(RAW_COLUMNS))  # each row's fields in the header's order
    text = [
        _line(draw, order, gaps) if draw.random() > 0.01 or not gaps else "" for _ in range(ROWS)
    ]
    body = "".join(line + "\n" for line in text).encode()
    assert (validate.csv_fields(body, tuple(order)) is None) == gaps  # the path under test
    if draw.random() < 0.3:  # a quote: the partition is read row by row from there on
        text.insert(draw.randrange(ROWS), '"' + '","'.join(order) + '"')
    end = draw.choice(["\n", "\r\n"])
    directory = inputs_under(tmp_path, f"seed-{seed}")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "rows.csv"
    path.write_text(",".join(order) + end + "".join(line + end for line in text), newline="")
    partition = _partition(tmp_path, directory)
    valid_path, quarantine_path = tmp_path / "valid.arrow", tmp_path / "quarantine.jsonl"

    good, bad = validate._split(partition, path, valid_path, quarantine_path)

    expected_valid, expected_bad = _row_by_row(partition, path)
    assert read_work(valid_path).to_pylist() == expected_valid
    got_bad = [json.loads(line) for line in quarantine_path.read_text().splitlines()]
    assert got_bad == expected_bad
    assert (good, bad) == (len(expected_valid), len(expected_bad))


def test_blocks_the_csv_reader_would_not_read_as_written_are_split_by_lines() -> None:
    """pyarrow's reader reads a blank line as a row of empty fields and drops a leading byte
    order mark: such blocks are left to the line split, which keeps every line as written."""
    columns = ("station", "wind_ms")
    assert validate.csv_fields(b"E01,1\nE02,2\n", columns) is not None
    for data in [b"E01,1\n\nE02,2\n", b"\r\nE01,1\r\n", "\ufeffE01,1\n".encode(), b"E01\n"]:
        assert validate.csv_fields(data, columns) is None, data
