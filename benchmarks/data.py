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
import os
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
GENERATE_ROWS = 1 << 20  # rows generated at a time
START = 1_780_000_000  # seconds: the first reading's time, a fixed day


def generate(directory: Path, megabytes: float) -> tuple[Path, int]:
    """A CSV of about `megabytes` MB of hourly readings over 100 stations, one row in BAD_EVERY
    bad; returns its path and its row count. Built GENERATE_ROWS rows at a time in Arrow and
    streamed to disk, so 1 GB takes seconds and little memory."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "readings.csv"
    rows = int(megabytes * 1e6 / ROW_BYTES)
    with path.open("wb") as out:
        out.write(b"station,timestamp,temperature_c,humidity_pct,wind_ms\n")
        for first in range(0, rows, GENERATE_ROWS):
            out.write(_readings(first, min(rows, first + GENERATE_ROWS)))
    return path, rows


def _readings(first: int, end: int) -> bytes:
    """Rows [first, end) of the generated CSV: row i is station E{i % 100}, hour i // 100 after
    START, temperature (7i mod 60) - 20 + 0.5, humidity 40 + i mod 50 (`x` for one row in
    BAD_EVERY), wind i mod 13 + 0.25."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def mod(values: pa.Array, by: int) -> pa.Array:
        return pc.subtract(values, pc.multiply(pc.divide(values, by), by))

    def text(values: pa.Array) -> pa.Array:
        return pc.cast(values, pa.string())

    i = pa.array(range(first, end), pa.int64())
    hours = range(first // 100, (end - 1) // 100 + 1)  # a timestamp per 100 rows: few to format
    stamps = pa.array(
        [time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(START + 3600 * h)) for h in hours]
    )
    humidity = pc.if_else(
        pc.equal(mod(i, BAD_EVERY), BAD_EVERY - 1), "x", text(pc.add(mod(i, 50), 40))
    )
    line = pc.binary_join_element_wise(
        pc.binary_join_element_wise("E", pc.utf8_lpad(text(mod(i, 100)), 2, "0"), ""),
        pc.take(stamps, pc.subtract(pc.divide(i, 100), hours[0])),
        pc.binary_join_element_wise(text(pc.subtract(mod(pc.multiply(i, 7), 60), 20)), ".5", ""),
        humidity,
        pc.binary_join_element_wise(text(mod(i, 13)), ".25\n", ""),
        ",",
    )
    whole = pa.ListArray.from_arrays(pa.array([0, len(line)], pa.int32()), line)
    return pc.binary_join(whole, "")[0].as_buffer().to_pybytes()


def settle(path: Path) -> None:
    """Wait until `path` has settled (`pins.SETTLED_S` past its last change), as a job's inputs
    have, written well before it runs: ingest re-reads a file changed in the last moments on
    every run, and remembers the scan of a settled one, so a cached rerun reads no input."""
    from jobrunner.tasks.features.pins import SETTLED_S

    found = path.stat()
    wait = max(found.st_mtime_ns, found.st_ctime_ns) / 1e9 + SETTLED_S - time.time()
    time.sleep(max(0.0, wait) + 0.1)


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


def _timed_baseline(input_dir: Path, out: Path, threads: bool) -> tuple[float, int, float]:
    """The baseline's seconds, rows written and peak RSS (MB)."""
    began = time.perf_counter()
    rows = baseline(input_dir, out, threads)
    return time.perf_counter() - began, rows, _peak_mb()


def baseline(input_dir: Path, out: Path, threads: bool = True) -> int:
    """The same transformation in one process with pyarrow alone, everything in memory: parse
    (pyarrow's CSV reader), keep the rows that pass validate's rules, derive the same features
    with the same functions, standardize, sort in the feature file's order, write the feature
    file. What it leaves out is what the pipeline adds: partitions, work files between steps,
    hashing for lineage, the quarantine's reasons, an external sort, the versioned store.
    `threads`: pyarrow's thread pools on every core (its default), or on one core, which shows
    how the pipeline's worker processes scale against one process on one core. Returns rows
    written."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pv

    from jobrunner.tasks.features.parquet import write_parquet
    from jobrunner.tasks.features.schema import FEATURE_SCHEMA, RAW_COLUMNS
    from jobrunner.tasks.features.transform import derive_features
    from jobrunner.tasks.features.validate import BOUNDS, TIMESTAMP_FORMAT, plainly_good

    if not threads:  # this process runs only the baseline: see `_baseline`
        pa.set_cpu_count(1)
        pa.set_io_thread_count(1)
    table = pv.read_csv(
        input_dir / "readings.csv",
        read_options=pv.ReadOptions(use_threads=threads),
        convert_options=pv.ConvertOptions(column_types=dict.fromkeys(RAW_COLUMNS, pa.string())),
    )
    # Lines are rows here (no blank lines generated): the header is line 1.
    table = table.append_column("source_line", pa.array(range(2, table.num_rows + 2)))
    table = table.filter(plainly_good({name: table[name] for name in RAW_COLUMNS}))
    valid = pa.table(
        {
            "station": table["station"],
            "timestamp": pc.strptime(table["timestamp"], TIMESTAMP_FORMAT, "us"),
            **{name: pc.cast(table[name], pa.float64()) for name in BOUNDS},
            "source_file": pa.repeat("readings.csv", table.num_rows),
            "source_line": table["source_line"],
        }
    )
    features = derive_features(valid)
    temperature = features["temperature_c"]
    mean, spread = pc.mean(temperature).as_py(), pc.stddev(temperature).as_py()
    z = pc.round(pc.divide(pc.subtract(temperature, mean), spread), 6)
    features = features.append_column("temperature_z", z).select(FEATURE_SCHEMA.names)
    order = [(name, "ascending") for name in ("station", "timestamp", "source_file", "source_line")]
    write_parquet(features.sort_by(order).cast(FEATURE_SCHEMA), out)
    return features.num_rows


@dataclass
class SizeFigures:
    megabytes: float
    rows: int
    steps: list[StepFigure]
    cached_steps: list[StepFigure]  # the fully cached rerun's
    pipeline_s: float
    cached_s: float
    baseline_s: float
    baseline_one_thread_s: float  # the same, pyarrow on one core
    baseline_peak_mb: float
    load: tuple[float, float]  # 1-minute load average before and after


def measure(megabytes: float, workers: int) -> SizeFigures:
    """The pipeline (each step in a fresh process, partitions `workers` at a time), a fully
    cached rerun, and the pyarrow baseline, on one generated input."""
    from jobrunner.worker.broker.embedded import EmbeddedRedis

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="jobrunner-data-bench-") as temp:
        data_dir = Path(temp)
        source, rows = generate(data_dir / "inputs" / "bench", megabytes)
        settle(source)
        server = EmbeddedRedis(data_dir / "redis")  # the step cache's entries
        try:
            url = server.start()
            steps, written = run_pipeline(data_dir, source.parent, workers, url)
            again, _ = run_pipeline(data_dir, source.parent, workers, url)
        finally:
            server.stop()
        baseline_s, baseline_peak = _baseline(source.parent, data_dir, written, threads=True)
        one_thread_s, _ = _baseline(source.parent, data_dir, written, threads=False)
        pipeline_s, cached_s = (sum(f.seconds for f in run) for run in (steps, again))
    load = (load_before, os.getloadavg()[0])
    return SizeFigures(
        megabytes,
        rows,
        steps,
        again,
        pipeline_s,
        cached_s,
        baseline_s,
        one_thread_s,
        baseline_peak,
        load,
    )


def _baseline(input_dir: Path, data_dir: Path, written: int, threads: bool) -> tuple[float, float]:
    """The baseline in a fresh process (its thread pools sized for it alone): its seconds and
    peak RSS (MB); an error if it did not write the rows the pipeline did."""
    with _pool(1) as pool:
        pool.submit(_warm).result()
        seconds, rows, peak = pool.submit(
            _timed_baseline, input_dir, data_dir / "baseline.parquet", threads
        ).result()
    if rows != written:  # then the two did not do the same work
        raise RuntimeError(f"baseline wrote {rows} rows, the pipeline {written}")
    return seconds, peak


def main(sizes: list[float], workers: int = 2) -> None:
    for megabytes in sizes:
        found = measure(megabytes, workers)
        print(
            f"{megabytes:g} MB, {found.rows:,} rows: pipeline {found.rows / found.pipeline_s:,.0f} "
            f"rows/s, baseline {found.rows / found.baseline_s:,.0f} rows/s (one thread "
            f"{found.rows / found.baseline_one_thread_s:,.0f}), cached rerun "
            f"{found.cached_s:.1f} s (first {found.pipeline_s:.1f} s); baseline peak RSS "
            f"{found.baseline_peak_mb:,.0f} MB; 1-min load {found.load[0]:.1f} -> "
            f"{found.load[1]:.1f}"
        )
        for f, c in zip(found.steps, found.cached_steps, strict=True):
            print(
                f"  {f.step:20s} {f.seconds:8.2f} s  peak RSS {f.peak_mb:8.0f} MB  "
                f"cached {c.seconds:8.2f} s"
            )


if __name__ == "__main__":
    main([float(a) for a in sys.argv[1:]] or [20])
