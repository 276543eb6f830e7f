"""File helpers any step may use (the feature pipeline's and the step cache's): directories with
the configured mode, content hashes, and hard links that replace their target atomically.

Kept out of `tasks/features/` so the generic step cache (`tasks/cache.py`), which `@step`
imports, needs nothing of the sample pipeline.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

from jobrunner.config import get_settings

CHUNK = 1 << 20


def make_dirs(path: Path) -> Path:
    """Create `path` and any missing parents with the configured directory mode (chmod, since
    the umask would otherwise narrow or widen it)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        directory.chmod(get_settings().data.dir_mode)
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def link_file(source: Path, target: Path) -> None:
    """Put `source` at `target` (replacing it whole), by hard link where the filesystem allows,
    else by copy. Steps replace files and never write into one, so a link cannot be changed
    through; and removing one name (a cache entry's) leaves the others' bytes in place."""
    make_dirs(target.parent)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        os.link(source, temp)
    except OSError:
        shutil.copyfile(source, temp)
        temp.chmod(get_settings().data.file_mode)
    os.replace(temp, target)
    # Renaming a link over another link to the same file does nothing (POSIX rename(2)): the
    # temp name is still there then.
    temp.unlink(missing_ok=True)
