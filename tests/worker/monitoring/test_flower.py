"""`jobrunner flower` as deployed: a real Flower process on real Redis with a real worker. It
answers only with credentials, lists our pools' nodes, shows each step with its job context and
our queues' depths, and runs a job submitted through its own HTTP API (how applications in other
languages enqueue)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis

from jobrunner.config import TIERS, get_settings
from jobrunner.worker.client import Client
from jobrunner.worker.runtime.remote_submit import SUBMIT_TASK
from jobrunner.worker.store.set_aside import SetAsideStore
from tests.conftest import Server, Workers
from tests.support.cli import run

pytestmark = pytest.mark.integration

NODE = "general-flower@test"
TIMEOUT_S = 60


@pytest.fixture(scope="module", autouse=True)
def general(workers: Workers) -> Iterator[None]:
    workers.start("general", NODE, JOBRUNNER_POOLS__GENERAL__CONCURRENCY="1")
    yield


def _eventually(check: object, what: str) -> object:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        found = check()  # type: ignore[operator]
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"{what} not seen within {TIMEOUT_S} s")


def test_refuses_without_credentials(flower_server: Server) -> None:
    assert flower_server.get("/api/workers", auth=False).status == 401
    assert flower_server.get("/", auth=False).status == 401
    assert flower_server.get("/api/workers").status == 200


def test_metrics_asks_for_credentials_too(flower_server: Server) -> None:
    """Flower's own /metrics answered anyone (task and worker names, counts)."""
    assert flower_server.get("/metrics", auth=False).status == 401
    assert b"flower_" in flower_server.get("/metrics").body


def test_a_step_applied_directly_through_flower_is_refused(
    flower_server: Server, redis_client: redis.Redis
) -> None:
    """Flower's HTTP API applies any registered task: a step with a forged job context (a path
    for a job id) is set aside by the worker, never run."""
    store = SetAsideStore(redis_client)
    store.purge(0)
    job = {"id": "/tmp/x", "pipeline": "chain3", "tier": "high", "step": "one"}
    body = {
        "kwargs": {"job": job, "payload": {"start": 1}},
        "options": {"queue": get_settings().queue("high")},
    }
    reply = flower_server.request("/api/task/async-apply/step.one", body)
    assert reply.status == 200, reply.body
    entries = _eventually(store.entries, "the step in the set-aside store")
    assert "is not a job id" in entries[0]["reason"]  # type: ignore[index]
    store.purge(0)


def test_flower_refuses_to_start_without_credentials() -> None:
    result = run("flower", JOBRUNNER_FLOWER__BASIC_AUTH="")
    assert result.returncode == 1
    assert "Flower needs credentials" in result.stderr


def test_workers_api_lists_our_pool_nodes(flower_server: Server) -> None:
    nodes = _eventually(
        lambda: [n for n in flower_server.get("/api/workers?refresh=1").json() if n == NODE],
        f"worker {NODE} in /api/workers",
    )
    assert nodes == [NODE]


def test_async_apply_submits_a_job_that_runs(flower_server: Server, client: Client) -> None:
    body = {"args": ["chain3"], "kwargs": {"payload": {"start": 5}, "tier": "high"}}
    reply = flower_server.request(f"/api/task/async-apply/{SUBMIT_TASK}", body)
    assert reply.status == 200, reply.body
    task_id = reply.json()["task-id"]

    def submitted() -> str | None:
        result = flower_server.get(f"/api/task/result/{task_id}").json()
        return result["result"] if result["state"] == "SUCCESS" else None

    job_id = _eventually(submitted, "the submission task's result")
    assert client.job(str(job_id)).result(TIMEOUT_S) == 7

    # Every step reached Flower by events, its job context readable in the kwargs.
    def steps_seen() -> list[dict[str, object]]:
        tasks = flower_server.get("/api/tasks?limit=200").json()
        mine = [t for t in tasks.values() if str(job_id) in str(t.get("kwargs"))]
        return mine if len(mine) >= 3 and all(t["state"] == "SUCCESS" for t in mine) else []

    steps = _eventually(steps_seen, "the job's steps in Flower")
    assert sorted(t["name"] for t in steps) == ["step.inc", "step.inc", "step.one"]
    for task in steps:
        for text in ("'pipeline': 'chain3'", "'tier': 'high'", "'step': "):
            assert text in task["kwargs"]
        assert task["worker"] == NODE
        assert task["sent"] and task["received"] and task["started"] and task["succeeded"]


def test_async_apply_with_a_bad_payload_fails_the_task_not_the_queue(
    flower_server: Server,
) -> None:
    body = {"args": ["chain3"], "kwargs": {"payload": {"start": "x"}}}
    task_id = flower_server.request(f"/api/task/async-apply/{SUBMIT_TASK}", body).json()["task-id"]

    def failed() -> dict[str, object] | None:
        result = flower_server.get(f"/api/task/result/{task_id}").json()
        return result if result["state"] == "FAILURE" else None

    result = _eventually(failed, "the failed submission")
    assert "payload for chain3: start" in json.dumps(result)


def test_broker_tab_shows_our_queues(flower_server: Server, client: Client) -> None:
    reply = flower_server.get("/broker")
    assert reply.status == 200
    page = reply.body.decode()
    for tier in TIERS:
        assert get_settings().queue(tier) in page


def test_partial_oauth_settings_are_a_one_line_error() -> None:
    result = run("flower", JOBRUNNER_FLOWER__AUTH_PROVIDER="flower.views.auth.GithubLoginHandler")
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        "flower OAuth needs auth_provider, auth, oauth2_key and oauth2_secret together"
    )
