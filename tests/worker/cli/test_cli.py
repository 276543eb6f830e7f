"""The `jobrunner` command as a user runs it: help everywhere, one-line errors with a non-zero
exit and nothing enqueued on bad input, then submit/status/pipelines against a real worker."""

from __future__ import annotations

import json

import pytest
import redis

from jobrunner.config import TIERS, get_settings
from jobrunner.worker.broker.keys import JOBS
from jobrunner.worker.store.dead_letters import DeadLetterStore, fail_job
from jobrunner.worker.store.jobs import FAILURE, JobStore
from tests.conftest import Workers
from tests.support.cli import run
from tests.support.sealed import unreadable_job

pytestmark = pytest.mark.integration

COMMANDS = [
    "up",
    "demo",
    "submit",
    "status",
    "pipelines",
    "worker",
    "flower",
    "metrics",
    "deploy",
    "bench",
    "features",
    "cache",
]


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: jobrunner" in result.stdout


def _queued(client: redis.Redis) -> int:
    return sum(client.llen(get_settings().queue(tier)) for tier in TIERS)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["nope"], {}, "unknown pipeline 'nope' (known: "),
        (["chain3", "-p", "urgent"], {}, "unknown tier 'urgent': choose one of high, medium, low"),
        (["chain3", "--payload", "{start: 1"], {}, "--payload is not valid JSON"),
        (["chain3", "--payload", '{"start": "x"}'], {}, "payload for chain3: start: Input should"),
        (["chain3", "--payload", '{"strat": 1}'], {}, "payload for chain3: strat: Extra inputs"),
        (["chain3", "--payload", "[1, 2]"], {}, "payload for chain3 must be a JSON object"),
        (["chain3", "--no-cache"], {}, "--no-cache: pipeline chain3 has no cached steps"),
        (["chain3", "--payload-file", "/no/such.json"], {}, "payload file /no/such.json does not"),
        (
            ["chain3", "--payload", '{"start": 123456789}'],
            {"JOBRUNNER_LIMITS__PAYLOAD_MAX_BYTES": "10"},
            "over the 10 limit",
        ),
        (
            ["chain3"],
            {"JOBRUNNER_BROKER_URL": "redis://127.0.0.1:1/0"},
            "cannot reach broker redis://127.0.0.1:1/0",
        ),
        (["chain3"], {"JOBRUNNER_POOLS__GENERAL__CONCURRENCY": "-1"}, "pools.general.concurrency"),
    ],
)
def test_bad_submission_is_one_line_and_enqueues_nothing(
    redis_client: redis.Redis, args: list[str], env: dict[str, str], message: str
) -> None:
    jobs_before = redis_client.zcard(JOBS)
    result = run("submit", *args, **env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert _queued(redis_client) == 0
    assert redis_client.zcard(JOBS) == jobs_before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["worker", "--pool", "gpu"], "unknown pool 'gpu': configured pools are express, general"),
        (["flower"], "Flower needs credentials: set JOBRUNNER_FLOWER__BASIC_AUTH=user:password"),
    ],
)
def test_runtime_commands_refuse_bad_setup(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"jobrunner: error: {message}")


def test_wrong_broker_password_is_one_line(redis_client: redis.Redis, redis_url: str) -> None:
    wrong = redis_url.replace("redis://:", "redis://:wrong", 1)
    result = run("submit", "chain3", JOBRUNNER_BROKER_URL=wrong)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("refused our password")
    assert "wrong" not in result.stderr  # the password is never printed


def test_pipelines_lists_schema() -> None:
    result = run("pipelines", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed["features"]["steps"] == ["ingest", "validate", "transform", "aggregate", "store"]
    assert listed["chain3"]["payload_schema"]["properties"]["start"]["type"] == "integer"


def test_submit_wait_status_with_a_worker(workers: Workers) -> None:
    workers.start("general", "general-cli@test", JOBRUNNER_POOLS__GENERAL__CONCURRENCY="1")
    result = run("submit", "chain3", "-p", "high", "--payload", '{"start": 40}', "--wait", "--json")
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["state"] == "SUCCESS" and outcome["result"] == 42

    job = json.loads(run("status", outcome["job_id"], "--json").stdout)
    assert (job["pipeline"], job["tier"], job["state"], job["result"]) == (
        "chain3",
        "high",
        "SUCCESS",
        42,
    )

    overview = json.loads(run("status", "--json").stdout)
    assert [t["tier"] for t in overview["tiers"]] == list(TIERS)
    (worker,) = [w for w in overview["workers"] if w["node"] == "general-cli@test"]
    assert (worker["pool"], worker["processes"], worker["state"]) == ("general", 1, "admitting")
    assert worker["memory_available_mb"] > 0
    assert outcome["job_id"] in [j["id"] for j in overview["recent_jobs"]]


def test_failed_job_exits_non_zero_naming_the_step(workers: Workers) -> None:
    result = run("submit", "fails", "--wait")
    assert result.returncode == 1
    assert "step explode failed: RuntimeError: boom" in result.stderr


def test_unknown_job_status() -> None:
    result = run("status", "0" * 32)
    assert result.returncode == 1
    assert "unknown job 000" in result.stderr


def test_listings_print_a_table_of_their_entries(redis_client: redis.Redis) -> None:
    """dlq, set-aside and audit print their entries as one table each (JSON with --json)."""
    from jobrunner.worker.store.set_aside import SetAsideStore

    entry = SetAsideStore(redis_client).add("not a message", "a reason to keep", "jobrunner.low")
    for args, title in (
        (("dlq", "list"), "dead letters ("),
        (("set-aside", "list"), "set-aside messages ("),
        (("audit",), "audit ("),
    ):
        shown = run(*args)
        assert shown.returncode == 0, shown.stderr
        assert title in shown.stdout, args
    listed = run("set-aside", "list")
    assert "a reason to keep" in listed.stdout and "jobrunner.low" in listed.stdout
    SetAsideStore(redis_client).remove(str(entry))


def test_status_lists_a_record_sealed_under_a_key_this_host_lacks(
    redis_client: redis.Redis,
) -> None:
    """State and timings load without the payload key: the overview lists such a job and its
    dead letter like any other; only one job's status, which shows the payload, needs the key."""
    with unreadable_job(redis_client) as job_id:
        keyless = JobStore(redis_client, 60)
        assert fail_job(keyless, DeadLetterStore(redis_client), job_id, step="", summary="sealed")
        shown = run("status", "--json")
        assert shown.returncode == 0, shown.stderr
        data = json.loads(shown.stdout)
        assert {"id": job_id, "state": FAILURE} in [
            {"id": row["id"], "state": row["state"]} for row in data["recent_jobs"]
        ]
        assert job_id in [row["job_id"] for row in data["recent_failures"]]
        one = run("status", job_id)
        assert one.returncode == 1 and "payload_key" in one.stderr, one.stderr
