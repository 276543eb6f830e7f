"""ingest's remembered scans (`pins`): an input file whose pin (inode, size, times) is unchanged
is not read again, a changed or unsettled one is, and lineage still cannot lie."""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobrunner.tasks.features import pins
from jobrunner.tasks.features.formats import Scan
from jobrunner.tasks.features.partitions import PartitionError
from tests.support.features import JOB_ID, csv_readings, inputs_under, run_step, write_inputs

ingest = importlib.import_module("jobrunner.tasks.features.ingest")


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files ingest actually read, in order."""
    read: list[Path] = []
    real: Callable[..., Scan] = ingest.scan

    def counted(path: Path, *args: Any) -> Scan:
        read.append(path)
        return real(path, *args)

    monkeypatch.setattr(ingest, "scan", counted)
    return read


def _ingest(data_dir: Path, directory: Path, use_cache: bool = True) -> list[dict[str, Any]]:
    payload = {"input_dir": str(directory), "partition_rows": 3}
    partitions: list[dict[str, Any]] = run_step(
        "ingest", payload, None, data_dir, JOB_ID, use_cache=use_cache
    )
    return partitions


def _ingest_fact(data_dir: Path) -> dict[str, Any]:
    import json

    facts = json.loads((data_dir / "work" / JOB_ID / "ingest.json").read_text())
    step: dict[str, Any] = facts["step"]
    return step


def _after_ctime(path: Path) -> None:
    """Wait until the clock has moved past `path`'s change time, so a write now changes it."""
    ctime = path.stat().st_ctime_ns
    deadline = time.monotonic() + 10
    while time.time_ns() <= ctime + 20_000_000 and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_settled_unchanged_file_is_not_read_again_and_a_rewritten_one_is(
    tmp_path: Path, scans: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pins, "SETTLED_S", 0.0)  # the file counts as settled once written
    directory = write_inputs(inputs_under(tmp_path), {"a.csv": csv_readings(6)})
    path = directory / "a.csv"
    first = _ingest(tmp_path, directory)
    assert _ingest_fact(tmp_path)["cached"] == 0
    again = _ingest(tmp_path, directory)
    assert again == first and len(scans) == 1  # the same partitions, hashes included, unread
    assert _ingest_fact(tmp_path)["cached"] == 1
    assert len(_ingest(tmp_path, directory, use_cache=False)) == 2 and len(scans) == 2

    _after_ctime(path)
    stamp = path.stat()
    path.write_text(path.read_text().replace("E04,", "E05,"))  # same size, second range
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # even with its old mtime
    changed = _ingest(tmp_path, directory)
    assert len(scans) == 3
    assert changed[0]["sha256"] == first[0]["sha256"]
    assert changed[1]["sha256"] != first[1]["sha256"]


def test_a_file_written_just_before_its_scan_is_not_remembered(
    tmp_path: Path, scans: list[Path]
) -> None:
    """Racily clean (git's term): a write in the same clock tick would leave the pin as it was,
    so a scan is remembered only once the file's times are SETTLED_S old."""
    directory = write_inputs(inputs_under(tmp_path), {"a.csv": csv_readings(6)})
    _ingest(tmp_path, directory)
    _ingest(tmp_path, directory)
    assert len(scans) == 2
    assert not list(pins.scans_dir(tmp_path).glob("*.json"))


def test_a_file_changed_after_a_remembered_scan_still_fails_validate_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even were a change to slip past the pin, validate hashes what it reads."""
    monkeypatch.setattr(pins, "SETTLED_S", 0.0)
    directory = write_inputs(inputs_under(tmp_path), {"a.csv": csv_readings(6)})
    path = directory / "a.csv"
    _ingest(tmp_path, directory)
    partitions = _ingest(tmp_path, directory)
    assert _ingest_fact(tmp_path)["cached"] == 1
    path.write_text(path.read_text().replace("E04,", "E05,"))
    with pytest.raises(PartitionError) as failed:
        run_step("validate", {}, partitions[1], tmp_path, JOB_ID)
    message = str(failed.value)
    assert message.startswith(f"partition a.csv:5-7 (file {path}): InputError: bytes ")
    assert "changed since ingest hashed them" in message and "\n" not in message


def test_prune_removes_scans_unused_for_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pins, "SETTLED_S", 0.0)
    directory = write_inputs(
        inputs_under(tmp_path), {"a.csv": csv_readings(6), "b.csv": csv_readings(3)}
    )
    _ingest(tmp_path, directory)
    old, fresh = sorted(pins.scans_dir(tmp_path).glob("*.json"))
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert pins.prune_scans(tmp_path, 3600) == 1
    assert not old.exists() and fresh.exists()
