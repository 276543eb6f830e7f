"""Workers prune the step cache on their own (`data.cache_prune_interval_s`): files no entry
names and input scans unused past the cache's lifetime leave the disk; what an entry names stays."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
import redis

from jobrunner.config import get_settings
from jobrunner.tasks.cache import cache_file
from jobrunner.tasks.features.pins import scans_dir
from jobrunner.worker.store.step_cache import StepCache
from tests.conftest import Workers
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


def _cached(data_dir: Path, content: bytes) -> Path:
    path = cache_file(data_dir, hashlib.sha256(content).hexdigest())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_a_worker_prunes_what_nothing_uses(workers: Workers, redis_client: redis.Redis) -> None:
    data_dir = get_settings().data_dir.resolve()
    orphan = _cached(data_dir, os.urandom(16))
    kept = _cached(data_dir, os.urandom(16))
    StepCache(redis_client, 3600, 3600).put("k" * 64, {"files": {"x.txt": kept.name}})
    old_scan, new_scan = scans_dir(data_dir) / f"{'a' * 64}.json", scans_dir(data_dir) / "b.json"
    old_scan.parent.mkdir(parents=True, exist_ok=True)
    for scan in (old_scan, new_scan):
        scan.write_text("{}")
    month_ago = time.time() - 30 * 86400  # past data.cache_ttl_s
    os.utime(old_scan, (month_ago, month_ago))

    workers.start("general", "general-prune@test", JOBRUNNER_DATA__CACHE_PRUNE_INTERVAL_S="1")
    eventually(lambda: not orphan.exists() and not old_scan.exists(), 60)
    assert kept.exists() and new_scan.exists()
