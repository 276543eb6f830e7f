"""Raw inputs read from an object store prefix, on a real S3-compatible server (moto's standalone
server, tests/fixtures/s3.py): a job completes with lineage naming each object and its ETag, an
object overwritten after ingest fails its partition with one line naming it, an unchanged object
is not downloaded again, and a prefix outside the input roots is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobrunner.config import get_settings
from jobrunner.tasks.features import objects
from jobrunner.tasks.features.formats import InputError
from jobrunner.tasks.features.objects import ObjectChanged
from tests.fixtures.s3 import S3Server
from tests.support.features import (
    JOB_ID,
    csv_readings,
    inputs_under,
    run_features,
    run_step,
    write_inputs,
)

ROWS = {"a.csv": 6, "b.csv": 4}


@pytest.fixture
def raw(s3_bucket: str, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """s3://BUCKET/raw holding a.csv and b.csv, the one object store input root."""
    client = s3_server.client()
    for name, rows in ROWS.items():
        client.put_object(Bucket=s3_bucket, Key=f"raw/{name}", Body=csv_readings(rows).encode())
    monkeypatch.setenv("JOBRUNNER_DATA__INPUT_ROOTS", json.dumps([f"s3://{s3_bucket}/raw"]))
    get_settings.cache_clear()
    yield f"s3://{s3_bucket}/raw"
    monkeypatch.undo()
    get_settings.cache_clear()


def _etag(s3_server: S3Server, url: str) -> str:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return str(s3_server.client().head_object(Bucket=bucket, Key=key)["ETag"]).strip('"')


def test_a_job_reads_its_inputs_from_a_bucket_with_lineage_naming_each_object(
    raw: str, s3_server: S3Server, tmp_path: Path
) -> None:
    result = run_features(tmp_path, {"input_dir": raw, "pattern": "*.csv", "partition_rows": 3})
    assert (result["rows"], result["partitions"]) == (10, 4)
    record: dict[str, Any] = json.loads(Path(result["lineage_path"]).read_text())
    named = [(i["file"], i["path"], i["etag"], i["rows"]) for i in record["inputs"]]
    assert named == [
        (name, f"{raw}/{name}", _etag(s3_server, f"{raw}/{name}"), rows)
        for name, rows in ROWS.items()
    ]


def test_an_object_overwritten_after_ingest_fails_its_partition_in_one_line(
    raw: str, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    partitions = run_step("ingest", {"input_dir": raw}, None, tmp_path, JOB_ID)
    first = run_step("validate", {}, partitions[0], tmp_path, JOB_ID)
    assert first["rows"] == ROWS["a.csv"]
    body = csv_readings(ROWS["a.csv"]).replace("E01,", "E99,").encode()  # same size
    s3_server.client().put_object(Bucket=s3_bucket, Key="raw/a.csv", Body=body)
    # on ingest's host (its copy is intact) and on a host that must fetch the object again
    for data_dir in (tmp_path, tmp_path / "other-host"):
        with pytest.raises(ObjectChanged) as failed:
            run_step("validate", {}, partitions[0], data_dir, JOB_ID)
        message = str(failed.value)
        assert message.startswith(f"{raw}/a.csv changed since ingest (was ")
        assert "\n" not in message
    assert run_step("validate", {}, partitions[1], tmp_path, JOB_ID)["rows"] == ROWS["b.csv"]


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The objects downloaded, by name, in order."""
    fetched: list[str] = []
    real = objects.Root.snapshot

    def counted(root: objects.Root, name: str, *args: Any) -> None:
        fetched.append(name)
        real(root, name, *args)

    monkeypatch.setattr(objects.Root, "snapshot", counted)
    return fetched


def test_an_unchanged_object_is_not_downloaded_again_and_an_overwritten_one_is(
    raw: str, s3_server: S3Server, s3_bucket: str, tmp_path: Path, downloads: list[str]
) -> None:
    payload = {"input_dir": raw, "partition_rows": 3}

    def ingest(job: str, use_cache: bool = True) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = run_step(
            "ingest", payload, None, tmp_path, job, None, use_cache
        )
        return found

    first = ingest("1" * 32)
    assert downloads == ["a.csv", "b.csv"]
    again = ingest("2" * 32)
    assert again == first and downloads == ["a.csv", "b.csv"]  # same hashes, nothing fetched
    # A later step of the job that reads an object fetches it then, at the pinned stamp.
    assert run_step("validate", {}, again[-1], tmp_path, "2" * 32)["rows"] == 1
    assert downloads[2:] == ["b.csv"]
    body = csv_readings(ROWS["a.csv"]).replace("E04,", "E99,").encode()  # same size
    s3_server.client().put_object(Bucket=s3_bucket, Key="raw/a.csv", Body=body)
    changed = ingest("3" * 32)
    assert downloads[3:] == ["a.csv"]
    assert [p["sha256"] for p in changed] != [p["sha256"] for p in first]
    assert changed[0]["sha256"] == first[0]["sha256"]  # the first 3 rows are as they were
    ingest("4" * 32, use_cache=False)
    assert downloads[4:] == ["a.csv", "b.csv"]


@pytest.mark.parametrize(
    ("where", "refused"),
    [
        ("s3://{bucket}/other", "is outside the input roots"),
        ("s3://{bucket}/rawer", "is outside the input roots"),
        ("s3://{bucket}/raw/../other", "no '', '.' or '..' parts"),
        ("s3://{bucket}/raw//x", "no '', '.' or '..' parts"),
    ],
)
def test_a_prefix_outside_the_input_roots_is_refused_in_one_line(
    raw: str, s3_bucket: str, tmp_path: Path, where: str, refused: str
) -> None:
    url = where.format(bucket=s3_bucket)
    with pytest.raises(InputError) as failed:
        run_step("ingest", {"input_dir": url}, None, tmp_path, JOB_ID)
    assert str(failed.value).startswith(url) and refused in str(failed.value)
    assert "\n" not in str(failed.value)
    assert not list(tmp_path.rglob("input-*"))  # nothing was downloaded


def test_a_forged_partition_naming_an_object_outside_the_roots_is_refused(
    raw: str, s3_bucket: str, tmp_path: Path
) -> None:
    (partition, *_) = run_step("ingest", {"input_dir": raw}, None, tmp_path, JOB_ID)
    forged = {**partition, "path": f"s3://{s3_bucket}/secret/a.csv"}
    with pytest.raises(InputError, match="is outside the input roots"):
        run_step("validate", {}, forged, tmp_path / "other-host", JOB_ID)


def test_a_file_url_is_a_local_directory_under_the_same_roots(tmp_path: Path) -> None:
    inputs = write_inputs(inputs_under(tmp_path), {"a.csv": csv_readings(3)})
    (partition,) = run_step("ingest", {"input_dir": f"file://{inputs}"}, None, tmp_path, JOB_ID)
    assert (partition["path"], partition["etag"]) == (str(inputs / "a.csv"), None)
    with pytest.raises(InputError, match="is outside the input roots"):
        run_step("ingest", {"input_dir": "file:///etc"}, None, tmp_path, JOB_ID)
