"""The sample raw data shipped in tasks/sample_data/, generated deterministically, and the bad
rows planted in it, so tests know exactly what the quarantine must hold and why.

Each file has two stations' hourly readings for a week (336 rows), of which 16 are bad, each
fault twice: a 4.8 % share that shows in the demo without failing the 20 % threshold.
Regenerate after changing this module: `python -m tests.support.sample_data`.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from jobrunner.tasks.features import SAMPLE_DATA_DIR

START = datetime(2026, 6, 1)
HOURS = 7 * 24
STATIONS_PER_FILE = 2
ROWS_PER_FILE = STATIONS_PER_FILE * HOURS
FIRST_BAD, BAD_EVERY, BAD_PER_FILE = 10, 20, 16
# region: (station prefix, mean temperature), one file each; central is JSON Lines.
REGIONS = {
    "east": ("E", 17.0),
    "north": ("N", 12.0),
    "south": ("S", 22.0),
    "west": ("W", 15.0),
    "central": ("C", 19.0),
}

Row = dict[str, Any]


@dataclass(frozen=True)
class BadRow:
    file: str
    line: int
    reason: str  # a fragment of the reason validate gives


def _csv(row: Row) -> str:
    return ",".join(str(value) for value in row.values())


def _json(row: Row) -> str:
    return json.dumps(row)


# A fault turns a good row into the text of a bad one, with the reason it must be quarantined.
Fault = tuple[Callable[[Row], str], str]
CSV_FAULTS: list[Fault] = [
    (
        lambda r: _csv({**r, "temperature_c": "hot"}),
        "temperature_c: Input should be a valid number",
    ),
    (lambda r: _csv({**r, "station": ""}), "station: String should match pattern"),
    (lambda r: _csv({**r, "humidity_pct": 140.0}), "humidity_pct: Input should be less than or"),
    (
        lambda r: _csv({**r, "timestamp": "2026-06-31T00:00:00"}),
        "timestamp: Input should be a valid datetime",
    ),
    (lambda r: _csv({**r, "wind_ms": -3.2}), "wind_ms: Input should be greater than or equal to 0"),
    (lambda r: _csv(r) + ",1013", "expected 5 fields, got 6"),
    (lambda r: _csv({**r, "temperature_c": "nan"}), "temperature_c: Input should be a finite"),
    (
        lambda r: _csv({**r, "timestamp": r["timestamp"] + "+02:00"}),
        "timestamp: Input should not have timezone info",
    ),
]
JSONL_FAULTS: list[Fault] = [
    (lambda r: _json(r)[:-12], "not valid JSON"),
    (
        lambda r: _json({k: v for k, v in r.items() if k != "humidity_pct"}),
        "humidity_pct: Field required",
    ),
    (
        lambda r: _json({**r, "pressure_hpa": 1013}),
        "pressure_hpa: Extra inputs are not permitted",
    ),
    (
        lambda r: _json({**r, "temperature_c": None}),
        "temperature_c: Input should be a valid number",
    ),
    (lambda r: _json(list(r.values())), "expected a JSON object, got list"),
    (lambda r: _json({**r, "temperature_c": 75.0}), "temperature_c: Input should be less than or"),
    (lambda r: _json({**r, "station": r["station"].lower()}), "station: String should match"),
    (lambda r: _json({**r, "wind_ms": "calm"}), "wind_ms: Input should be a valid number"),
]


def _readings(prefix: str, mean_c: float, rng: random.Random) -> list[Row]:
    """Hourly readings of two stations, in time order: a daily cycle plus noise."""
    rows = []
    for hour in range(HOURS):
        when = START + timedelta(hours=hour)
        for station in (f"{prefix}{n:02d}" for n in range(1, STATIONS_PER_FILE + 1)):
            temperature = mean_c + 6 * math.sin(2 * math.pi * (hour % 24 - 9) / 24)
            temperature += rng.gauss(0, 1.2)
            humidity = min(100.0, max(5.0, 70 - 2 * (temperature - mean_c) + rng.gauss(0, 8)))
            rows.append(
                {
                    "station": station,
                    "timestamp": when.isoformat(),
                    "temperature_c": round(temperature, 2),
                    "humidity_pct": round(humidity, 1),
                    "wind_ms": round(abs(rng.gauss(4, 2.5)), 2),
                }
            )
    return rows


def _file(region: str, seed: int) -> tuple[str, str, list[BadRow]]:
    """(file name, text, bad rows) of one region's file."""
    prefix, mean_c = REGIONS[region]
    jsonl = region == "central"
    name = f"readings_{region}.{'jsonl' if jsonl else 'csv'}"
    encode, faults = (_json, JSONL_FAULTS) if jsonl else (_csv, CSV_FAULTS)
    rows = _readings(prefix, mean_c, random.Random(seed))
    lines = [] if jsonl else [",".join(rows[0])]
    bad: list[BadRow] = []
    for index, row in enumerate(rows):
        number = index - FIRST_BAD
        if number >= 0 and number % BAD_EVERY == 0 and number // BAD_EVERY < BAD_PER_FILE:
            fault, reason = faults[number // BAD_EVERY % len(faults)]
            lines.append(fault(row))
            bad.append(BadRow(name, len(lines), reason))
        else:
            lines.append(encode(row))
    return name, "\n".join(lines) + "\n", bad


def sample_files() -> dict[str, tuple[str, list[BadRow]]]:
    """Every sample file by name: its text and its bad rows."""
    return {
        name: (text, bad)
        for name, text, bad in (_file(region, seed) for seed, region in enumerate(REGIONS))
    }


def bad_rows() -> list[BadRow]:
    return [row for _, bad in sample_files().values() for row in bad]


def main() -> None:
    for name, (text, _) in sample_files().items():
        (SAMPLE_DATA_DIR / name).write_text(text, encoding="utf-8")
        print(f"wrote {SAMPLE_DATA_DIR / name}")


if __name__ == "__main__":
    main()
