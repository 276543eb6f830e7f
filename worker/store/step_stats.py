"""Per-step figures in Redis: one round trip per step run, read by the exporter and the alerts.

Counters and histograms are fields of the metrics hash (METRICS, layout in store/jobs.py):
"step_runs|<outcome>|<pipeline>|<step>", "step_<read|written>_bytes|<pipeline>|<step>" and the
histograms "step_<run|wait|rss>|<pipeline>|<step>" (per-bucket counts, "|sum", "|count"). Labels
are declared names (pipelines, steps, metric names), never job ids, so series stay bounded.

Succeeded runs also feed a short history per {pipeline, step, measure} (newest first), from which
the anomaly alerts (worker/monitoring/alerts.py) judge the latest run against the ones before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

import redis
from redis.commands.core import Script

from jobrunner.worker.broker import scripts
from jobrunner.worker.broker.keys import (
    METRICS,
    STEP_HISTORIES,
    STEP_HISTORY,
    STEP_VALUES,
    job_keys,
)
from jobrunner.worker.store.jobs import SEP, bound_field

# Decimal bounds, so the `le` labels read exactly (6.4e+07, ..., 6.4e+10).
RSS_BUCKETS_BYTES = (64e6, 256e6, 1e9, 4e9, 16e9, 64e9)
METRIC_FIELD = "metric"  # job record fields "metric|<step>|<name>": what the step reported
REPORTED_MEASURE = "metric:"  # + a reported name: its history's measure
OUTCOMES = ("succeeded", "failed", "retried", "cancelled", "cached")


@dataclass(frozen=True)
class StepRun:
    """What one run of one step measured, in the pool process that ran it."""

    pipeline: str
    step: str
    outcome: str  # succeeded, failed, retried (cached where a layer reports it; cancelled: count)
    run_s: float
    wait_s: float | None = None  # from publishing to this run starting
    peak_rss_bytes: int | None = None
    read_bytes: int = 0
    written_bytes: int = 0
    rows_out: int | None = None
    quarantine_rate: float | None = None
    reported: dict[str, float] = field(default_factory=dict)

    def measures(self) -> dict[str, float]:
        """The figures the anomaly alerts watch, by measure name."""
        found = {
            "run_s": self.run_s,
            "peak_rss_bytes": self.peak_rss_bytes,
            "rows_out": self.rows_out,
            "quarantine_rate": self.quarantine_rate,
        }
        found.update({REPORTED_MEASURE + name: value for name, value in self.reported.items()})
        return {name: float(value) for name, value in found.items() if value is not None}


def _observe(
    add: dict[str, int], addf: dict[str, float], name: str, value: float, bounds: Sequence[float]
) -> None:
    slot = next((bound_field(b) for b in bounds if value <= b), "+Inf")
    for field_name in (f"{name}{SEP}{slot}", f"{name}{SEP}count"):
        add[field_name] = add.get(field_name, 0) + 1
    addf[f"{name}{SEP}sum"] = value


def run_write(
    client: redis.Redis,
    job_id: str,
    run: StepRun,
    *,
    run_bounds: Sequence[float],
    wait_bounds: Sequence[float],
    history: int,
) -> scripts.Call:
    """The write that counts the run, observes its histograms, keeps its reported figures on the
    job record and (for a succeeded run) pushes its measures onto the step's histories: one Lua
    call, since a pipeline of twenty-odd commands costs more in redis-py than the step it
    describes. Sent by the caller, with the run's own end write (worker/store/jobs.py)."""
    labels = f"{run.pipeline}{SEP}{run.step}"
    add = {
        f"step_runs{SEP}{run.outcome}{SEP}{labels}": 1,
        f"step_read_bytes{SEP}{labels}": run.read_bytes,
        f"step_written_bytes{SEP}{labels}": run.written_bytes,
    }
    addf: dict[str, float] = {}
    _observe(add, addf, f"step_run{SEP}{labels}", run.run_s, run_bounds)
    if run.wait_s is not None:
        _observe(add, addf, f"step_wait{SEP}{labels}", max(0.0, run.wait_s), wait_bounds)
    if run.peak_rss_bytes is not None:
        _observe(add, addf, f"step_rss{SEP}{labels}", run.peak_rss_bytes, RSS_BUCKETS_BYTES)
    measures = run.measures() if run.outcome == "succeeded" else {}
    figures = {
        "add": add,
        "addf": addf,
        "values": {f"{labels}{SEP}{k}": v for k, v in run.reported.items()},
        "record": {SEP.join((METRIC_FIELD, run.step, k)): v for k, v in run.reported.items()},
        "history": {f"{labels}{SEP}{k}": v for k, v in measures.items()},
        "prefix": STEP_HISTORY,
        "keep": history,
    }
    keys = [METRICS, STEP_VALUES, job_keys(job_id).record, STEP_HISTORIES]
    return scripts.Call(_step_run(client), keys, [json.dumps(figures)])


def record(client: redis.Redis, job_id: str, run: StepRun, **bounds: Any) -> None:
    """Write the run's figures now (see `run_write` for `bounds`), in a round trip of its own."""
    run_write(client, job_id, run, **bounds).run()


def _step_run(client: redis.Redis) -> Script:
    """step_run.lua on `client`; register_script only hashes the source, once per client."""
    script = _SCRIPTS.get(client)
    if script is None:
        script = _SCRIPTS[client] = client.register_script(scripts.load("step_run"))
    return script


_SCRIPTS: WeakKeyDictionary[redis.Redis, Script] = WeakKeyDictionary()


def count(client: redis.Redis, pipeline: str, step: str, outcome: str) -> None:
    """Count a run that was never measured: a step dropped because its job was cancelled."""
    client.hincrby(METRICS, SEP.join(("step_runs", outcome, pipeline, step)), 1)


def reported(client: redis.Redis, job_id: str) -> dict[str, dict[str, float]]:
    """What the job's steps reported through ctx.metric: step -> name -> value."""
    found: dict[str, dict[str, float]] = {}
    for raw_field, raw_value in client.hgetall(job_keys(job_id).record).items():
        parts = raw_field.decode().split(SEP)
        if len(parts) == 3 and parts[0] == METRIC_FIELD:
            found.setdefault(parts[1], {})[parts[2]] = float(raw_value)
    return found


def latest_values(client: redis.Redis) -> dict[tuple[str, str, str], float]:
    """The last reported value of every {pipeline, step, name}."""
    found = {}
    for raw_field, raw_value in client.hgetall(STEP_VALUES).items():
        parts = raw_field.decode().split(SEP)
        if len(parts) == 3:
            found[(parts[0], parts[1], parts[2])] = float(raw_value)
    return found


def histories(client: redis.Redis) -> dict[tuple[str, str, str], list[float]]:
    """Every step's recent values per measure, newest first: {(pipeline, step, measure): [...]}."""
    series = sorted(raw.decode() for raw in client.smembers(STEP_HISTORIES))
    with client.pipeline(transaction=False) as pipe:
        for name in series:
            pipe.lrange(STEP_HISTORY + name, 0, -1)
        values = pipe.execute()
    found = {}
    for name, raw in zip(series, values, strict=True):
        parts = name.split(SEP)
        if len(parts) == 3 and raw:
            found[(parts[0], parts[1], parts[2])] = [float(v) for v in raw]
    return found
