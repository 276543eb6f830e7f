"""Run the feature pipeline's steps in this process, in canvas order, each result passed on
through JSON as Celery passes it: for tests of step logic that need no broker and no worker."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import jobrunner.tasks.features  # noqa: F401 - registers the steps
from jobrunner.tasks.cache import CacheStore
from jobrunner.tasks.features.files import read_jsonl, sha256_file
from jobrunner.tasks.features.objects import open_root
from jobrunner.tasks.features.schema import RAW_COLUMNS
from jobrunner.tasks.features.versions import versions
from jobrunner.tasks.step import StepContext, call_step, get_step
from tests.support.sample_data import bad_rows, sample_files

CSV_HEADER = ",".join(RAW_COLUMNS) + "\n"
JOB_ID = "0123456789abcdef0123456789abcdef"  # the client's format (uuid4 hex)


def run_step(
    name: str,
    payload: dict[str, Any],
    upstream: Any,
    data_dir: Path,
    job_id: str,
    cache: CacheStore | None = None,
    use_cache: bool = True,
) -> Any:
    """One step run as a worker runs it: through the step cache if given one."""
    ctx = StepContext(job_id, "features", "medium", name, data_dir, use_cache=use_cache)
    result, _ = call_step(get_step(name), payload, upstream, ctx, cache, use_cache)
    return json.loads(json.dumps(result))


def run_features(
    data_dir: Path,
    payload: dict[str, Any],
    job_id: str = JOB_ID,
    cache: CacheStore | None = None,
    use_cache: bool = True,
) -> dict[str, Any]:
    """The result of one job of the feature pipeline: `store`'s."""

    def run(name: str, upstream: Any) -> Any:
        return run_step(name, payload, upstream, data_dir, job_id, cache, use_cache)

    partitions = run("ingest", None)
    done = [run("transform", run("validate", partition)) for partition in partitions]
    return run("store", run("aggregate", done))


def csv_readings(count: int) -> str:
    """A CSV file of `count` valid readings, hourly, over 100 stations."""
    start = datetime(2026, 6, 1)
    return CSV_HEADER + "".join(
        f"E{i % 100:02d},{(start + timedelta(hours=i)).isoformat()},{i % 30}.5,60,2\n"
        for i in range(count)
    )


def inputs_under(data_dir: Path, name: str = "in") -> Path:
    """A directory for raw inputs under `data_dir`'s input root (inputs are read nowhere else)."""
    return data_dir / "inputs" / name


def write_inputs(directory: Path, files: dict[str, str | bytes | None]) -> Path:
    """`directory`, created, holding `files` (name: content). None makes a link to nowhere: a
    file that cannot be read, even by root."""
    directory.mkdir(parents=True)
    for name, content in files.items():
        path = directory / name
        if content is None:
            path.symlink_to(directory / "nowhere")
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return directory


def check_quarantine(path: str) -> None:
    """The quarantine holds exactly the sample data's planted bad rows, each with its reason and
    raw text, in file and line order."""
    entries = list(read_jsonl(Path(path)))
    expected = sorted(bad_rows(), key=lambda bad: (bad.file, bad.line))
    assert [(e["file"], e["line"]) for e in entries] == [(b.file, b.line) for b in expected]
    files = sample_files()
    for entry, bad in zip(entries, expected, strict=True):
        assert bad.reason in entry["reason"]
        assert entry["raw"] == files[bad.file][0].splitlines()[bad.line - 1]


def check_lineage(record: dict[str, Any], result: dict[str, Any]) -> None:
    """A lineage record agrees with the files it names, with the job's result, and with itself:
    each step's rows out are the next one's rows in."""
    for item in record["inputs"]:
        assert item["sha256"] == sha256_file(Path(item["path"]))
    assert record["output"] == {
        "path": result["path"],
        "sha256": sha256_file(Path(result["path"])),
        "rows": result["rows"],
    }
    assert record["quarantine"]["sha256"] == sha256_file(Path(result["quarantine_path"]))
    assert record["quarantine"]["rows"] == result["quarantined"]
    steps = {fact["step"]: fact for fact in record["steps"]}
    assert list(steps) == ["ingest", "validate", "transform", "aggregate", "store"]
    assert all(len(fact["code_version"]) == 16 for fact in steps.values())
    partitions = len(record["partitions"])
    assert [fact["runs"] for fact in steps.values()] == [1, partitions, partitions, 1, 1]
    assert steps["ingest"]["rows_in"] == sum(item["rows"] for item in record["inputs"])
    validate = steps["validate"]
    assert validate["rows_in"] == validate["rows_out"] + validate["quarantined"]
    assert validate["quarantined"] == result["quarantined"]
    assert sum(p["quarantined"] for p in record["partitions"]) == result["quarantined"]
    for before, after in pairwise(steps.values()):
        assert before["rows_out"] == after["rows_in"], (before["step"], after["step"])
    assert steps["store"]["rows_out"] == result["rows"]
    assert [fact["step"] for fact in result["steps"]] == list(steps)  # the data-flow metrics
    commit = versions(open_root(record["store"]), record["feature_set"])[result["version"] - 1]
    assert (commit.version, commit.job_id) == (record["version"], record["job_id"])
    assert commit.features.sha256 == record["output"]["sha256"]
    assert commit.quarantine.sha256 == record["quarantine"]["sha256"]
    assert record["output"]["path"].endswith(commit.features.file)
