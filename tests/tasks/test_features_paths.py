"""The feature pipeline's data roots, probed as a hostile client would: a forged job id or
upstream, an input_dir or pattern outside the roots, a symlink out, a FIFO, a header that would
be echoed; then the modes of what it writes and the sweep of failed jobs' work directories."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from jobrunner.config import get_settings
from jobrunner.tasks.features.formats import InputError
from jobrunner.tasks.features.paths import ForgedPathError, sweep_work, work_dir
from jobrunner.worker.store.step_cache import StepCache
from tests.support.features import (
    CSV_HEADER,
    JOB_ID,
    csv_readings,
    inputs_under,
    run_features,
    run_step,
    write_inputs,
)

SECRET = "root:secret-hash:19000:0:99999:7:::"
OTHER_JOB = "f" * 32


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A private file outside every input root and work directory."""
    path = tmp_path / "private" / "shadow.csv"
    path.parent.mkdir()
    path.write_text(CSV_HEADER + SECRET + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def _partition(data_dir: Path, job_id: str = JOB_ID) -> dict[str, Any]:
    inputs = write_inputs(inputs_under(data_dir), {"a.csv": csv_readings(3)})
    (partition,) = run_step("ingest", {"input_dir": str(inputs)}, None, data_dir, job_id)
    return partition


def _all_files(root: Path) -> Iterator[Path]:
    return (p for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("job_id", ["/tmp/x", "../x", JOB_ID + "\n", "a" * 31, "A" * 32])
def test_a_job_id_not_in_the_clients_format_never_forms_a_path(
    data_dir: Path, tmp_path: Path, job_id: str
) -> None:
    forged = job_id.replace("/tmp/x", str(tmp_path / "x"))
    inputs = write_inputs(inputs_under(data_dir), {"a.csv": csv_readings(3)})
    with pytest.raises(ForgedPathError, match="is not a job id"):
        run_step("ingest", {"input_dir": str(inputs)}, None, data_dir, forged)
    assert not (tmp_path / "x").exists()
    assert not (data_dir / "work").exists()


def test_validate_with_a_forged_job_id_writes_nothing_outside(
    data_dir: Path, tmp_path: Path
) -> None:
    partition = _partition(data_dir)
    with pytest.raises(ForgedPathError):
        run_step("validate", {}, partition, data_dir, str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_validate_refuses_an_upstream_naming_a_file_outside_the_input_roots(
    data_dir: Path, secret: Path
) -> None:
    partition = _partition(data_dir)
    forged = {**partition, "path": str(secret), "end": secret.stat().st_size}
    with pytest.raises(ForgedPathError, match="outside the input roots"):
        run_step("validate", {"max_bad_row_rate": 1}, forged, data_dir, JOB_ID)
    assert not any(SECRET in p.read_text() for p in _all_files(data_dir))


@pytest.mark.parametrize("field", ["rows_path", "quarantine_path"])
@pytest.mark.parametrize("where", ["secret", "other job"])
def test_steps_refuse_upstream_work_files_outside_the_jobs_own_work_dir(
    data_dir: Path, secret: Path, field: str, where: str
) -> None:
    validated = run_step("validate", {}, _partition(data_dir), data_dir, JOB_ID)
    transformed = run_step("transform", {}, validated, data_dir, JOB_ID)
    other = work_dir(data_dir, OTHER_JOB) / "part-00000.valid.arrow"
    target = str(secret if where == "secret" else other)
    if field == "rows_path":
        with pytest.raises(ForgedPathError, match="is not a file of job"):
            run_step("transform", {}, {**validated, field: target}, data_dir, JOB_ID)
    with pytest.raises(ForgedPathError, match="is not a file of job"):
        run_step("aggregate", {}, [{**transformed, field: target}], data_dir, JOB_ID)
    merged = run_step("aggregate", {}, [transformed], data_dir, JOB_ID)
    with pytest.raises(ForgedPathError, match="is not a file of job"):
        run_step("store", {}, {**merged, "features_path": target}, data_dir, JOB_ID)
    assert not (data_dir / "features").exists()


@pytest.mark.parametrize(
    ("input_dir", "error"),
    [
        ("/etc", r"input_dir /etc is outside the input roots"),
        ("../../..", r"input_dir \.\./\.\./\.\. is outside the input roots"),
    ],
)
def test_input_dir_must_lie_under_an_input_root(data_dir: Path, input_dir: str, error: str) -> None:
    with pytest.raises(InputError, match=error):
        run_step("ingest", {"input_dir": input_dir}, None, data_dir, JOB_ID)


def test_configured_input_roots_are_read(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = write_inputs(tmp_path / "landing" / "june", {"a.csv": csv_readings(2)})
    with pytest.raises(InputError, match="outside the input roots"):
        run_step("ingest", {"input_dir": str(elsewhere)}, None, data_dir, JOB_ID)
    monkeypatch.setenv("JOBRUNNER_DATA__INPUT_ROOTS", f'["{tmp_path / "landing"}"]')
    get_settings.cache_clear()
    try:
        (partition,) = run_step("ingest", {"input_dir": str(elsewhere)}, None, data_dir, JOB_ID)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert partition["rows"] == 2


@pytest.mark.parametrize("pattern", ["../../**/*.csv", "../*.csv", "/etc/*", "a/../../*.csv"])
def test_a_pattern_cannot_leave_input_dir(data_dir: Path, secret: Path, pattern: str) -> None:
    inputs = write_inputs(inputs_under(data_dir, "deep/er"), {"a.csv": csv_readings(1)})
    with pytest.raises(InputError, match=r"must be relative to input_dir, without '\.\.'"):
        run_step("ingest", {"input_dir": str(inputs), "pattern": pattern}, None, data_dir, JOB_ID)


def test_a_symlink_out_of_input_dir_is_refused(data_dir: Path, secret: Path) -> None:
    inputs = write_inputs(inputs_under(data_dir), {"a.csv": csv_readings(1)})
    (inputs / "b.csv").symlink_to(secret)
    (inputs / "sub").symlink_to(secret.parent, target_is_directory=True)
    with pytest.raises(InputError, match=r"b\.csv: a link out of input_dir"):
        run_step("ingest", {"input_dir": str(inputs)}, None, data_dir, JOB_ID)
    with pytest.raises(InputError, match=r"shadow\.csv: a link out of input_dir"):
        run_step("ingest", {"input_dir": str(inputs), "pattern": "sub/*"}, None, data_dir, JOB_ID)


def test_a_fifo_named_like_an_input_is_refused_without_blocking(data_dir: Path) -> None:
    inputs = write_inputs(inputs_under(data_dir), {"a.csv": csv_readings(1)})
    fifo = inputs / "x.csv"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def ingest() -> None:
        try:
            run_step("ingest", {"input_dir": str(inputs)}, None, data_dir, JOB_ID)
            outcome.append(None)
        except Exception as error:
            outcome.append(error)

    thread = threading.Thread(target=ingest, daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():  # the broken variant: open() waits for a writer; give it one
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(30)
        pytest.fail("ingest blocked on a FIFO")
    (error,) = outcome
    assert isinstance(error, InputError)
    assert str(error) == f"{fifo}: not a regular file"


def test_a_header_mismatch_names_the_problem_without_copying_the_header(data_dir: Path) -> None:
    header = CSV_HEADER.strip() + "," + ",".join(f"{SECRET}-{i}" for i in range(20)) + "\n"
    inputs = write_inputs(inputs_under(data_dir), {"a.csv": header})
    with pytest.raises(InputError, match=r"header mismatch: unexpected .*and 15 more") as failed:
        run_step("ingest", {"input_dir": str(inputs)}, None, data_dir, JOB_ID)
    assert SECRET not in str(failed.value)
    assert len(str(failed.value)) < 600


def _modes(root: Path) -> set[tuple[str, int]]:
    return {
        ("dir" if p.is_dir() else "file", stat.S_IMODE(p.stat().st_mode))
        for p in root.rglob("*")
        if "inputs" not in p.relative_to(root).parts
    }


def test_outputs_work_files_and_lineage_are_owner_only_by_default(
    data_dir: Path, redis_client: redis.Redis
) -> None:
    old = os.umask(0o022)
    try:
        inputs = write_inputs(inputs_under(data_dir), {"a.csv": csv_readings(3) + "bad\n"})
        partition = _partition_in(data_dir, inputs)
        run_step("validate", {"max_bad_row_rate": 1}, partition, data_dir, JOB_ID)
        assert _modes(data_dir / "work") == {("dir", 0o700), ("file", 0o600)}
        cache = StepCache(redis_client, 600, 600)  # cached steps' files too
        run_features(data_dir, {"input_dir": str(inputs), "max_bad_row_rate": 1}, JOB_ID, cache)
    finally:
        os.umask(old)
    assert _modes(data_dir) == {("dir", 0o700), ("file", 0o600)}
    assert {p.name for p in data_dir.iterdir()} == {
        "inputs",
        "work",
        "cache",
        "features",
        "lineage",
    }


def _partition_in(data_dir: Path, inputs: Path) -> dict[str, Any]:
    (partition,) = run_step("ingest", {"input_dir": str(inputs)}, None, data_dir, JOB_ID)
    return partition


def test_modes_are_configurable(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBRUNNER_DATA__FILE_MODE", str(0o640))
    monkeypatch.setenv("JOBRUNNER_DATA__DIR_MODE", str(0o750))
    get_settings.cache_clear()
    try:
        inputs = write_inputs(inputs_under(data_dir), {"a.csv": csv_readings(3)})
        run_features(data_dir, {"input_dir": str(inputs)})
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert _modes(data_dir) == {("dir", 0o750), ("file", 0o640)}


def test_failed_jobs_work_dirs_are_swept_after_the_retention(data_dir: Path) -> None:
    retention = get_settings().data.failed_work_retention_s
    partition = _partition(data_dir, OTHER_JOB)  # a job that then failed: its work dir stays
    failed = work_dir(data_dir, OTHER_JOB)
    assert failed.is_dir()
    stray = data_dir / "work" / "not-a-job"
    stray.mkdir()
    now = time.time()
    assert sweep_work(data_dir, now) == []  # fresh: could be a live job
    old = now - retention - 60
    for path in (failed, stray):
        os.utime(path, (old, old))
    inputs = inputs_under(data_dir)
    run_step("ingest", {"input_dir": str(inputs)}, None, data_dir, JOB_ID)  # sweeps on start
    assert not failed.exists()
    assert stray.is_dir()  # only job ids are removed
    assert work_dir(data_dir, JOB_ID).is_dir()
    assert partition["rows"] == 3


def test_shared_work_files_are_fetched_only_for_this_jobs_own_names(
    tmp_path: Path, secret: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With data.work_url, a step fetches upstream files another host wrote; a forged path is
    still refused, whatever host it claims to come from."""
    monkeypatch.setenv("JOBRUNNER_DATA__WORK_URL", str(tmp_path / "shared"))
    get_settings.cache_clear()
    try:
        host_a, host_b = tmp_path / "a", tmp_path / "b"
        validated = run_step("validate", {}, _partition(host_a), host_a, JOB_ID)
        transformed = run_step("transform", {}, validated, host_b, JOB_ID)  # fetched from shared
        assert transformed["rows"] == 3
        assert (work_dir(host_b, JOB_ID) / "part-00000.valid.arrow").is_file()
        for forged in (str(secret), str(host_a / "work" / OTHER_JOB / "part-00000.valid.arrow")):
            with pytest.raises(ForgedPathError, match="is not a file of job"):
                run_step("transform", {}, {**validated, "rows_path": forged}, host_b, JOB_ID)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
