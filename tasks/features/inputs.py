"""Where raw inputs come from: a local directory (a path or file://) or an object store prefix
(s3://, gs://, az://; through `objects`, with the store's standard credential and endpoint
variables).

Both are confined the same way: a directory must lie under an input root, an object store prefix
under one of `data.input_roots`' URLs, and a pattern cannot leave either (`paths`).

An object is never read twice at different versions. `ingest` lists each object's stamp (its
ETag, or version id), downloads it into the job's work directory only while it still has that
stamp, and hashes what it downloaded (unless an earlier job did, `pins`: then nothing is
downloaded); the partitions carry the stamp, and `validate` (on this host or another) reads the
object only if it still has it, downloading it where this job has no copy yet: an object
overwritten after ingest fails its partition with one line naming it, instead of yielding rows
lineage does not describe.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from jobrunner.tasks.features.formats import FORMATS, InputError
from jobrunner.tasks.features.objects import ObjectChanged, open_root
from jobrunner.tasks.features.partitions import Partition
from jobrunner.tasks.features.paths import (
    check_pattern,
    confined_input,
    confined_input_dir,
    confined_input_url,
    inside,
    local_path,
    work_dir,
)
from jobrunner.tasks.step import StepContext


@dataclass(frozen=True)
class Source:
    file: str  # relative to input_dir: what features and lineage record
    path: str  # where it is: an absolute path, or the object's URL
    local: Path  # the bytes to read: the file itself, or this job's copy of the object
    etag: str | None  # an object's stamp (ETag or version) as listed; None: a file
    size: int = 0  # an object's size as listed
    modified: str = ""  # when the store last wrote the object, as listed


def sources(ctx: StepContext, input_dir: str, pattern: str) -> list[Source]:
    """The inputs `pattern` matches under `input_dir`, in name order (objects downloaded)."""
    if local_path(input_dir) is not None:
        directory = confined_input_dir(ctx.data_dir, input_dir)
        return [
            Source(path.relative_to(directory).as_posix(), str(path.resolve()), path, None)
            for path in input_files(directory, pattern)
        ]
    root = open_root(confined_input_url(input_dir))
    found = [o for o in root.glob(check_pattern(pattern)) if not _hidden(o.name)]
    _check_formats([root.where(o.name) for o in found], pattern, input_dir)
    return [
        Source(
            o.name,
            root.where(o.name),
            snapshot_path(ctx, root.where(o.name)),
            o.stamp,
            o.size,
            o.modified,
        )
        for o in found
    ]


def input_files(directory: Path, pattern: str) -> list[Path]:
    """The files `pattern` matches under `directory`, in name order; hidden files are skipped,
    any other file must be a supported format (nothing matched is silently left out), and must
    stay inside `directory` once its symlinks are resolved."""
    try:
        matches = sorted(directory.glob(check_pattern(pattern)))
    except (ValueError, NotImplementedError) as error:
        raise InputError(f"pattern {pattern!r}: {error}") from None
    files = [p for p in matches if not _hidden(p.name) and not p.is_dir()]
    for path in files:
        if not inside(path, directory):
            raise InputError(f"{path}: a link out of input_dir {directory}, refused")
    _check_formats([str(p) for p in files], pattern, str(directory))
    return files


def _hidden(name: str) -> bool:
    return PurePosixPath(name).name.startswith(".")


def _check_formats(found: list[str], pattern: str, where: str) -> None:
    supported = ", ".join(FORMATS)
    for name in found:
        if PurePosixPath(name).suffix not in FORMATS:
            raise InputError(
                f"{name}: unsupported input format (expected {supported}; narrow `pattern`)"
            )
    if not found:
        raise InputError(f"no input files matching {pattern!r} in {where} ({supported})")


def snapshot_path(ctx: StepContext, url: str) -> Path:
    """Where this job keeps its copy of the object at `url`: its work directory."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:32]
    return work_dir(ctx.data_dir, ctx.job_id) / f"input-{digest}{PurePosixPath(url).suffix}"


def readable_input(ctx: StepContext, partition: Partition) -> Path:
    """The local file holding `partition`'s input, checked first: a path under the input roots,
    or this job's copy of an object under an object store input root that still has the stamp
    ingest pinned (see `object_copy`)."""
    if partition.etag is None:
        return confined_input(ctx.data_dir, partition.path)
    return object_copy(ctx, partition.path, partition.etag)


def object_copy(ctx: StepContext, url: str, stamp: str) -> Path:
    """This job's copy of the object at `url`, which must still have `stamp`: downloaded where
    this host has none yet, else the object asked whether it changed since."""
    parent, _, name = confined_input_url(url).rpartition("/")
    root, target = open_root(parent), snapshot_path(ctx, url)
    if not target.exists():
        root.snapshot(name, target, stamp)
    elif (now := root.stamp(name)) != stamp:
        raise ObjectChanged(f"{url} changed since ingest (was {stamp}, now {now})")
    return target
