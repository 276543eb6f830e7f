"""The step cache's keys (tasks/cache.py), with entries in a real Redis: a changed code version
or a changed declared input file makes a run; the same ones reuse the entry."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any

import redis

from jobrunner.tasks.cache import code_version
from jobrunner.tasks.step import StepContext, StepSpec, call_step, get_step
from jobrunner.worker.store.step_cache import StepCache
from tests.support.cached_steps import log_of


def _call(spec: StepSpec, payload: dict[str, Any], data_dir: Path, cache: StepCache) -> Any:
    ctx = StepContext(uuid.uuid4().hex, "cached", "medium", spec.name, data_dir)
    return call_step(spec, payload, None, ctx, cache)


def _ran(data_dir: Path, tag: str) -> int:
    return len(log_of(data_dir, tag).read_text().splitlines())


def test_a_changed_version_runs_the_step_again(tmp_path: Path, redis_client: redis.Redis) -> None:
    cache = StepCache(redis_client, 600, 600)
    produce = get_step("produce")
    assert produce.cache is not None
    bumped = dataclasses.replace(
        produce,
        cache=dataclasses.replace(produce.cache, code_version=code_version(produce.fn, "2")),
    )
    assert bumped.cache != produce.cache
    payload = {"tag": uuid.uuid4().hex}
    results = [_call(spec, payload, tmp_path, cache) for spec in (produce, produce, bumped, bumped)]
    assert [cached for _, cached in results] == [False, True, False, True]
    assert _ran(tmp_path, payload["tag"]) == 2
    first, *others = (Path(result["path"]).read_bytes() for result, _ in results)
    assert all(other == first for other in others)


def test_a_declared_input_counts_by_content(tmp_path: Path, redis_client: redis.Redis) -> None:
    cache = StepCache(redis_client, 600, 600)
    spec = get_step("count_lines")
    source = tmp_path / "source.txt"
    payload = {"tag": uuid.uuid4().hex, "source": str(source)}
    counted = []
    for text in ("a\nb\n", "a\nb\n", "a\nb\nc\n"):
        source.write_text(text)
        counted.append(_call(spec, payload, tmp_path, cache))
    assert counted == [(2, False), (2, True), (3, False)]
