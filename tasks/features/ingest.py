"""`ingest`: find the raw files, check and hash each, and cut them into partitions.

Every check that can fail on a whole file (no files, a format we cannot read, an unreadable or
non-UTF-8 file, a CSV header that is not the schema's) happens here, before anything fans out:
a bad input fails the job at its first step, and nothing is written to the feature store.

Inputs are confined (see `paths`): `input_dir` must lie under an input root, `pattern` cannot
leave it, a match whose symlinks lead out of it is refused, and only regular files are read.
`input_dir` may be an object store prefix (`inputs`): each object is read at a pinned ETag.
A local file unchanged since an earlier job (same pin: inode, size, times), or an object (same
stamp, size and last write), is not read again: its scan is remembered (`pins`). Each ingest
also sweeps work directories left by failed jobs (`paths.sweep_work`).
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from jobrunner.tasks.features.files import write_json
from jobrunner.tasks.features.formats import FORMATS, InputError, Range, Scan, scan
from jobrunner.tasks.features.inputs import Source, object_copy, sources
from jobrunner.tasks.features.lineage import (
    INGEST_FACTS,
    IngestFacts,
    InputFile,
    StepFact,
    source_hash,
)
from jobrunner.tasks.features.objects import ObjectChanged, StorageError
from jobrunner.tasks.features.partitions import Partition
from jobrunner.tasks.features.paths import SAMPLE_DATA_DIR, sweep_work, work_dir
from jobrunner.tasks.features.pins import pinned_object_scan, pinned_scan
from jobrunner.tasks.features.schema import RAW_COLUMNS
from jobrunner.tasks.features.shared import share
from jobrunner.tasks.step import StepContext, StepPayload, step

CODE_VERSION = source_hash(__name__)


class IngestPayload(StepPayload):
    input_dir: str = Field(
        default=str(SAMPLE_DATA_DIR),
        description="under an input root: a path (relative: to <data_dir>/inputs) or s3://... URL",
    )
    pattern: str = Field(default="*", description="glob under input_dir; ** descends; no ..")
    partition_rows: int = Field(
        default=0, ge=0, description="rows per partition; 0: one partition per file"
    )


def _scan(ctx: StepContext, source: Source, fmt: str, rows_per_range: int) -> tuple[Scan, bool]:
    """The source's scan, and whether it was remembered from an earlier job (`pins`)."""
    path = source.local if source.etag is None else source.path  # as the user named it
    try:
        if source.etag is None:
            found, remembered = pinned_scan(
                ctx.data_dir,
                source.local,
                fmt,
                rows_per_range,
                lambda: scan(source.local, fmt, rows_per_range),
                ctx.use_cache,
            )
        else:
            found, remembered = pinned_object_scan(
                ctx.data_dir,
                source.path,
                (source.etag, source.size, source.modified),
                fmt,
                rows_per_range,
                lambda: scan(object_copy(ctx, source.path, source.etag), fmt, rows_per_range),
                ctx.use_cache,
            )
    except (ObjectChanged, StorageError):  # each names its object already
        raise
    except OSError as error:
        raise InputError(f"cannot read input file {path}: {error.strerror or error}") from None
    except InputError as error:
        raise InputError(f"{path}: {error}") from None
    if fmt == "csv" and sorted(found.columns) != sorted(RAW_COLUMNS):  # any order, each once
        raise InputError(f"{path}: {_header_mismatch(found.columns)}")
    return found, remembered


SHOWN_NAMES, SHOWN_CHARS = 5, 32  # of a header's unexpected names, in an error


def _shown(names: list[str]) -> list[str]:
    """At most a few names, each cut short: an error names the problem, it does not copy the
    file (whose first line may be anything)."""
    cut = [repr(n[:SHOWN_CHARS]) + "..." if len(n) > SHOWN_CHARS else n for n in names]
    extra = len(cut) - SHOWN_NAMES
    return cut[:SHOWN_NAMES] + ([f"and {extra} more"] if extra > 0 else [])


def _header_mismatch(columns: tuple[str, ...]) -> str:
    if not columns:
        return f"no header line (expected {', '.join(RAW_COLUMNS)})"
    missing = [c for c in RAW_COLUMNS if c not in columns]
    unexpected = _shown([c for c in dict.fromkeys(columns) if c not in RAW_COLUMNS])
    repeated = _shown(sorted({c for c in columns if columns.count(c) > 1}))
    problems = [
        f"{label} {', '.join(names)}"
        for label, names in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("repeated", repeated),
        )
        if names
    ]
    return f"header mismatch: {'; '.join(problems)} (expected {', '.join(RAW_COLUMNS)})"


def _name(file: str, rows: Range, whole_file: bool) -> str:
    return file if whole_file else f"{file}:{rows.first_line}-{rows.last_line}"


@step(memory_mb=64)  # streams: one line at a time (measured well under this)
def ingest(payload: IngestPayload, upstream: Any, ctx: StepContext) -> list[dict[str, Any]]:
    """One partition per input file, or per `partition_rows` rows; every file checked and
    hashed first. Its fact and the inputs go to the work directory for `store`'s lineage."""
    started = time.time()
    work = work_dir(ctx.data_dir, ctx.job_id)
    sweep_work(ctx.data_dir)
    inputs: list[InputFile] = []
    partitions: list[Partition] = []
    remembered = []
    for source in sources(ctx, payload.input_dir, payload.pattern):
        fmt = FORMATS[source.local.suffix]
        found, known = _scan(ctx, source, fmt, payload.partition_rows)
        remembered.append(known)
        file, absolute = source.file, source.path
        inputs.append(
            InputFile(
                file=file,
                path=absolute,
                etag=source.etag,
                format=fmt,
                sha256=found.sha256,
                bytes=found.size,
                rows=found.rows,
            )
        )
        partitions += [
            Partition(
                index=len(partitions) + i,
                name=_name(file, rows, len(found.ranges) == 1),
                file=file,
                path=absolute,
                etag=source.etag,
                format=fmt,
                columns=found.columns,
                offset=rows.offset,
                end=rows.end,
                first_line=rows.first_line,
                rows=rows.rows,
                sha256=rows.sha256,
            )
            for i, rows in enumerate(found.ranges)
        ]
    total = sum(i.rows for i in inputs)
    fact = StepFact.since(
        ctx, CODE_VERSION, started, payload, rows_in=total, rows_out=total, cached=all(remembered)
    )
    facts = IngestFacts(inputs=inputs, step=fact)
    write_json(work / INGEST_FACTS, facts.model_dump(mode="json"))
    share(ctx, work / INGEST_FACTS)
    return [partition.model_dump(mode="json") for partition in partitions]
