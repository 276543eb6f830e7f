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


def _warm() -> None:
    """Import what a worker has imported before its first step, so steps are timed warm."""
    import jobrunner.tasks.features  # noqa: F401 - registers the steps


def _step(
    name: str, payload: dict[str, Any], upstream: Any, data_dir: str, redis_url: str
) -> tuple[Any, float, float]:
    """Run one step in this process, as a worker does (cached steps through the step cache on
    `redis_url`); its JSON result, this process's peak RSS (MB) and the step's own seconds."""
    from jobrunner.tasks.step import StepContext, call_step, get_step
    from jobrunner.worker.broker.connection import client
    from jobrunner.worker.store.step_cache import StepCache

    _warm()
    began = time.perf_counter()
    ctx = StepContext(JOB_ID, "features", "medium", name, Path(data_dir))
    cache = StepCache(client(redis_url), 3600, 3600)
    result, _ = call_step(get_step(name), payload, upstream, ctx, cache)
    return json.loads(json.dumps(result)), _peak_mb(), time.perf_counter() - began


def _partition(
    partition: dict[str, Any], payload: dict[str, Any], data_dir: str, redis_url: str
) -> tuple[Any, float]:
    valid, _, _ = _step("validate", payload, partition, data_dir, redis_url)
    done, peak, _ = _step("transform", payload, valid, data_dir, redis_url)
    return done, peak


@dataclass
class StepFigure:
    step: str
    seconds: float
    peak_mb: float


def _pool(workers: int) -> ProcessPoolExecutor:
    """Fresh (spawned) processes, warmed up: nothing inherited inflates their memory, and their
    import time is not the steps'."""
    return ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_warm
    )


def _alone(
    name: str, payload: dict[str, Any], upstream: Any, data_dir: Path, redis_url: str
) -> tuple[Any, StepFigure]:
    with _pool(1) as pool:
        pool.submit(_warm).result()
        result, peak, seconds = pool.submit(
            _step, name, payload, upstream, str(data_dir), redis_url
        ).result()
    return result, StepFigure(name, seconds, peak)


def run_pipeline(
    data_dir: Path, input_dir: Path, workers: int, redis_url: str
) -> tuple[list[StepFigure], int]:
    """Each single step in its own fresh process; the partitions' validate → transform on
    `workers` warm processes at once (as a pool of that many worker processes runs them)."""
    payload = {"input_dir": str(input_dir), "partition_rows": PARTITION_ROWS}
    partitions, ingest = _alone("ingest", payload, None, data_dir, redis_url)
    with _pool(workers) as pool:
        list(pool.map(_warm_and_wait, range(workers)))
        began = time.perf_counter()
        done = list(
            pool.map(
                _partition,
                partitions,
                [payload] * len(partitions),
                [str(data_dir)] * len(partitions),
                [redis_url] * len(partitions),
            )
        )
        took = time.perf_counter() - began
    mapped = StepFigure("validate+transform", took, max(peak for _, peak in done))
    merged, aggregate = _alone("aggregate", payload, [d for d, _ in done], data_dir, redis_url)
    stored, store = _alone("store", {"output_name": "bench"}, merged, data_dir, redis_url)
    shutil.rmtree(data_dir / "work", ignore_errors=True)
    return [ingest, mapped, aggregate, store], stored["rows"]


def _warm_and_wait(_: int) -> None:
    """Occupy one pool process briefly, so every process has started before the clock does."""
    _warm()
    time.sleep(0.5)


def _timed_baseline(input_dir: Path, out: Path) -> float:
    began = time.perf_counter()
    baseline(input_dir, out)
    return time.perf_counter() - began


def baseline(input_dir: Path, out: Path) -> int:
    """The same transformation in one process with pyarrow alone (everything in memory): parse,
    drop bad rows, derive the features, standardize, sort, write Parquet. Returns rows written."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pv
    import pyarrow.parquet as pq

    from jobrunner.tasks.features.parquet import PARQUET_OPTIONS

    table = pv.read_csv(
        input_dir / "readings.csv",
        convert_options=pv.ConvertOptions(
            column_types=dict.fromkeys(
                ["station", "timestamp", "temperature_c", "humidity_pct", "wind_ms"], pa.string()
            )
        ),
    )
    number = r"^-?\d+(\.\d+)?$"
    good = pc.and_(
        pc.match_substring_regex(table["station"], r"^[A-Z]\d{2}$"),
        pc.and_(
            pc.match_substring_regex(table["humidity_pct"], number),
            pc.and_(
                pc.match_substring_regex(table["temperature_c"], number),
                pc.match_substring_regex(table["wind_ms"], number),
            ),
        ),
    )
    table = table.filter(good)
    temperature = pc.cast(table["temperature_c"], pa.float64())
    humidity = pc.cast(table["humidity_pct"], pa.float64())
    when = pc.strptime(table["timestamp"], "%Y-%m-%dT%H:%M:%S", "us")
    gamma = pc.add(
        pc.ln(pc.divide(pc.max_element_wise(humidity, 0.1), 100)),
        pc.divide(pc.multiply(temperature, 17.62), pc.add(temperature, 243.12)),
    )
    mean = pc.mean(temperature).as_py()
    spread = pc.stddev(temperature).as_py() or 1.0
    features = pa.table(
        {
            "station": table["station"],
            "timestamp": when,
            "temperature_c": temperature,
            "humidity_pct": humidity,
            "wind_ms": pc.cast(table["wind_ms"], pa.float64()),
            "temperature_f": pc.round(pc.add(pc.multiply(temperature, 1.8), 32), 2),
            "dew_point_c": pc.round(
                pc.divide(pc.multiply(gamma, 243.12), pc.subtract(17.62, gamma)), 2
            ),
            "humidity_frac": pc.round(pc.divide(humidity, 100), 4),
            "hour": pc.cast(pc.hour(when), pa.int8()),
            "weekday": pc.cast(pc.day_of_week(when), pa.int8()),
            "temperature_z": pc.round(pc.divide(pc.subtract(temperature, mean), spread), 6),
        }
    )
    features = features.sort_by([("station", "ascending"), ("timestamp", "ascending")])
    pq.write_table(features, out, **PARQUET_OPTIONS)
    return features.num_rows


@dataclass
class SizeFigures:
    megabytes: float
    rows: int
    steps: list[StepFigure]
    pipeline_s: float
    cached_s: float
    baseline_s: float


def measure(megabytes: float, workers: int) -> SizeFigures:
    """The pipeline (each step in a fresh process, partitions `workers` at a time), a fully
    cached rerun, and the pyarrow baseline, on one generated input."""
    from jobrunner.worker.broker.embedded import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="jobrunner-data-bench-") as temp:
        data_dir = Path(temp)
        source, rows = generate(data_dir / "inputs" / "bench", megabytes)
        server = EmbeddedRedis(data_dir / "redis")  # the step cache's entries
        try:
            url = server.start()
            steps, _ = run_pipeline(data_dir, source.parent, workers, url)
            again, _ = run_pipeline(data_dir, source.parent, workers, url)
        finally:
            server.stop()
        with _pool(1) as pool:
            pool.submit(_warm).result()
            baseline_s = pool.submit(
                _timed_baseline, source.parent, data_dir / "baseline.parquet"
            ).result()
        pipeline_s, cached_s = (sum(f.seconds for f in run) for run in (steps, again))
    return SizeFigures(megabytes, rows, steps, pipeline_s, cached_s, baseline_s)


def main(sizes: list[float], workers: int = 2) -> None:
    for megabytes in sizes:
        found = measure(megabytes, workers)
        print(
            f"{megabytes:g} MB, {found.rows:,} rows: pipeline {found.rows / found.pipeline_s:,.0f} "
            f"rows/s, baseline {found.rows / found.baseline_s:,.0f} rows/s, cached rerun "
            f"{found.cached_s:.1f} s (first {found.pipeline_s:.1f} s)"
        )
        for f in found.steps:
            print(f"  {f.step:20s} {f.seconds:8.2f} s  peak RSS {f.peak_mb:8.0f} MB")


if __name__ == "__main__":
    main([float(a) for a in sys.argv[1:]] or [20])
