"""The versioned feature store, on a local directory and on a real S3-compatible server (moto's
standalone server, tests/fixtures/s3.py): publish, versions, rollback as a new version, racing
publishers, a failed run's files collected, the pipeline publishing to a bucket, and a bucket
gone mid-run failing with one line and publishing nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from jobrunner.config import get_settings
from jobrunner.tasks.features.objects import Root, StorageError, open_root
from jobrunner.tasks.features.versions import (
    Commit,
    VersionError,
    collect,
    current,
    names,
    rollback,
    upload,
    versions,
)
from tests.fixtures.s3 import S3Server
from tests.support.feature_store import publish_test_version
from tests.support.features import JOB_ID, csv_readings, inputs_under, run_step, write_inputs


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Root:
    if request.param == "local":
        return open_root(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    return open_root(f"s3://{bucket}/features")


def test_publish_list_and_rollback_as_a_new_version(root: Root) -> None:
    first = publish_test_version(root, "a" * 32, b"first")
    second = publish_test_version(root, "b" * 32, b"second")
    assert (first.version, second.version) == (1, 2)
    assert publish_test_version(root, "b" * 32, b"second") == second  # a redelivered run
    assert names(root) == ["daily"]
    back = rollback(root, "daily", 1)
    assert (back.version, back.action, back.restores, back.job_id) == (3, "rollback", 1, "a" * 32)
    assert back.features == first.features
    assert current(root, "daily") == back
    assert [c.version for c in versions(root, "daily")] == [1, 2, 3]
    assert root.get(f"daily/{back.features.file}") == b"first"
    assert root.get(f"daily/{second.features.file}") == b"second"  # nothing overwritten
    with pytest.raises(VersionError, match=r"daily has no version 9 \(versions: 1, 2, 3\)"):
        rollback(root, "daily", 9)


def test_racing_publishers_each_get_their_own_version(root: Root) -> None:
    jobs = [f"{i:032x}" for i in range(4)]
    done: list[Commit] = []
    threads = [
        threading.Thread(target=lambda j=j: done.append(publish_test_version(root, j, j.encode())))
        for j in jobs
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(c.version for c in done) == [1, 2, 3, 4]
    assert sorted(c.job_id for c in versions(root, "daily")) == jobs


def test_a_failed_runs_files_are_collected_and_used_ones_kept(root: Root, tmp_path: Path) -> None:
    kept = publish_test_version(root, "a" * 32, b"kept")
    orphan = tmp_path / "orphan"
    orphan.write_bytes(b"orphan")
    stray = upload(root, "daily", orphan, "0" * 64, ".parquet")
    collect(root, "daily", [stray, kept.features.file])
    assert not root.exists(f"daily/{stray}")
    assert root.exists(f"daily/{kept.features.file}")


def _aggregated(data_dir: Path, job: str = JOB_ID) -> dict[str, Any]:
    inputs = write_inputs(inputs_under(data_dir), {"a.csv": csv_readings(20)})
    (partition,) = run_step("ingest", {"input_dir": str(inputs)}, None, data_dir, job)
    valid = run_step("validate", {}, partition, data_dir, job)
    return run_step(
        "aggregate", {}, [run_step("transform", {}, valid, data_dir, job)], data_dir, job
    )


@pytest.fixture
def bucket_store(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Root]:
    monkeypatch.setenv("JOBRUNNER_DATA__STORE_URL", f"s3://{s3_bucket}/store")
    get_settings.cache_clear()
    yield open_root(f"s3://{s3_bucket}/store")
    monkeypatch.undo()
    get_settings.cache_clear()


def test_the_pipeline_publishes_versions_to_a_bucket(bucket_store: Root, tmp_path: Path) -> None:
    first = run_step(
        "store", {"output_name": "s3"}, _aggregated(tmp_path / "one"), tmp_path / "one", JOB_ID
    )
    again = run_step(
        "store",
        {"output_name": "s3"},
        _aggregated(tmp_path / "two", "e" * 32),
        tmp_path / "two",
        "e" * 32,
    )
    assert (first["version"], again["version"]) == (1, 2)
    assert (
        first["path"] == again["path"] == bucket_store.where(f"s3/data/{first['sha256']}.parquet")
    )
    local = tmp_path / "copy.parquet"
    bucket_store.download(f"s3/data/{first['sha256']}.parquet", local)
    assert pq.read_table(local).num_rows == 20
    assert [c.job_id for c in versions(bucket_store, "s3")] == [JOB_ID, "e" * 32]


def test_a_bucket_gone_mid_run_fails_with_one_line_and_publishes_nothing(
    bucket_store: Root, s3_bucket: str, s3_server: S3Server, tmp_path: Path
) -> None:
    merged = _aggregated(tmp_path)
    s3_server.client().delete_bucket(Bucket=s3_bucket)
    with pytest.raises(StorageError) as failed:
        run_step("store", {"output_name": "gone"}, merged, tmp_path, JOB_ID)
    message = str(failed.value)
    assert message.startswith(f"s3://{s3_bucket}/store/gone/")
    assert "\n" not in message
    assert not (tmp_path / "lineage").exists()
    s3_server.client().create_bucket(Bucket=s3_bucket)
    assert versions(bucket_store, "gone") == []
