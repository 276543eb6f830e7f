"""`validate`: check every row of a partition against the row schema (`schema.Reading`).

Good rows go on, typed, with the file and line they came from. Bad rows go to the quarantine with
their line, the reason and the raw text: never dropped silently. A partition whose share of bad
rows is over `max_bad_row_rate` fails (a broken source, not a few bad readings); its quarantine is
written first, so the error can point at it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from jobrunner.tasks.features.files import JsonLinesWriter
from jobrunner.tasks.features.formats import Record, read
from jobrunner.tasks.features.lineage import StepFact, reused, source_hash
from jobrunner.tasks.features.partitions import (
    Partition,
    PartitionError,
    PartitionResult,
    describe,
    failures_named,
    partition_file,
)
from jobrunner.tasks.features.paths import confined_input
from jobrunner.tasks.features.schema import Reading
from jobrunner.tasks.features.shared import share
from jobrunner.tasks.step import StepContext, StepPayload, step

CODE_VERSION = source_hash(__name__)


class ValidatePayload(StepPayload):
    max_bad_row_rate: float = Field(
        default=0.2, ge=0, le=1, description="share of bad rows that fails a partition"
    )


def _reason(error: ValidationError) -> str:
    """Every problem of the row, each with its field and the value found."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
        + (f" (got {e['input']!r})" if e["type"] != "missing" else "")
        for e in error.errors()
    )


def check_row(record: Record, columns: tuple[str, ...]) -> dict[str, Any] | str:
    """The row as typed values, or the reason it is bad."""
    if record.fields is not None:
        if len(record.fields) != len(columns):
            return f"expected {len(columns)} fields, got {len(record.fields)}"
        values: Any = dict(zip(columns, record.fields, strict=True))
    else:
        try:
            values = json.loads(record.text)
        except json.JSONDecodeError as error:
            return f"not valid JSON ({error.msg}, column {error.colno})"
        if not isinstance(values, dict):
            return f"expected a JSON object, got {type(values).__name__}"
    try:
        return Reading.model_validate(values).model_dump(mode="json")
    except ValidationError as error:
        return _reason(error)


def quarantined(partition: Partition, record: Record, reason: str) -> dict[str, Any]:
    """A quarantine entry: enough to find the row, know what is wrong, and fix it."""
    return {
        "file": partition.file,
        "line": record.line,
        "partition": partition.name,
        "reason": reason,
        "raw": record.text,
    }


def _split(
    partition: Partition, source: Path, valid_path: Path, quarantine_path: Path
) -> tuple[int, int]:
    """Write the partition's valid rows and quarantined rows, one at a time; returns how many
    of each."""
    good = bad = 0
    with (
        failures_named(partition),
        JsonLinesWriter(valid_path) as valid_out,
        JsonLinesWriter(quarantine_path) as bad_out,
    ):
        for record in read(
            source,
            partition.format,
            partition.offset,
            partition.end,
            partition.first_line,
            partition.sha256,
        ):
            checked = check_row(record, partition.columns)
            if isinstance(checked, str):
                bad_out.write(quarantined(partition, record, checked))
                bad += 1
            else:
                valid_out.write(
                    {**checked, "source_file": partition.file, "source_line": record.line}
                )
                good += 1
    return good, bad


@step(memory_mb=64, cache=True, reuse=reused)  # streams: one row at a time, into two files
def validate(
    payload: ValidatePayload, upstream: dict[str, Any], ctx: StepContext
) -> PartitionResult:
    """Split a partition into valid rows and quarantined rows (line, reason, raw text); reused
    from the cache when the same bytes were validated the same way before."""
    started = time.time()
    partition = Partition.model_validate(upstream)
    source = confined_input(ctx.data_dir, partition.path)  # checked before anything is read
    valid_path = partition_file(ctx, partition, "valid")
    quarantine_path = partition_file(ctx, partition, "quarantine")
    good, bad = _split(partition, source, valid_path, quarantine_path)
    total = good + bad
    if total and bad / total > payload.max_bad_row_rate:
        raise PartitionError(
            f"{describe(partition)}: {bad} of {total} rows are bad, over the "
            f"{payload.max_bad_row_rate:.0%} limit (max_bad_row_rate); see {quarantine_path}"
        )
    share(ctx, valid_path, quarantine_path)
    fact = StepFact.since(
        ctx, CODE_VERSION, started, payload, rows_in=total, rows_out=good, quarantined=bad
    )
    return PartitionResult(
        partition=partition,
        rows_path=str(valid_path),
        quarantine_path=str(quarantine_path),
        rows=good,
        quarantined=bad,
        steps=[fact],
    )
