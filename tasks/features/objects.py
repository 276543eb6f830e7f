"""Object storage by URL, the one module that touches fsspec: a local directory (a plain path or
file://) or an object store (s3://, gs://, az://, with s3fs, gcsfs or adlfs installed: the
`jobrunner[s3]` extra installs s3fs). Credentials and endpoints come from each library's standard
variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), never from jobrunner's settings.

The feature store needs three things of a store, and every object store offers them without a
rename (which S3 does not have):

- `put`: an object appears whole or not at all (a local file is written beside and renamed; an
  object store's PUT is atomic by itself);
- `create`: put only if the name is free, failing otherwise (O_EXCL through a hard link locally;
  a conditional PUT, `If-None-Match: *`, on S3): the commit of a version;
- `list` and `get`.

Raw inputs and watched folders may be object store prefixes too: `glob` lists objects with a
stamp that changes whenever an object does (its ETag, or version/generation where the store has
one), and `snapshot` downloads an object only if it still has the stamp it was listed with.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from jobrunner.config import JobrunnerError
from jobrunner.tasks.features.files import atomic_path, copy_file, write_bytes
from jobrunner.tasks.features.formats import InputError
from jobrunner.tasks.features.paths import make_dirs

# Keys of fsspec's info() that change with an object's content, the most precise first: S3's
# version id and ETag (s3fs), GCS's generation (gcsfs), Azure's etag (adlfs).
STAMP_KEYS = ("VersionId", "ETag", "generation", "etag")
# Keys of the time the store last wrote an object: s3fs, gcsfs, adlfs, a local directory.
MODIFIED_KEYS = ("LastModified", "updated", "last_modified", "mtime")


class StorageError(JobrunnerError, OSError):
    """The store cannot be reached or written: the message names the URL and the cause."""


class AlreadyExists(StorageError):
    """`create` found the name taken (another writer got there first)."""


class ObjectChanged(InputError):
    """An input object is no longer the one ingest pinned: the message names it."""


@dataclass(frozen=True, order=True)
class ObjectInfo:
    name: str  # relative to the root
    size: int
    stamp: str  # changes whenever the object does
    modified: str = ""  # when the store last wrote it (set by the store, '' where not listed)


def _stamp(info: dict[str, Any]) -> str:
    for key in STAMP_KEYS:
        if info.get(key):
            return str(info[key]).strip('"')
    return f"size={info.get('size')};modified={_modified(info)}"


def _modified(info: dict[str, Any]) -> str:
    return next((str(info[key]) for key in MODIFIED_KEYS if info.get(key)), "")


@dataclass(frozen=True)
class Root:
    """A directory or bucket prefix, addressed by relative names joined with '/'."""

    url: str
    fs: Any  # an fsspec AbstractFileSystem
    base: str  # the path the filesystem understands (bucket/prefix, or an absolute path)

    @property
    def local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def where(self, name: str) -> str:
        """The full URL of `name`, for messages and records."""
        return f"{self.url.rstrip('/')}/{name}"

    def _path(self, name: str) -> str:
        return f"{self.base.rstrip('/')}/{name}"

    def put(self, name: str, data: bytes) -> None:
        """Write `name` whole (readers see the old object or the new, never part)."""
        with _named(self, name):
            if self.local:
                write_bytes(Path(self._path(name)), data)
            else:
                self.fs.pipe_file(self._path(name), data)

    def put_file(self, name: str, source: Path) -> None:
        """Upload (or copy, atomically) the local file `source` as `name`."""
        with _named(self, name):
            if self.local:
                copy_file(source, Path(self._path(name)))
            else:
                self.fs.put_file(str(source), self._path(name))

    def create(self, name: str, data: bytes) -> None:
        """Write `name` only if nothing has that name yet; AlreadyExists otherwise."""
        try:
            with _named(self, name):
                if self.local:
                    _local_create(Path(self._path(name)), data)
                else:
                    self.fs.pipe_file(self._path(name), data, mode="create")
        except StorageError as error:
            if isinstance(error.__cause__, FileExistsError):
                raise AlreadyExists(f"{self.where(name)} exists already") from None
            raise

    def get(self, name: str) -> bytes:
        with _named(self, name):
            data: bytes = self.fs.cat_file(self._path(name))
            return data

    def open(self, name: str) -> Any:
        """`name` opened for reading (a seekable binary file), e.g. for pyarrow."""
        with _named(self, name):
            return self.fs.open(self._path(name), "rb")

    def exists(self, name: str) -> bool:
        with _named(self, name):
            return bool(self.fs.exists(self._path(name)))

    def list(self, prefix: str) -> list[str]:
        """Names directly under `prefix` (a 'directory'), sorted; empty if there are none."""
        with _named(self, prefix):
            try:
                found = self.fs.ls(self._path(prefix), detail=False, refresh=True)
            except FileNotFoundError:
                return []
        return sorted(str(path).rstrip("/").rsplit("/", 1)[-1] for path in found)

    def glob(self, pattern: str) -> list[ObjectInfo]:
        """The objects `pattern` matches under the root (listed afresh), in name order."""
        base = self.base.rstrip("/") + "/"
        with _named(self, pattern):
            self.fs.invalidate_cache(self.base)
            found = self.fs.glob(base + pattern, detail=True)
        return sorted(
            ObjectInfo(
                path.removeprefix(base), int(info.get("size") or 0), _stamp(info), _modified(info)
            )
            for path, info in found.items()
            if info.get("type") == "file" and path.startswith(base)
        )

    def stamp(self, name: str) -> str:
        """`name`'s current stamp (asked of the store, not a cached listing)."""
        with _named(self, name):
            self.fs.invalidate_cache(self._path(name))
            return _stamp(self.fs.info(self._path(name)))

    def snapshot(self, name: str, target: Path, pinned: str) -> None:
        """Download `name` to `target` (atomically) if its stamp is `pinned`, and still is once
        every byte is down; else ObjectChanged, and no `target`."""
        if (before := self.stamp(name)) != pinned:
            raise ObjectChanged(
                f"{self.where(name)} changed since ingest (was {pinned}, now {before})"
            )
        with atomic_path(target) as temp:
            with _named(self, name):
                self.fs.get_file(self._path(name), str(temp))
            if (after := self.stamp(name)) != pinned:
                raise ObjectChanged(
                    f"{self.where(name)} changed while read (was {pinned}, now {after})"
                )

    def remove(self, name: str) -> None:
        with _named(self, name), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(name))

    def remove_tree(self, prefix: str) -> None:
        """Remove everything under `prefix`, if anything is there."""
        with _named(self, prefix), contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._path(prefix), recursive=True)

    def download(self, name: str, target: Path) -> None:
        with _named(self, name):
            self.fs.get_file(self._path(name), str(target))


@contextlib.contextmanager
def _named(root: Root, name: str) -> Iterator[None]:
    """Turn any failure of the store into one StorageError naming the object (a missing bucket,
    a refused connection, bad credentials...), its first line only."""
    try:
        yield
    except StorageError:
        raise
    except Exception as error:
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise StorageError(f"{root.where(name)}: {cause}") from error


def open_root(url: str | Path) -> Root:
    """The store at `url`: a plain path, file://..., s3://bucket/prefix, gs://..., az://..."""
    text = str(url)
    try:
        fs, base = fsspec.core.url_to_fs(text)
    except ImportError as error:
        raise StorageError(
            f"{text}: {error} (install the extra for its scheme, e.g. jobrunner[s3])"
        ) from None
    except ValueError as error:
        raise StorageError(f"{text}: {error}") from None
    return Root(text, fs, base)


def _local_create(path: Path, data: bytes) -> None:
    """Write a temp file, then hard-link it as `path`: the link fails if `path` exists, so a
    commit never overwrites another."""
    make_dirs(path.parent)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write_bytes(temp, data)
        os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)
