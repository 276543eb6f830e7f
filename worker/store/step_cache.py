"""Cached steps' entries in Redis (`@step(cache=True)`, see tasks/cache.py), and pruning.

An entry is a JSON string under STEP_CACHE_ENTRY + key that expires `data.cache_ttl_s` after its
last use (every hit renews it); STEP_CACHE indexes the keys by last use, for `cache list` and
`cache prune`. While a job runs, STEP_CACHE_RESULTS + job id maps each result a cached step
returned (by digest) to its key, so the next step's key chains to it; it expires with the job's
records (`limits.result_expires`).

The output files an entry names are kept in <data_dir>/cache/files/ by content hash, as extra
hard links (copies across filesystems) of the files the step wrote: removing the cache's name
never removes the bytes of a job's work file or of a published feature version, which hold
their own. So pruning may remove any cached file no entry names any more; at worst a save that
races it finds its file gone on the next lookup, which is a miss, never a failure.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from jobrunner.config import get_settings
from jobrunner.tasks.cache import SHA256, files_dir
from jobrunner.worker.broker import connection
from jobrunner.worker.broker.keys import STEP_CACHE, STEP_CACHE_ENTRY, STEP_CACHE_RESULTS


class StepCache:
    """The entry store steps use (tasks/cache.py `CacheStore`)."""

    def __init__(self, client: redis.Redis, ttl_s: float, results_ttl_s: float) -> None:
        self.redis = client
        self.ttl_ms = int(ttl_s * 1000)
        self.results_ttl_ms = int(results_ttl_s * 1000)

    def get(self, key: str) -> dict[str, Any] | None:
        with self.redis.pipeline() as pipe:
            pipe.getex(STEP_CACHE_ENTRY + key, px=self.ttl_ms)
            pipe.zadd(STEP_CACHE, {key: time.time()}, xx=True)
            raw, _ = pipe.execute()
        return None if raw is None else json.loads(raw)

    def put(self, key: str, entry: dict[str, Any]) -> None:
        with self.redis.pipeline() as pipe:
            pipe.set(STEP_CACHE_ENTRY + key, json.dumps(entry), px=self.ttl_ms)
            pipe.zadd(STEP_CACHE, {key: time.time()})
            pipe.execute()

    def remember(self, job_id: str, results: dict[str, str]) -> None:
        with self.redis.pipeline() as pipe:
            pipe.hset(STEP_CACHE_RESULTS + job_id, mapping=results)
            pipe.pexpire(STEP_CACHE_RESULTS + job_id, self.results_ttl_ms)
            pipe.execute()

    def recall(self, job_id: str, digests: list[str]) -> list[str | None]:
        found = self.redis.hmget(STEP_CACHE_RESULTS + job_id, digests)
        return [None if key is None else key.decode() for key in found]


def open_step_cache() -> StepCache:
    """The store the worker app names (`CACHE_SETTING`): entries beside the job records."""
    settings = connection.resolve(get_settings())
    return StepCache(
        connection.client(settings.effective_result_url),
        settings.data.cache_ttl_s,
        settings.limits.result_expires,
    )


@dataclass(frozen=True)
class Entry:
    key: str
    used_at: float
    entry: dict[str, Any] | None  # None: expired (still indexed until the next prune)

    def summary(self) -> dict[str, Any]:
        """What `cache list` shows of it."""
        found = self.entry or {}
        return {
            "key": self.key,
            "step": found.get("step"),
            "pipeline": found.get("pipeline"),
            "job_id": found.get("job_id"),
            "saved_at": found.get("saved_at"),
            "used_at": self.used_at,
            "files": len(found.get("files") or {}),
            "expired": self.entry is None,
        }


def entries(client: redis.Redis) -> Iterator[Entry]:
    """Every indexed entry, least recently used first."""
    indexed = client.zrange(STEP_CACHE, 0, -1, withscores=True)
    for start in range(0, len(indexed), 500):
        batch = indexed[start : start + 500]
        found = client.mget([STEP_CACHE_ENTRY + key.decode() for key, _ in batch])
        for (key, used_at), raw in zip(batch, found, strict=True):
            yield Entry(key.decode(), used_at, None if raw is None else json.loads(raw))


@dataclass(frozen=True)
class Pruned:
    entries: int  # removed: expired, or unused longer than asked
    files: int  # cached files no entry names any more, removed from this host's data dir
    bytes: int
    scans: int  # remembered input scans (features' `pins`) unused as long, from this host

    def as_dict(self) -> dict[str, int]:
        return {
            "entries": self.entries,
            "files": self.files,
            "bytes": self.bytes,
            "scans": self.scans,
        }


def _cached_files(data_dir: Path) -> list[Path]:
    root = files_dir(data_dir)
    return [p for p in root.glob("*/*") if SHA256.fullmatch(p.name)] if root.is_dir() else []


def prune(client: redis.Redis, data_dir: Path, older_than_s: float | None = None) -> Pruned:
    """Remove the entries that expired (or, with `older_than_s`, were not used for that long),
    then the files in `data_dir`'s cache that no remaining entry names, and the remembered input
    scans unused as long (`data.cache_ttl_s` by default). The files are listed before the
    entries are read, so only a save racing the prune can lose its file (its next lookup is a
    miss)."""
    from jobrunner.tasks.features.pins import prune_scans  # the sample pipeline's, when pruned

    files = _cached_files(data_dir)
    cutoff = None if older_than_s is None else time.time() - older_than_s
    stale, kept = [], set()
    for entry in entries(client):
        if entry.entry is None or (cutoff is not None and entry.used_at < cutoff):
            stale.append(entry.key)
        else:
            kept.update((entry.entry.get("files") or {}).values())
    with client.pipeline() as pipe:
        for start in range(0, len(stale), 500):
            batch = stale[start : start + 500]
            pipe.delete(*(STEP_CACHE_ENTRY + key for key in batch))
            pipe.zrem(STEP_CACHE, *batch)
        pipe.execute()
    removed = freed = 0
    for path in files:
        if path.name not in kept:
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
            removed, freed = removed + 1, freed + size
    ttl = get_settings().data.cache_ttl_s if older_than_s is None else older_than_s
    return Pruned(len(stale), removed, freed, prune_scans(data_dir, ttl))
