"""Data-arrival triggers with a real scheduler process and a real folder: files dropped together
start one job naming them all; a file still being written waits until it settles, then starts
its own; a restarted scheduler submits nothing it already submitted. The same on a bucket prefix
of a real S3-compatible server."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import redis

from jobrunner.config import get_settings
from jobrunner.config.settings import TriggerSettings
from jobrunner.worker.broker.keys import IDEMPOTENCY, TRIGGER
from jobrunner.worker.client import Client
from jobrunner.worker.scheduling.triggers import Triggers
from tests.fixtures.s3 import S3Server
from tests.fixtures.scheduler import Schedulers
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


def _batches(client: redis.Redis, name: str) -> int:
    """Jobs the trigger submitted: its idempotency keys."""
    return len(list(client.scan_iter(IDEMPOTENCY + f"trigger:{name}:*")))


def _last_job(client: redis.Redis, name: str) -> str | None:
    """The trigger's last job, once its submission was recorded."""
    raw = client.hget(TRIGGER + name, "last_job")
    return raw.decode() if raw else None


@pytest.mark.timeout(150)
def test_arrivals_start_one_job_per_batch_and_half_written_files_wait(
    schedulers: Schedulers, client: Client, redis_client: redis.Redis, tmp_path: Path
) -> None:
    name = f"arrive-{uuid.uuid4().hex[:8]}"
    inbox = tmp_path / "in"
    (inbox / "day1").mkdir(parents=True)
    config = tmp_path / "triggers.toml"
    config.write_text(
        f"""
[scheduler]
tick_s = 0.5
lock_timeout_s = 3

[triggers.{name}]
watch = "{inbox}"
pattern = "**/*.csv"
pipeline = "arrivals"
tier = "low"
settle_s = 1
batch_s = 1
"""
    )
    schedulers.start("a", config)
    eventually(lambda: "Acquired lock" in schedulers.log("a").read_text(), 60)

    dropped = [inbox / "day1" / f"{i}.csv" for i in range(3)]
    for path in dropped:
        path.write_text("a,b\n1,2\n")
    (inbox / "notes.txt").write_text("not a csv")
    eventually(lambda: _last_job(redis_client, name) is not None, 30)
    first = client.job(str(_last_job(redis_client, name))).record()
    assert _batches(redis_client, name) == 1
    assert first.payload["files"] == sorted(map(str, dropped))

    # A file written a chunk at a time for 4 s (longer than settle_s + batch_s) waits ...
    growing = inbox / "big.csv"
    with growing.open("w") as out:
        for _ in range(16):
            out.write("1,2\n" * 100)
            out.flush()
            time.sleep(0.25)
            assert _batches(redis_client, name) == 1, "a half-written file was submitted"
    # ... and once it stops changing, it starts a job of its own.
    eventually(lambda: _last_job(redis_client, name) != first.id, 30)
    second = client.job(str(_last_job(redis_client, name))).record()
    assert _batches(redis_client, name) == 2
    assert second.payload["files"] == [str(growing)]

    # A restarted scheduler submits none of the files it has seen.
    schedulers.kill("a")
    schedulers.start("b", config)
    eventually(lambda: "Acquired lock" in schedulers.log("b").read_text(), 60)
    time.sleep(3)  # several ticks, each longer than settle_s + batch_s
    assert _batches(redis_client, name) == 2


def test_a_bucket_prefix_submits_once_per_settled_object_and_nothing_twice_after_restart(
    client: Client, s3_bucket: str, s3_server: S3Server
) -> None:
    """The scheduler's poll in this process, its clock given: each tick is one call."""
    name, bucket = f"bucket-{uuid.uuid4().hex[:8]}", s3_server.client()
    settings = get_settings()
    trigger = TriggerSettings(
        watch=f"s3://{s3_bucket}/in", pattern="**/*.csv", pipeline="arrivals", settle_s=5
    )
    triggers = Triggers(client, settings.model_copy(update={"triggers": {name: trigger}}))
    triggers.check()
    for key in ("in/a.csv", "in/day2/b.csv", "in/notes.txt", "other/c.csv"):
        bucket.put_object(Bucket=s3_bucket, Key=key, Body=b"a,b\n1,2\n")
    assert triggers.poll(0) == []  # not settled yet
    (first,) = triggers.poll(6)
    urls = [f"s3://{s3_bucket}/in/a.csv", f"s3://{s3_bucket}/in/day2/b.csv"]
    assert first.record().payload["files"] == urls
    assert triggers.poll(20) == []

    bucket.put_object(Bucket=s3_bucket, Key="in/a.csv", Body=b"a,b\n3,4\n")  # same size
    restarted = Triggers(client, settings.model_copy(update={"triggers": {name: trigger}}))
    assert restarted.poll(30) == []
    (second,) = restarted.poll(36)  # the overwritten object, once; b.csv not again
    assert second.record().payload["files"] == urls[:1]
    again = Triggers(client, settings.model_copy(update={"triggers": {name: trigger}}))
    assert again.poll(50) == again.poll(100) == []
