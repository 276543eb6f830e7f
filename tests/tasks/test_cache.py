"""The step cache's keys (tasks/cache.py), with entries in a real Redis: a changed code version
or a changed declared input file makes a run; the same ones reuse the entry. A code version
covers the helpers beside a step, not the code elsewhere."""

from __future__ import annotations

import dataclasses
import importlib
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from jobrunner.tasks.cache import code_version, source_hash
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


def test_a_code_version_covers_the_helpers_beside_the_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = f"steps_{uuid.uuid4().hex}"
    files = {
        f"{package}/__init__.py": "",
        f"{package}/steps.py": (
            f"from {package} import helper\n"
            "from .deep.nested import VALUE\n"
            f"import {package}_elsewhere\n\n"
            "def run():\n"
            f"    from {package}.lazy import later\n"
            "    return helper.ONE + VALUE + later()\n"
        ),
        f"{package}/helper.py": "ONE = 1\n",
        f"{package}/deep/__init__.py": "",
        f"{package}/deep/nested.py": "VALUE = 2\n",
        f"{package}/lazy.py": "def later():\n    return 3\n",
        f"{package}_elsewhere.py": "OTHER = 4\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = f"{package}.steps"
    importlib.import_module(module)
    try:
        first = source_hash(module)
        assert source_hash.__wrapped__(module) == first  # the same files, the same version

        def version_after(edited: str) -> str:
            (tmp_path / edited).write_text(files[edited] + "# edited\n")
            try:
                return source_hash.__wrapped__(module)
            finally:
                (tmp_path / edited).write_text(files[edited])

        for helper in ("steps.py", "helper.py", "deep/nested.py", "lazy.py"):
            assert version_after(f"{package}/{helper}") != first, helper
        assert version_after(f"{package}_elsewhere.py") == first  # outside the step's folder
    finally:
        for name in [name for name in sys.modules if name.startswith(package)]:
            del sys.modules[name]
