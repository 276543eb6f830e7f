"""The versioned feature store: every successful run publishes a new version of its feature set,
and a rollback is a new version that restores an earlier one. Nothing is ever overwritten.

Layout under the store root (`data.store_url`; empty: <data_dir>/features), one folder per name:

    NAME/data/<sha256>.parquet             the feature files, named by their content
    NAME/data/<sha256>.quarantine.jsonl    the rows validate rejected
    NAME/data/<sha256>/station=E01/part-00000.parquet
                                           partitioned (`partition_by`): one Hive-style dataset,
                                           named by the digest of its files' names and sha256s
    NAME/_versions/00000001.json           one commit per version, never rewritten
    NAME/_versions/00000002.json           ...the highest number is the current version

Manifest-last, without rename: a run first uploads its data files (named by content, so a rerun
that reproduces them writes the same names, and a half-written upload is never referenced), then
commits by creating the next version's file only if that name is free (`Root.create`: a hard link
locally, a conditional PUT on S3). Two runs racing for one number: one wins, the other takes the
next. Readers list `_versions/` and read the highest: they see the old version or the new, never
a mix. A run that fails before its commit removes the data files it uploaded that no version
references, so the current version is untouched and nothing is left behind.

Why not Delta Lake or Iceberg: both would work (delta-rs commits with conditional puts on S3
too), but each adds a large native dependency whose writer decides the data files' bytes and
names; the pipeline's promise is the same Parquet bytes for the same inputs, written by the
pinned pyarrow options in `store`. The manifest-last log above needs 150 lines and no new writer.
"""

from __future__ import annotations

import getpass
import json
import re
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from jobrunner.config import JobrunnerError, get_settings
from jobrunner.tasks.features.objects import AlreadyExists, Root, StorageError, open_root
from jobrunner.tasks.features.partitioned import with_partition_columns

NAME = re.compile(r"[A-Za-z0-9_\-]{1,64}")
VERSIONS = "_versions"
DATA = "data"
VERSION_DIGITS = 8
COMMIT_ATTEMPTS = 100  # racing publishers each take the next free number


class VersionError(JobrunnerError, ValueError):
    """No such feature set or version: the message says which, and what exists."""


class DataFile(BaseModel):
    file: str  # relative to NAME/, e.g. data/<sha256>.parquet
    sha256: str
    rows: int


class Commit(BaseModel):
    """One version of a feature set: what readers use, and where it came from."""

    name: str
    version: int
    action: Literal["publish", "rollback"]
    committed_at: str
    job_id: str  # the job whose output this version holds
    restores: int | None = None  # a rollback: the version it restores
    by: str | None = None  # a rollback: who asked (user@host)
    features: DataFile  # partitioned: the dataset's folder ("data/<sha256>/") and its digest
    quarantine: DataFile
    partition_by: list[str] = []
    partitions: list[DataFile] = []  # partitioned: every file of the dataset, in path order
    statistics: dict[str, Any]
    pipeline: str
    pipeline_version: str | None


def store_root(data_dir: Path) -> Root:
    """The feature store: `data.store_url`, or <data_dir>/features."""
    return open_root(get_settings().data.store_url or data_dir / "features")


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise VersionError(f"feature set name {name!r} must match {NAME.pattern}")
    return name


def _commit_name(name: str, version: int) -> str:
    return f"{name}/{VERSIONS}/{version:0{VERSION_DIGITS}d}.json"


def names(root: Root) -> list[str]:
    """Feature sets with at least one version."""
    return [n for n in root.list("") if NAME.fullmatch(n) and versions(root, n)]


def versions(root: Root, name: str) -> list[Commit]:
    """Every version of `name`, oldest first."""
    found = []
    for entry in root.list(f"{check_name(name)}/{VERSIONS}"):
        if re.fullmatch(rf"\d{{{VERSION_DIGITS}}}\.json", entry):
            data = root.get(f"{name}/{VERSIONS}/{entry}")
            found.append(Commit.model_validate_json(data))
    return found


def current(root: Root, name: str) -> Commit | None:
    found = versions(root, name)
    return found[-1] if found else None


def upload(root: Root, name: str, source: Path, sha256: str, suffix: str) -> str:
    """Put a data file under its content name (skipped if that content is there already);
    returns its name relative to NAME/."""
    return upload_as(root, name, f"{DATA}/{sha256}{suffix}", source)


def upload_as(root: Root, name: str, relative: str, source: Path) -> str:
    """Put `source` as NAME/`relative`, a name fixed by its content (skipped if there already)."""
    if not root.exists(f"{check_name(name)}/{relative}"):
        root.put_file(f"{name}/{relative}", source)
    return relative


def files(commit: Commit) -> list[DataFile]:
    """Every stored file a version references."""
    return [commit.features, commit.quarantine, *commit.partitions]


def read_features(root: Root, commit: Commit) -> pa.Table:
    """A version's feature rows as one table: partitioned, each file's rows in path order with
    its partition columns put back from the path (as a Hive reader would)."""
    if not commit.partition_by:
        return _read_parquet(root, f"{commit.name}/{commit.features.file}")
    prefix = commit.features.file
    return pa.concat_tables(
        with_partition_columns(
            _read_parquet(root, f"{commit.name}/{part.file}"), part.file[len(prefix) :]
        )
        for part in commit.partitions
    )


def _read_parquet(root: Root, name: str) -> pa.Table:
    with root.open(name) as handle:
        return pq.read_table(handle)


def _commit(root: Root, name: str, make: Callable[[int], Commit]) -> Commit:
    """Create the next version's commit; if another writer took that number, the one after."""
    for _ in range(COMMIT_ATTEMPTS):
        latest = current(root, name)
        commit = make(1 if latest is None else latest.version + 1)
        try:
            root.create(_commit_name(name, commit.version), _encode(commit))
        except AlreadyExists:
            continue
        return commit
    raise StorageError(f"{root.where(name)}: no free version after {COMMIT_ATTEMPTS} attempts")


def _encode(commit: Commit) -> bytes:
    return (json.dumps(commit.model_dump(mode="json"), indent=2) + "\n").encode()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def publish(root: Root, commit: Commit) -> Commit:
    """Commit `commit` (its version number is assigned here) as the new current version. A job
    publishes once: a redelivered run gets the version its first run committed."""
    for seen in versions(root, commit.name):
        if seen.action == "publish" and seen.job_id == commit.job_id:
            return seen
    return _commit(
        root,
        commit.name,
        lambda n: commit.model_copy(update={"version": n, "committed_at": _now()}),
    )


def rollback(root: Root, name: str, to: int) -> Commit:
    """A new version holding version `to`'s data: recorded, atomic, and itself undoable."""
    found = {commit.version: commit for commit in versions(root, name)}
    if to not in found:
        known = ", ".join(map(str, found)) or "none"
        raise VersionError(f"{name} has no version {to} (versions: {known})")
    target = found[to]
    by = f"{getpass.getuser()}@{socket.gethostname()}"
    return _commit(
        root,
        name,
        lambda n: target.model_copy(
            update={
                "version": n,
                "action": "rollback",
                "restores": to,
                "by": by,
                "committed_at": _now(),
            }
        ),
    )


def collect(root: Root, name: str, uploaded: list[str]) -> None:
    """Remove the data files a failed run uploaded that no version references."""
    kept = {f.file for c in versions(root, name) for f in files(c)}
    for relative in uploaded:
        if relative not in kept:
            root.remove(f"{name}/{relative}")
