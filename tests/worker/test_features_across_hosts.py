"""The feature pipeline on two workers that share no disk, only a bucket of a real S3-compatible
server (moto's standalone server): each has its own data dir, the inputs are read from the
bucket, the job's steps run on both, rows pass between them through the bucket, and the version
(partitioned by date) is published to the bucket."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from jobrunner.tasks.features.objects import open_root
from jobrunner.tasks.features.versions import current, read_features
from jobrunner.worker.client import Client
from tests.conftest import Workers
from tests.fixtures.s3 import S3Server
from tests.support.sample_data import ROWS_PER_FILE, bad_rows, sample_files

pytestmark = pytest.mark.integration

NODES = ("host-a@test", "host-b@test")


@pytest.fixture(scope="module")
def bucket(s3_server: S3Server) -> str:
    """A bucket holding the sample data under raw/."""
    name = f"fleet-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    for file, (text, _) in sample_files().items():
        s3_server.client().put_object(Bucket=name, Key=f"raw/{file}", Body=text.encode())
    return name


@pytest.fixture(scope="module", autouse=True)
def two_hosts(
    workers: Workers, s3_server: S3Server, bucket: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    for node in NODES:
        workers.start(
            "general",
            node,
            JOBRUNNER_DATA_DIR=str(tmp_path_factory.mktemp(node.split("@")[0])),
            JOBRUNNER_DATA__WORK_URL=f"s3://{bucket}/work",
            JOBRUNNER_DATA__STORE_URL=f"s3://{bucket}/store",
            JOBRUNNER_DATA__INPUT_ROOTS=json.dumps([f"s3://{bucket}/raw"]),
            JOBRUNNER_POOLS__GENERAL__CONCURRENCY="1",
            **s3_server.env,
        )
    yield


def test_two_workers_sharing_only_a_bucket_complete_the_pipeline(
    client: Client, s3_server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = client.submit(
        "features",
        {
            "input_dir": f"s3://{bucket}/raw",
            "partition_rows": 60,
            "output_name": "fleet",
            "partition_by": ["date"],
        },
    )
    result = job.result(timeout=180)
    rows = ROWS_PER_FILE * len(sample_files())
    assert result["rows"] == rows - len(bad_rows())
    ran_on = {entry["worker"] for entry in client.store.steps(job.id)}
    assert ran_on == set(NODES)  # both hosts ran steps of the one job
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    store = open_root(f"s3://{bucket}/store")
    version = current(store, "fleet")
    assert version is not None and (version.job_id, version.version) == (job.id, 1)
    assert result["path"] == store.where(f"fleet/{version.features.file}")
    assert version.partition_by == ["date"] and len(version.partitions) > 1
    assert read_features(store, version).num_rows == result["rows"]
    assert open_root(f"s3://{bucket}/work").list("") == []  # the job's work files are removed
