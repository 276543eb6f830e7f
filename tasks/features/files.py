"""Files on disk: atomic writes, content hashes and JSON Lines.

Every write goes to a temp file beside its target, renamed over it once complete (`os.replace`),
so a reader, or a step redelivered after its worker died mid-write, never sees half a file. Files
and directories are created with the configured modes (`data.file_mode`, `data.dir_mode`; owner
only by default: they hold rows and payloads).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jobrunner.config import get_settings
from jobrunner.tasks.files import make_dirs, sha256_file


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temp path beside `path` to write; renamed over `path` if the block succeeds, else removed.

    The temp file is created empty with the configured mode before the block writes it (a
    writer reopening it keeps that mode), so its rows are never readable by others, not even
    while being written."""
    make_dirs(path.parent)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    mode = get_settings().data.file_mode
    try:
        descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        os.fchmod(descriptor, mode)  # the umask applied to os.open's mode
        os.close(descriptor)
        yield temp
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as temp:
        temp.write_bytes(data)


def write_json(path: Path, data: Any) -> None:
    write_bytes(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode())


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with atomic_path(path) as temp, temp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


class JsonLinesWriter:
    """Rows written one at a time to `path` (atomically, on a clean exit), so a step holds one
    row, not all of them; several can be open at once (valid rows and quarantine)."""

    def __init__(self, path: Path) -> None:
        self._atomic = atomic_path(path)

    def __enter__(self) -> JsonLinesWriter:
        self._handle = self._atomic.__enter__().open("w", encoding="utf-8")
        return self

    def write(self, row: dict[str, Any]) -> None:
        self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")

    def __exit__(self, *exc: Any) -> None:
        self._handle.close()
        self._atomic.__exit__(*exc)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def copy_file(source: Path, path: Path) -> str:
    """Copy atomically (the source stays for a redelivered run); returns the sha256."""
    with atomic_path(path) as temp:
        shutil.copyfile(source, temp)
        return sha256_file(temp)
