"""Data-arrival triggers with a real scheduler process and a real folder: files dropped together
start one job naming them all; a file still being written waits until it settles, then starts
its own; a restarted scheduler submits nothing it already submitted."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import redis

from jobrunner.worker.broker.keys import IDEMPOTENCY, TRIGGER
from jobrunner.worker.client import Client
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
