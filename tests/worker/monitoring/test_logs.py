"""`[logging] format = "json"`: a real worker writes Celery's own lines and the steps' lines as
JSON objects carrying the job's context; `configure`, which the exporter and the CLI call, too."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from jobrunner.config import get_settings
from jobrunner.worker.client import Client
from jobrunner.worker.monitoring import logs
from tests.conftest import Workers
from tests.support import metric_steps  # noqa: F401 - registers the `measured` pipeline
from tests.support.polling import eventually

NODE = "general-jsonlogs@test"


def _records(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of a log file (Celery's start-up banner is not a log line)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


@pytest.mark.integration
def test_worker_lines_are_json_with_the_job_context(workers: Workers, client: Client) -> None:
    workers.start(
        "general",
        NODE,
        JOBRUNNER_LOGGING__FORMAT="json",
        JOBRUNNER_IMPORTS="tests.support.steps,tests.support.metric_steps",
    )
    job = client.submit("measured", {}, tier="high")
    assert job.wait(60).state == "SUCCESS"
    records = _records(workers.log_dir / f"{NODE}.log")
    assert {"timestamp", "level", "logger", "message"} <= set(records[0])
    (own,) = [r for r in records if r["logger"] == "tests.measured"]
    assert own["message"] == "measuring" and own["level"] == "INFO"
    assert (own["job_id"], own["pipeline"], own["tier"], own["step"]) == (
        job.id,
        "measured",
        "high",
        "measured",
    )
    assert own["worker"] == NODE and own["task_id"]
    received = [r for r in records if "received" in r["message"] and own["task_id"] in r["message"]]
    assert received and received[0]["worker"] == NODE  # Celery's own line, in its MainProcess
    assert "data" not in received[0]  # the payload Celery attaches stays out of the log

    def succeeded() -> list[dict[str, Any]]:  # Celery logs it after the job is recorded done
        return [
            r
            for r in _records(workers.log_dir / f"{NODE}.log")
            if r["logger"] == "celery.app.trace" and own["task_id"] in r["message"]
        ]

    eventually(lambda: bool(succeeded()))
    assert succeeded()[0]["job_id"] == job.id


def test_json_records_keep_what_extra_names_and_text_stays_plain(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = get_settings()
    json_settings = settings.model_copy(
        update={"logging": settings.logging.model_copy(update={"format": "json"})}
    )
    log = logging.getLogger("jobrunner.test_logs")
    try:
        logs.configure(json_settings)
        log.warning("hello %s", "world", extra={"step": "given"})
        logs.configure(settings)
        log.warning("plain")
    finally:
        logging.basicConfig(handlers=[], force=True)
    first, second = capsys.readouterr().err.splitlines()
    record = json.loads(first)
    assert record["message"] == "hello world" and record["step"] == "given"
    assert record["level"] == "WARNING" and record["logger"] == "jobrunner.test_logs"
    assert "job_id" not in record  # outside a task nothing is made up
    assert second.endswith("jobrunner.test_logs: plain") and not second.startswith("{")
