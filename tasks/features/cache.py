"""Cached steps: a step whose code version, parameters and inputs match an earlier successful
run takes that run's output instead of computing it again; the output is the same bytes either
way, since the steps are deterministic.

Keys chain like a Merkle tree, so no step rehashes a file: `validate`'s key covers its code
version, its parameters and the partition, whose sha256 ingest took of exactly the bytes it read
in this job (ingest always runs: it is what notices a changed input); `transform`'s key covers its
own code and parameters and validate's key; `aggregate`'s every partition's key. A changed byte,
parameter or line of a step's module changes every key downstream of it.

Entries live in <data_dir>/cache/<step>/<key>/: the output files and result.json. An entry is
built in a temp directory and renamed into place whole, so a reader sees all of it or none. On a
hit the files are hard-linked into the job's work directory (copied across filesystems): the
steps replace files, never modify them, so a link cannot be changed through.

A payload with `"cache": false` (`jobrunner submit --no-cache`) computes every step again, and
refreshes the entries. Cached runs are marked in their step facts (`cached`), so lineage shows
which outputs were reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from jobrunner.tasks.features.files import write_json
from jobrunner.tasks.features.paths import make_dirs
from jobrunner.tasks.features.shared import share
from jobrunner.tasks.step import StepContext, StepPayload

RESULT = "result.json"

Result = TypeVar("Result", bound=BaseModel)


class CachedPayload(StepPayload):
    """Payload of a cached step."""

    cache: bool = Field(default=True, description="false: recompute every cached step")

    def key_params(self) -> dict[str, Any]:
        """The parameters that shape the output: everything but `cache` itself."""
        return self.model_dump(mode="json", exclude={"cache"})


def key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _entry(data_dir: Path, step: str, digest: str) -> Path:
    return data_dir / "cache" / step / digest


def _link(source: Path, target: Path) -> None:
    """Put `source` at `target` (replacing it), by hard link if possible."""
    make_dirs(target.parent)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        os.link(source, temp)
    except OSError:
        shutil.copyfile(source, temp)
    os.replace(temp, target)


@dataclass(frozen=True)
class CachedRun(Generic[Result]):
    """One run of a cached step: where its entry is, which files it writes, how to compute its
    result, and how to point a cached result at this job."""

    ctx: StepContext
    payload: CachedPayload
    digest: str
    outputs: dict[str, Path]  # entry file name -> the file in this job's work directory
    model: type[Result]
    compute: Callable[[], Result]
    reuse: Callable[[Result], Result]


def cached(run: CachedRun[Result]) -> Result:
    """The step's result: from the entry `run.digest` if there is one (its files linked to the
    outputs, its result passed through `reuse`), else computed and saved; either way the output
    files are then shared with the job's other hosts (`shared.share`)."""
    entry = _entry(run.ctx.data_dir, run.ctx.step, run.digest)
    if run.payload.cache and (entry / RESULT).is_file():
        for name, target in run.outputs.items():
            _link(entry / name, target)
        result = run.reuse(run.model.model_validate_json((entry / RESULT).read_bytes()))
    else:
        result = run.compute()
        _save(entry, run.outputs, result)
    share(run.ctx, *run.outputs.values())
    return result


def _save(entry: Path, outputs: dict[str, Path], result: BaseModel) -> None:
    """Build the entry beside its place, then rename it in; a concurrent run that saved the same
    entry first wins (same key, same bytes), and this one's copy is dropped."""
    temp = make_dirs(entry.with_name(f".{entry.name}.{uuid.uuid4().hex}.tmp"))
    try:
        for name, source in outputs.items():
            _link(source, temp / name)
        write_json(temp / RESULT, result.model_dump(mode="json"))
        if entry.exists():  # --no-cache refreshes it
            shutil.rmtree(entry, ignore_errors=True)
        os.rename(temp, entry)
    except OSError:
        if not entry.is_dir():
            raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)
