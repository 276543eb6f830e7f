"""`@step(cache=True)` on a real worker: a user's two-step pipeline runs each step once across
identical jobs, again with `cache=False` or other parameters, recomputes an entry whose file is
gone, and `status` marks the reused runs. `submit --no-cache` runs them again."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobrunner.config import get_settings
from jobrunner.tasks.cache import cache_file
from jobrunner.tasks.files import sha256_file
from jobrunner.worker.client import Client
from jobrunner.worker.monitoring.status import job_status
from tests.conftest import Workers
from tests.fixtures.api import ApiServer, MakeToken
from tests.support.cached_steps import log_of
from tests.support.cli import run

pytestmark = pytest.mark.integration

TIMEOUT_S = 60
IMPORTS = "tests.support.cached_steps"  # the user's steps, as a worker and the CLI load them
API_ENV = {"JOBRUNNER_IMPORTS": IMPORTS}  # the API server's (tests.fixtures.api)


@pytest.fixture(scope="module", autouse=True)
def general(workers: Workers) -> Iterator[None]:
    workers.start(
        "general",
        "general-cached@test",
        JOBRUNNER_IMPORTS=IMPORTS,
        JOBRUNNER_RELIABILITY__REAPER_INTERVAL_S="1",  # retries submitted soon after failing
    )
    yield


def _runs(tag: str, job_id: str) -> list[str]:
    """The steps that ran (not reused) in job `job_id`."""
    log = log_of(get_settings().data_dir, tag)
    lines = log.read_text().splitlines() if log.is_file() else []
    return [line.split()[0] for line in lines if line.endswith(job_id)]


def _all_runs(tag: str) -> list[tuple[str, str]]:
    """Every run logged under `tag`: (step, job id), in order."""
    log = log_of(get_settings().data_dir, tag)
    lines = log.read_text().splitlines() if log.is_file() else []
    return [(line.split()[0], line.split()[1]) for line in lines]


def _cached_marks(job_id: str) -> dict[str, bool]:
    """Each step's run in `status JOB_ID --json`, marked cached or not."""
    flow = job_status(job_id)["steps"]["flow"]
    return {
        node["step"]: all(r["state"] == "SUCCESS" for r in node["runs"])
        and bool(node["runs"][0].get("cached"))
        for node in flow["children"]
    }


def _job(client: Client, payload: dict[str, Any], **options: Any) -> tuple[str, dict[str, Any]]:
    job = client.submit("cached", payload, **options)
    return job.id, job.result(timeout=TIMEOUT_S)


def test_identical_jobs_run_each_cached_step_once_and_status_marks_the_reuse(
    client: Client,
) -> None:
    payload = {"tag": uuid.uuid4().hex, "factor": 3}
    first_id, first = _job(client, payload)
    assert _runs(payload["tag"], first_id) == ["produce", "consume"]
    assert _cached_marks(first_id) == {"produce": False, "consume": False}
    second_id, second = _job(client, payload)
    assert _runs(payload["tag"], second_id) == []
    assert second["total"] == first["total"] == 3 * 999 * 1000 // 2
    # The reused output is this job's own file, with the same bytes.
    assert second["path"] == str(
        get_settings().data_dir.resolve() / "work" / second_id / "total.txt"
    )
    assert Path(second["path"]).read_bytes() == Path(first["path"]).read_bytes()
    assert _cached_marks(second_id) == {"produce": True, "consume": True}
    shown = run("status", second_id, JOBRUNNER_IMPORTS=IMPORTS)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("(cached)") == 2

    submitted = run(
        "submit",
        "cached",
        "--payload",
        json.dumps(payload),
        "--no-cache",
        "--wait",
        "--json",
        JOBRUNNER_IMPORTS=IMPORTS,
    )
    assert submitted.returncode == 0, submitted.stderr
    forced_id, forced = (json.loads(submitted.stdout)[k] for k in ("job_id", "result"))
    assert _runs(payload["tag"], forced_id) == ["produce", "consume"]
    assert Path(forced["path"]).read_bytes() == Path(first["path"]).read_bytes()
    assert _cached_marks(forced_id) == {"produce": False, "consume": False}

    other_id, other = _job(client, {**payload, "factor": 4})
    assert _runs(payload["tag"], other_id) == ["produce", "consume"]
    assert other["total"] != first["total"]


def test_an_entry_whose_file_is_gone_or_changed_is_recomputed_not_failed(
    client: Client,
) -> None:
    payload = {"tag": uuid.uuid4().hex}
    _, first = _job(client, payload)
    numbers = Path(first["path"]).with_name("numbers.txt")
    expected = sha256_file(numbers)
    cached = cache_file(get_settings().data_dir.resolve(), expected)
    for spoil in (lambda: cached.write_text("0\n"), cached.unlink):
        spoil()
        job_id, again = _job(client, payload)
        # produce ran again; consume's key chains to produce's, which did not change.
        assert _runs(payload["tag"], job_id) == ["produce"]
        assert again["total"] == first["total"]
        assert sha256_file(cached) == expected  # saved again, as it was
        assert _cached_marks(job_id) == {"produce": False, "consume": True}


def test_cache_false_reaches_every_way_in_batches_the_api_and_job_retries(
    client: Client, api_server: ApiServer, make_token: MakeToken
) -> None:
    """`cache=False` is a job option wherever a job is submitted: `submit_many`, the HTTP API
    (one job and a batch), and the retries of a job whose pipeline retries failed jobs."""
    payload = {"tag": uuid.uuid4().hex}
    _job(client, payload)  # every later job could reuse both steps
    jobs = client.submit_many("cached", [payload, payload], cache=False)
    for job in jobs:
        job.result(timeout=TIMEOUT_S)
        assert _runs(payload["tag"], job.id) == ["produce", "consume"]

    token = make_token("submitter")
    one = {"pipeline": "cached", "payload": payload, "cache": False}
    batch = {"pipeline": "cached", "payloads": [payload, payload], "cache": False}
    ids = [
        api_server.call("POST", "/jobs", token, one).json()["job_id"],
        *api_server.call("POST", "/jobs:batch", token, batch).json()["job_ids"],
    ]
    for job_id in ids:
        client.job(job_id).result(timeout=TIMEOUT_S)
        assert _runs(payload["tag"], job_id) == ["produce", "consume"]

    failing = {"tag": uuid.uuid4().hex}
    first = client.submit("cached_retried", failing, cache=False)
    with pytest.raises(Exception, match="refused"):
        first.result(timeout=TIMEOUT_S)
    deadline = time.monotonic() + TIMEOUT_S
    while len(_all_runs(failing["tag"])) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    # The retry, a new job, ran produce again rather than reuse the entry the first attempt
    # saved.
    (_, ran_first), (_, ran_again) = _all_runs(failing["tag"])
    assert ran_first == first.id and ran_again != first.id
