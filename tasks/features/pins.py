"""Input files pinned by their stat, so an unchanged file is not read again: `ingest` remembers
each local file's scan (its sha256, its ranges and theirs) under the file's *pin* (device, inode,
size, modification and change times in ns) and, when a later job finds the same pin, takes the
scan from there instead of reading and hashing every byte again. A fully cached rerun then reads
no input at all (the cached steps after it are keyed by the scan's hashes).

Why a pin proves the bytes unchanged: any write to a file, and any `utime` that could set its
modification time back, sets its change time (ctime) to the current time, which no user can set.
The one gap is granularity: a write in the same clock tick as the write the pin saw leaves every
field the same. So a scan is remembered only once the file has *settled*: its times are at least
`SETTLED_S` older than the moment the scan began (git's "racily clean" rule). A write after that
scan began gets a newer ctime and the pin no longer matches. Nor is a scan remembered if the
file's stat changed while it was read.

A remembered scan changes nothing downstream: `validate` still hashes exactly the bytes it reads
and fails the partition, naming the file, if they are not the ones the scan hashed. Scans are
files under <data_dir>/cache/scans/ (host-local, like the pins: inodes mean nothing elsewhere),
touched on each use; `jobrunner cache prune` removes those unused past the cache's lifetime.

Object-store inputs are pinned by what the store lists of each (`pinned_object_scan`): its stamp
(ETag, or version id), size and last-modified time, all set by the store on every write. A job
that finds an object's pin remembered downloads nothing at ingest; the object is fetched, at its
stamp, only if a later step of the job reads it (a cached `validate` does not).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from jobrunner.tasks.cache import digest, source_hash
from jobrunner.tasks.features.files import write_json
from jobrunner.tasks.features.formats import Range, Scan

SETTLED_S = 2.0  # a file's times must be this much older than its scan (coarse clocks: FAT 2 s)
SCANS = ("cache", "scans")  # under data_dir
FORMATS_VERSION = source_hash("jobrunner.tasks.features.formats")  # a new scan code, new keys


def scans_dir(data_dir: Path) -> Path:
    return data_dir.joinpath(*SCANS)


def _pin(found: os.stat_result) -> tuple[int, ...]:
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)


def _memo(data_dir: Path, where: str, pin: tuple[object, ...], fmt: str, rows: int) -> Path:
    key = digest([where, list(pin), fmt, rows, FORMATS_VERSION])
    return scans_dir(data_dir) / f"{key}.json"


def _recall(memo: Path) -> Scan | None:
    """The scan remembered in `memo` (marked used now), or None."""
    with contextlib.suppress(FileNotFoundError, ValueError, TypeError, KeyError):
        found = json.loads(memo.read_text(encoding="utf-8"))
        remembered = Scan(
            found["sha256"],
            found["size"],
            tuple(found["columns"]),
            found["rows"],
            tuple(Range(**r) for r in found["ranges"]),
        )
        os.utime(memo)  # last used: what prune goes by
        return remembered
    return None


def _settled(found: os.stat_result, began: float) -> bool:
    return max(found.st_mtime_ns, found.st_ctime_ns) <= (began - SETTLED_S) * 1e9


def pinned_scan(
    data_dir: Path,
    path: Path,
    fmt: str,
    rows_per_range: int,
    scan: Callable[[], Scan],
    use: bool = True,
) -> tuple[Scan, bool]:
    """`path`'s scan: remembered under its pin if `use` and one is, else `scan()` (remembered
    if the file had settled and did not change while read); and whether it was remembered."""
    before = os.stat(path)
    memo = _memo(data_dir, str(path), _pin(before), fmt, rows_per_range)
    if use and (remembered := _recall(memo)) is not None:
        return remembered, True
    began = time.time()
    fresh = scan()
    after = os.stat(path)
    if _pin(after) == _pin(before) and _settled(after, began):
        write_json(memo, asdict(fresh))
    return fresh, False


def pinned_object_scan(
    data_dir: Path,
    url: str,
    listed: tuple[str, int, str],
    fmt: str,
    rows_per_range: int,
    scan: Callable[[], Scan],
    use: bool = True,
) -> tuple[Scan, bool]:
    """The scan of the object at `url` as `listed` (stamp, size, last write): remembered if `use`
    and one is, else `scan()`, which reads the object at that stamp or fails, and remembered
    (no settling needed: the store sets all three on every write)."""
    memo = _memo(data_dir, url, listed, fmt, rows_per_range)
    if use and (remembered := _recall(memo)) is not None:
        return remembered, True
    fresh = scan()
    write_json(memo, asdict(fresh))
    return fresh, False


def prune_scans(data_dir: Path, older_than_s: float) -> int:
    """Remove the scans not used for `older_than_s`; returns how many."""
    cutoff, removed = time.time() - older_than_s, 0
    root = scans_dir(data_dir)
    for memo in root.glob("*.json") if root.is_dir() else ():
        with contextlib.suppress(FileNotFoundError):
            if memo.stat().st_mtime < cutoff:
                memo.unlink()
                removed += 1
    return removed
