"""Exact moments (`columns.exact_sums`, `Moments`): the sum and sum of squares of any finite
doubles, exactly, however the values are ordered or cut; and the dataset statistics built on
them agree with Python's own over the feature file."""

from __future__ import annotations

import itertools
import json
import math
import random
import statistics
import struct
from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from jobrunner.tasks.features.aggregate import Runs
from jobrunner.tasks.features.columns import SQUARES_SCALE, SUM_SCALE, Moments, exact_sums
from jobrunner.tasks.features.schema import STATISTICS_COLUMNS
from tests.support.features import inputs_under, run_features, write_inputs


def _doubles(seed: int) -> list[float]:
    """Plain readings, extremes, subnormals, signed zeros, and random bit patterns."""
    rng = random.Random(seed)
    values = [round(rng.uniform(-60, 60), rng.randint(0, 6)) for _ in range(3000)]
    values += [5e-324, -5e-324, 1e-310, 0.0, -0.0, 1.7976931348623157e308, -1e300, 0.1, 2.5]
    values += [
        struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(3000)
    ]
    return [v for v in values if math.isfinite(v)]


def test_exact_sums_are_exact_in_any_order_and_any_chunks() -> None:
    for seed in range(3):
        values = _doubles(seed)
        total, squares = exact_sums(pa.array(values))
        assert Fraction(total, 1 << SUM_SCALE) == sum(map(Fraction, values))
        assert Fraction(squares, 1 << SQUARES_SCALE) == sum(Fraction(v) ** 2 for v in values)
        random.Random(seed).shuffle(values)
        cut = len(values) // 3
        again = exact_sums(pa.chunked_array([values[:cut], values[cut:]]))
        assert again == (total, squares)
        halves = Moments.of(pa.array(values[:cut])) + Moments.of(pa.array(values[cut:]))
        assert halves == Moments.of(pa.array(values))
        low, high = halves.low, halves.high
        assert (low, high) == (min(values), max(values))


def test_the_extremes_put_the_negative_zero_first_whichever_comes_first() -> None:
    for values in ([0.0, -0.0, 1.0], [-0.0, 0.0, 1.0], [-1.0, 0.0, -0.0], [-1.0, -0.0, 0.0]):
        found = Moments.of(pa.array(values))
        sides = Moments.of(pa.array(values[:1])) + Moments.of(pa.array(values[1:]))
        for low, high in ((found.low, found.high), (sides.low, sides.high)):
            assert str(low) == ("-0.0" if values[0] == 0.0 else "-1.0")
            assert str(high) == ("1.0" if values[0] == 0.0 else "0.0")


def test_station_runs_are_counted_across_batch_boundaries() -> None:
    stations = ["A", "A", "B", "B", "B", "C", "D", "D"]
    for cuts in ([], [1], [2], [3, 4], [0, 0, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7]):
        edges = [0, *cuts, len(stations)]
        batches = [
            pa.record_batch({"station": stations[a:b]}, pa.schema([("station", pa.string())]))
            for a, b in itertools.pairwise(edges)
        ]
        runs = Runs("station")
        assert list(runs.through(batches)) == batches
        assert runs.count == 4, cuts
    empty = Runs("station")
    assert list(empty.through([])) == [] and empty.count == 0


def test_moments_give_the_correctly_rounded_mean_and_the_population_deviation() -> None:
    values = [round(random.Random(7).gauss(12, 9), 1) for _ in range(5000)]
    mean, std = Moments.of(pa.array(values)).mean_and_std()
    assert mean == float(sum(map(Fraction, values)) / len(values))
    assert math.isclose(std, statistics.pstdev(values), rel_tol=1e-15)


def test_the_dataset_statistics_are_those_of_the_feature_file(tmp_path: Path) -> None:
    rng = random.Random(3)
    lines = ["station,timestamp,temperature_c,humidity_pct,wind_ms"]
    lines += [
        f"E{i % 7:02d},2026-06-{1 + i % 28:02d}T{i % 24:02d}:00:00,{rng.uniform(-30, 40)!r},"
        f"{rng.uniform(1, 100)!r},{rng.uniform(0, 30)!r}"
        for i in range(600)
    ]
    directory = write_inputs(inputs_under(tmp_path), {"a.csv": "\n".join(lines) + "\n"})
    payload = {"input_dir": str(directory), "partition_rows": 77}
    result = run_features(tmp_path, payload)
    table = pq.read_table(result["path"])
    published = json.loads(Path(result["lineage_path"]).read_text())["statistics"]
    times = table["timestamp"].to_pylist()
    assert published["rows"] == table.num_rows == 600
    assert published["stations"] == len(set(table["station"].to_pylist())) == 7
    assert published["first_timestamp"] == min(times).isoformat()
    assert published["last_timestamp"] == max(times).isoformat()
    found = published["columns"]
    for name in STATISTICS_COLUMNS:
        column = table[name].to_pylist()
        assert found[name]["mean"] == round(statistics.fmean(column), 6)
        assert found[name]["std"] == round(statistics.pstdev(column), 6)
        assert (found[name]["min"], found[name]["max"]) == (min(column), max(column))
