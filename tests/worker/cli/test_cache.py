"""`jobrunner cache prune` and `cache list` against a real Redis: entries unused too long or
expired go, with the cached files only they named; an entry in use keeps its file, and neither a
published feature version's files nor a job's work files lose a byte."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import redis

import tests.support.cached_steps  # noqa: F401 - registers the user steps
from jobrunner.tasks.cache import files_dir
from jobrunner.tasks.files import sha256_file
from jobrunner.tasks.step import StepContext, call_step, get_step
from jobrunner.worker.broker.keys import STEP_CACHE, STEP_CACHE_ENTRY
from jobrunner.worker.store.step_cache import StepCache, entries
from tests.support.cli import run
from tests.support.features import csv_readings, inputs_under, run_features, write_inputs


def _produce(data_dir: Path, cache: StepCache, factor: int) -> tuple[dict[str, str], str]:
    """A run of the user step `produce` (tests/support/cached_steps.py): its result, its key."""
    ctx = StepContext(uuid.uuid4().hex, "cached", "medium", "produce", data_dir)
    result, _ = call_step(get_step("produce"), {"tag": "prune", "factor": factor}, None, ctx, cache)
    return result, _keys(cache, pipeline="cached", job_id=ctx.job_id)[0]


def _keys(cache: StepCache, **match: str) -> list[str]:
    return [
        e.key
        for e in entries(cache.redis)
        if e.entry and all(e.entry.get(k) == v for k, v in match.items())
    ]


def test_prune_removes_stale_entries_and_only_their_files(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    cache = StepCache(redis_client, 600, 600)
    write_inputs(inputs_under(tmp_path), {"a.csv": csv_readings(9)})
    job = uuid.uuid4().hex
    published = run_features(tmp_path, {"input_dir": str(inputs_under(tmp_path))}, job, cache)
    old = _keys(cache, pipeline="features", job_id=job)
    assert len(old) == 3  # validate, transform, aggregate
    redis_client.zadd(STEP_CACHE, {key: time.time() - 7200 for key in old})
    kept, kept_key = _produce(tmp_path, cache, 2)
    expired, expired_key = _produce(tmp_path, cache, 5)
    redis_client.delete(STEP_CACHE_ENTRY + expired_key)  # as its TTL would
    before = {p.name for p in files_dir(tmp_path).glob("*/*")}

    pruned = run("cache", "prune", "--older-than", "1h", "--json", JOBRUNNER_DATA_DIR=str(tmp_path))
    assert pruned.returncode == 0, pruned.stderr
    listed = run("cache", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    keys = {entry["key"] for entry in json.loads(listed.stdout)}
    assert kept_key in keys
    assert keys.isdisjoint([*old, expired_key])
    # Left: exactly the files a remaining entry names (other tests' entries may share one).
    named = {sha for e in entries(redis_client) if e.entry for sha in e.entry["files"].values()}
    left = {p.name for p in files_dir(tmp_path).glob("*/*")}
    assert left == before & named
    assert json.loads(pruned.stdout)["files"] == len(before - left)
    assert sha256_file(Path(kept["path"])) in left
    assert sha256_file(Path(expired["path"])) not in left
    # The published version and the expired entry's work file keep their bytes.
    assert sha256_file(Path(published["path"])) == published["sha256"]
    assert Path(expired["path"]).read_text().startswith("0\n5\n10\n")
