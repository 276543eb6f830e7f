"""Raw input formats: CSV (a header, then one row per record) and JSON Lines (one object per
line). `scan` reads a file once, hashing it on the way, and cuts its rows into byte ranges;
`read` gives back the rows of one range, so a partition reads only its own slice.

Each range carries the sha256 of its bytes, taken in the same pass as the file's; `read` hashes
the bytes it reads and refuses them if they differ. So what lineage records as read is exactly
what the rows came from: a file modified after ingest fails its partition, naming the file.

Line numbers are 1-based lines of the file (what an editor shows), and a row spanning lines (a
quoted CSV field with a newline) is numbered by its first. Blank lines are not rows.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import accumulate, chain
from pathlib import Path
from typing import Any, BinaryIO

FORMATS = {".csv": "csv", ".jsonl": "jsonl"}
BLOCK = 8 << 20  # bytes a vectorized step takes at a time: a few MB of rows in Arrow
BOM = b"\xef\xbb\xbf"  # spreadsheet exports start with one; it is not part of the first column


class InputError(ValueError):
    """A raw input that cannot be used: the message says which and why."""


@dataclass(frozen=True)
class Record:
    line: int  # where it starts
    lines: int  # how many lines it spans
    end: int  # byte offset just after it
    text: str  # the raw line(s), as found
    fields: list[str] | None  # CSV: the parsed fields; JSON Lines: None

    @property
    def next_line(self) -> int:
        return self.line + self.lines


@dataclass(frozen=True)
class Range:
    """Some consecutive rows of a file, as bytes [offset, end) starting at `first_line`."""

    offset: int
    end: int
    first_line: int
    last_line: int
    rows: int
    sha256: str  # of bytes [offset, end)


@dataclass(frozen=True)
class Scan:
    sha256: str
    size: int
    columns: tuple[str, ...]  # CSV header; empty for JSON Lines
    rows: int
    ranges: tuple[Range, ...]  # at least one, empty when the file has no rows


class _Lines:
    """The decoded lines of a byte stream, tracking the bytes and lines consumed so far."""

    def __init__(
        self,
        raw: Iterable[bytes],
        offset: int,
        first_line: int,
        on_bytes: Callable[[bytes], object] | None,
    ) -> None:
        self.raw = raw
        self.offset = offset
        self.line = first_line  # the next line's number
        self.on_bytes = on_bytes
        self.pending: list[str] = []  # lines of the record being read

    def __iter__(self) -> Iterator[str]:
        for raw in self.raw:
            if self.on_bytes is not None:
                self.on_bytes(raw)
            body = raw[len(BOM) :] if self.offset == 0 and raw.startswith(BOM) else raw
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InputError(
                    f"line {self.line} is not UTF-8 text ({error.reason} at byte "
                    f"{self.offset + error.start})"
                ) from None
            self.offset += len(raw)
            self.line += 1
            self.pending.append(text)
            yield text


def records(
    raw: Iterable[bytes],
    fmt: str,
    *,
    offset: int = 0,
    first_line: int = 1,
    on_bytes: Callable[[bytes], object] | None = None,
) -> Iterator[Record]:
    """The records of `raw` (lines of bytes starting at byte `offset`, line `first_line`);
    `on_bytes` sees every byte read, e.g. to hash the file in the same pass."""
    lines = _Lines(raw, offset, first_line, on_bytes)
    parsed: Iterator[list[str] | None] = (
        csv.reader(lines) if fmt == "csv" else (None for _ in lines)
    )
    while True:
        start = lines.line
        try:
            fields = next(parsed)
        except StopIteration:
            return
        except csv.Error as error:
            raise InputError(f"line {start}: {error}") from None
        text = "".join(lines.pending).rstrip("\r\n")
        count = len(lines.pending)
        lines.pending.clear()
        if fields == [] or (fields is None and not text.strip()):
            continue
        yield Record(start, count, lines.offset, text, fields)


@contextmanager
def open_regular(path: Path) -> Iterator[BinaryIO]:
    """`path` opened for reading if it is a regular file. Opened non-blocking first, so a FIFO
    named x.csv cannot stall the step, then checked on the open descriptor, so nothing can swap
    the file between the check and the read."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise InputError("not a regular file")
        os.set_blocking(descriptor, True)
        handle = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    with handle:
        yield handle


def plain_csv(data: bytes) -> bool:
    """Whether a CSV block's rows are its lines, split at commas: no quotes, no NUL, a carriage
    return only before a newline, UTF-8. Anything else is read by `records`, which knows CSV."""
    if b'"' in data or b"\0" in data:
        return False
    if b"\r" in data and data.count(b"\r") != data.count(b"\r\n"):  # counted only if any
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _Cutter:
    """Cuts the rows after the header into ranges of `rows_per_range` rows (0: one range),
    hashing each range's bytes; fed the bytes in order, then told where rows end."""

    def __init__(self, offset: int, first_line: int, rows_per_range: int) -> None:
        self.rows_per_range = rows_per_range
        self.start, self.first_line = offset, first_line
        self.digest = hashlib.sha256()
        self.pending: list[tuple[int, bytes]] = []  # fed bytes not hashed into a range yet
        self.ranges: list[Range] = []
        self.rows = 0  # in all
        self.in_range = 0
        self.last_line: int | None = None  # of the last row

    def feed(self, offset: int, data: bytes) -> None:
        self.pending.append((offset, data))

    def _hash_until(self, end: int) -> str:
        kept: list[tuple[int, bytes]] = []
        for offset, data in self.pending:
            if offset + len(data) <= end:
                self.digest.update(data)
            elif offset < end:
                self.digest.update(data[: end - offset])
                kept.append((end, data[end - offset :]))
            else:
                kept.append((offset, data))
        self.pending = kept
        done, self.digest = self.digest.hexdigest(), hashlib.sha256()
        return done

    def row(self, end: int, line: int, next_line: int) -> None:
        """A row ending at byte `end`, on lines [line, next_line)."""
        self.rows += 1
        self.in_range += 1
        self.last_line = next_line - 1
        if self.rows_per_range and self.in_range == self.rows_per_range:
            sha256 = self._hash_until(end)
            self.ranges.append(
                Range(self.start, end, self.first_line, next_line - 1, self.in_range, sha256)
            )
            self.start, self.first_line, self.in_range = end, next_line, 0

    def before_cut(self, count: int) -> int:
        """How many of `count` more rows come before the next cut (all when ranges are not cut)."""
        return min(count, self.rows_per_range - self.in_range - 1) if self.rows_per_range else count

    def uncut(self, count: int, last_line: int) -> None:
        """`count` rows, the last on `last_line`, none of them ending a range (`before_cut`)."""
        self.rows += count
        self.in_range += count
        self.last_line = last_line

    def done(self, size: int) -> tuple[Range, ...]:
        if self.in_range or not self.ranges:
            last = (
                self.first_line if self.last_line is None or not self.in_range else self.last_line
            )
            sha256 = self._hash_until(size)
            self.ranges.append(
                Range(self.start, size, self.first_line, last, self.in_range, sha256)
            )
        return tuple(self.ranges)


def _plain_rows(cutter: _Cutter, offset: int, line: int, data: bytes) -> None:
    """The rows of a plain CSV block (`plain_csv`): one per line that is not blank. Counted in
    C between the rows that end a range; a block with blank lines is walked line by line."""
    found = data.splitlines(keepends=True)  # at \n only: a \r here is always before one
    if found.count(b"\n") + found.count(b"\r\n"):
        for text in found:
            offset += len(text)
            if text not in (b"\n", b"\r\n"):
                cutter.row(offset, line, line + 1)
            line += 1
        return
    ends = list(accumulate(map(len, found), initial=offset))  # ends[i + 1]: where row i ends
    done = 0
    while done < len(found):
        count = cutter.before_cut(len(found) - done)
        if count:
            cutter.uncut(count, line + done + count - 1)
            done += count
        if done < len(found) and not cutter.before_cut(1):
            cutter.row(ends[done + 1], line + done, line + done + 1)
            done += 1


def scan(path: Path, fmt: str, rows_per_range: int) -> Scan:
    """Hash `path`, read its header (CSV), and cut its rows into ranges of `rows_per_range` rows
    (0: one range for the whole file). Plain CSV is counted a block at a time; anything else,
    and a CSV from its first block that is not plain on, row by row."""
    digest = hashlib.sha256()
    columns: tuple[str, ...] = ()
    with open_regular(path) as handle:
        offset, first_line = 0, 1
        if fmt == "csv":
            header = next(records(handle, fmt, on_bytes=digest.update), None)
            if header is not None:
                columns = tuple(header.fields or ())
                offset, first_line = header.end, header.next_line
        handle.seek(offset)
        cutter = _Cutter(offset, first_line, rows_per_range)
        blocks = _blocks(handle, offset, first_line, digest, cutter)
        for block in blocks:
            if fmt == "csv" and plain_csv(block.data):
                _plain_rows(cutter, block.offset, block.line, block.data)
                continue
            rest = chain([block.data], (later.data for later in blocks))
            for found in records(lines(rest), fmt, offset=block.offset, first_line=block.line):
                cutter.row(found.end, found.line, found.next_line)
        size = handle.tell()
    return Scan(digest.hexdigest(), size, columns, cutter.rows, cutter.done(size))


def _blocks(
    handle: BinaryIO, offset: int, line: int, digest: Any, cutter: _Cutter
) -> Iterator[Block]:
    """The rest of `handle` in blocks of whole lines, each hashed and fed to `cutter`."""
    for data in line_blocks(handle, -1, BLOCK, digest.update):
        cutter.feed(offset, data)
        yield Block(offset, line, data)
        offset += len(data)
        line += data.count(b"\n")


def read(
    path: Path, fmt: str, offset: int, end: int, first_line: int, sha256: str
) -> Iterator[Record]:
    """The records in bytes [offset, end) of `path`, the first starting at line `first_line`,
    streamed one line at a time and hashed on the way; once they are read, an InputError if
    they do not hash to `sha256` (what ingest read), so nothing built from changed bytes can
    succeed."""
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        handle.seek(offset)
        yield from records(
            _between(handle, end - offset),
            fmt,
            offset=offset,
            first_line=first_line,
            on_bytes=digest.update,
        )
    _check_digest(digest, offset, end, sha256)


def _check_digest(digest: Any, offset: int, end: int, sha256: str) -> None:
    found = digest.hexdigest()
    if found != sha256:
        raise InputError(
            f"bytes {offset}-{end} changed since ingest hashed them (sha256 {found[:12]}, "
            f"ingest read {sha256[:12]}): rerun the job on the new content"
        )


@dataclass(frozen=True)
class Block:
    """Whole lines of a file: `data` starts at byte `offset`, on line `line`."""

    offset: int
    line: int
    data: bytes


def read_blocks(
    path: Path, offset: int, end: int, first_line: int, sha256: str, size: int = BLOCK
) -> Iterator[Block]:
    """The bytes [offset, end) of `path` in blocks of about `size` bytes, each cut at a line's
    end (a longer line makes a longer block), hashed on the way like `read`: once they are all
    read, an InputError if they do not hash to `sha256`. For checks that work on many rows at
    once; `records` over `lines(blocks)` gives the same rows one at a time."""
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        handle.seek(offset)
        line = first_line
        for data in line_blocks(handle, end - offset, size, digest.update):
            yield Block(offset, line, data)
            offset += len(data)
            line += data.count(b"\n")
    _check_digest(digest, offset, end, sha256)


def line_blocks(
    handle: BinaryIO, remaining: int, size: int, on_bytes: Callable[[bytes], object] | None = None
) -> Iterator[bytes]:
    """The next `remaining` bytes of `handle` (all of it when -1) in blocks cut at line ends."""
    carry = b""
    while remaining:
        chunk = handle.read(size if remaining < 0 else min(size, remaining))
        if not chunk:
            break
        if on_bytes is not None:
            on_bytes(chunk)
        remaining -= len(chunk) if remaining > 0 else 0
        data = carry + chunk
        cut = data.rfind(b"\n") + 1
        if cut:
            yield data[:cut]
        carry = data[cut:]
    if carry:
        yield carry


def lines(blocks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of consecutive blocks, as `records` takes them."""
    for block in blocks:
        yield from io.BytesIO(block)


def _between(handle: BinaryIO, size: int) -> Iterator[bytes]:
    """The next `size` bytes of `handle`, line by line (a range ends at a line's end)."""
    while size > 0 and (line := handle.readline(size)):
        size -= len(line)
        yield line
