"""The HTTP API served by uvicorn against the test Redis and a real worker: roles and scopes,
problem+json errors, submit, long-poll and events with curl, batches, the audit trail."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from jobrunner.config import get_settings
from jobrunner.worker.broker.keys import TOKEN
from jobrunner.worker.client import Client
from jobrunner.worker.monitoring.metrics import JobrunnerCollector
from jobrunner.worker.store.audit import audit_log
from tests.conftest import Workers
from tests.fixtures.api import ApiServer, MakeToken
from tests.support.cli import run

pytestmark = pytest.mark.integration

NODE = "general-api@test"
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module", autouse=True)
def general(workers: Workers) -> Iterator[None]:
    workers.start("general", NODE, JOBRUNNER_POOLS__GENERAL__CONCURRENCY="2")
    yield


def _audit(redis_client: redis.Redis, since: float) -> list[dict[str, object]]:
    return audit_log(redis_client, get_settings()).read(since)


def test_role_table(
    api_server: ApiServer, make_token: MakeToken, redis_client: redis.Redis, client: Client
) -> None:
    """Each role's allowed and refused calls: 401 without a live token, 403 out of role or
    scope, 200/202 within it, 404/409 for an unknown or finished job and a tier not paused;
    each refusal, submission and control call is audited, and refusals are counted for the
    exporter. A cancelled job reads CANCELLED; a paused tier shows in `jobrunner status`."""
    since = time.time()
    viewer = make_token("viewer")
    submitter = make_token("submitter", pipelines=["chain3"], tiers=["low", "medium"])
    operator = make_token("operator")
    expired = make_token("operator", expires_s=0.001)
    revoked = make_token("operator")
    revoked_id = revoked.removeprefix("jr_").split(".")[0]
    run("tokens", "revoke", revoked_id)
    job_id = client.submit("chain3", {"start": 1}, tier="low").id
    sleepy = client.submit("sleepy", {}, tier="low").id
    # Cannot finish before it is cancelled (terminated if it started: the worker stays free).
    doomed = client.submit("sleepy", {"sleep_ms": 60_000, "tag": "doomed"}, tier="low").id
    chain3 = {"pipeline": "chain3", "payload": {"start": 1}}
    table = [
        # (token, method, path, body, status)
        (None, "GET", "/pipelines", None, 401),
        ("jr_nope.nope", "GET", "/pipelines", None, 401),
        (viewer + "x", "GET", "/pipelines", None, 401),
        (expired, "GET", "/pipelines", None, 401),
        (revoked, "GET", "/pipelines", None, 401),
        (None, "GET", "/openapi.json", None, 401),
        (viewer, "GET", "/openapi.json", None, 200),
        (viewer, "GET", "/pipelines/sleepy", None, 200),
        (viewer, "GET", f"/jobs/{job_id}", None, 200),
        (viewer, "GET", "/dlq", None, 200),
        (viewer, "POST", "/jobs", {**chain3, "tier": "low"}, 403),
        (viewer, "DELETE", f"/jobs/{job_id}", None, 403),
        (submitter, "POST", "/jobs", {**chain3, "tier": "low"}, 202),
        (submitter, "POST", "/jobs", {**chain3, "tier": "medium"}, 202),
        (submitter, "POST", "/jobs", {**chain3, "tier": "high"}, 403),
        (submitter, "POST", "/jobs", chain3, 202),  # the default tier, medium, is in scope
        (submitter, "POST", "/jobs", {"pipeline": "sleepy", "tier": "low"}, 403),
        (
            submitter,
            "POST",
            "/jobs:batch",
            {"pipeline": "chain3", "payloads": [{}], "tier": "high"},
            403,
        ),
        (submitter, "GET", f"/jobs/{job_id}", None, 200),
        (submitter, "GET", f"/jobs/{sleepy}", None, 403),
        (submitter, "GET", "/pipelines/sleepy", None, 403),
        (submitter, "DELETE", f"/jobs/{job_id}", None, 403),
        (submitter, "POST", "/tiers/low:pause", None, 403),
        (submitter, "POST", f"/dlq/{job_id}:retry", None, 404),
        (operator, "POST", "/jobs", {**chain3, "tier": "high"}, 202),
        (operator, "DELETE", f"/jobs/{doomed}?terminate=true", None, 200),
        (operator, "DELETE", f"/jobs/{doomed}", None, 409),  # already finished: CANCELLED
        (operator, "DELETE", "/jobs/no-such-job", None, 404),
        (operator, "POST", "/tiers/low:resume", None, 409),  # not paused
        (operator, "POST", "/tiers/urgent:pause", None, 422),
        (operator, "POST", "/tiers/low:pause", None, 200),
    ]
    got = [
        (token, method, path, body, api_server.call(method, path, token, body).status)
        for token, method, path, body, _ in table
    ]
    try:
        assert got == table
        shown = json.loads(run("status", "--json").stdout)["tiers"]
        assert [row["tier"] for row in shown if row["paused"]] == ["low"]
    finally:
        resumed = api_server.call("POST", "/tiers/low:resume", operator)
    assert resumed.status == 200 and "low" not in resumed.json()
    cancelled = api_server.call("GET", f"/jobs/{doomed}", viewer).json()
    operator_who = "token:" + operator.removeprefix("jr_").split(".")[0]
    assert cancelled["state"] == "CANCELLED"
    assert cancelled["error"] == f"cancelled by {operator_who}"
    listed = api_server.call("GET", "/pipelines", submitter).json()
    assert [p["name"] for p in listed] == ["chain3"]  # a scoped token sees its pipelines only

    entries = _audit(redis_client, since)
    denied = [e for e in entries if e["outcome"] == "denied"]
    assert len(denied) == sum(1 for row in table if row[-1] in (401, 403))
    submitter_id = submitter.removeprefix("jr_").split(".")[0]
    assert {
        "who": f"token:{submitter_id}",
        "action": "submit",
        "target": "chain3",
        "where": "127.0.0.1",
    }.items() <= next(e for e in denied if "tier 'high'" in str(e["detail"])).items()
    submits = [e for e in entries if e["action"] == "submit" and e["outcome"] == "ok"]
    assert len(submits) == 4
    assert any(e["action"] == "token revoke" and e["target"] == revoked_id for e in entries)
    control = [
        (e["action"], e["target"], e["outcome"])
        for e in entries
        if e["who"] == operator_who and e["action"] in ("cancel", "pause", "resume")
    ]
    assert control == [
        ("cancel", doomed, "ok"),
        ("cancel", doomed, "failed"),
        ("resume", "low", "failed"),
        ("pause", "urgent", "failed"),
        ("pause", "low", "ok"),
        ("resume", "low", "ok"),
    ]

    exported = {
        sample.labels["action"]: sample.value
        for family in JobrunnerCollector(get_settings(), redis_client, redis_client).collect()
        if family.name == "jobrunner_denied_calls"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert exported["submit"] >= 3 and exported["authenticate"] >= 6


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"pipeline": "nope"}, 404, "unknown pipeline 'nope' (known: "),
        ({"pipeline": "chain3", "tier": "urgent"}, 422, "unknown tier 'urgent': choose one of"),
        ({"pipeline": "chain3", "payload": {"start": "x"}}, 422, "payload for chain3: start:"),
        ({"pipeline": "chain3", "payload": [1]}, 422, "payload for chain3 must be a JSON object"),
        ({"pipeline": "sleepy", "payload": {"tag": "x" * 70000}}, 413, "over the 65536 limit"),
        (
            {"pipeline": "chain3", "deadline_s": -1},
            422,
            "deadline must be a finite number of seconds",
        ),
        ({"tier": "low"}, 422, "pipeline: Field required"),
    ],
)
def test_submit_errors_are_problem_json_with_the_cli_line(
    api_server: ApiServer,
    make_token: MakeToken,
    redis_client: redis.Redis,
    body: dict[str, object],
    status: int,
    detail: str,
) -> None:
    queued = redis_client.llen(get_settings().queue("medium"))
    answer = api_server.call("POST", "/jobs", make_token("operator"), body)
    assert (answer.status, answer.headers["content-type"]) == (status, PROBLEM)
    problem = answer.json()
    assert problem["status"] == status and detail in problem["detail"]
    assert "\n" not in problem["detail"]
    assert redis_client.llen(get_settings().queue("medium")) == queued  # nothing enqueued
    if status == 404 or ("payload" in body and status == 422):  # the CLI's very line
        payload = json.dumps(body.get("payload", {}))
        cli = run("submit", str(body["pipeline"]), "--payload", payload)
        assert cli.stderr.strip() == f"jobrunner: error: {problem['detail']}"


def test_malformed_json_and_idempotency_conflict(
    api_server: ApiServer, make_token: MakeToken
) -> None:
    token = make_token("submitter")
    answer = api_server.call("POST", "/jobs", token, raw=b'{"pipeline": ')
    assert (answer.status, answer.headers["content-type"]) == (400, PROBLEM)
    huge = api_server.call("POST", "/jobs", token, raw=b" " * 200_000)
    assert (huge.status, huge.headers["content-type"]) == (413, PROBLEM)
    key = f"k-{time.time_ns()}"
    first = api_server.call("POST", "/jobs", token, {"pipeline": "chain3", "idempotency_key": key})
    again = api_server.call("POST", "/jobs", token, {"pipeline": "chain3", "idempotency_key": key})
    assert (first.status, again.status) == (202, 200)
    assert first.json()["job_id"] == again.json()["job_id"]
    other = {"pipeline": "chain3", "payload": {"start": 9}, "idempotency_key": key}
    conflict = api_server.call("POST", "/jobs", token, other)
    assert conflict.status == 409 and first.json()["job_id"] in conflict.json()["detail"]


@pytest.fixture(scope="module")
def curl() -> str:
    """curl, the non-Python client: installed from Debian when missing and run as root."""
    if shutil.which("curl") is None and os.geteuid() == 0:
        apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "curl"]
        subprocess.run(apt, check=True, capture_output=True, timeout=900)
    if shutil.which("curl") is None:
        pytest.skip("needs the Debian package curl")
    return "curl"


def _curl(*args: str, timeout_s: float = 60) -> str:
    done = subprocess.run(
        ["curl", "-sS", "--fail-with-body", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=True,
    )
    return done.stdout


def test_curl_submits_long_polls_and_follows_events(
    api_server: ApiServer, make_token: MakeToken, client: Client, curl: str
) -> None:
    token = make_token("submitter", pipelines=["chain3", "sleepy"], tiers=["low"])
    auth = f"Authorization: Bearer {token}"
    headers = _curl(
        "-D", "-", "-o", "/dev/null", "-H", auth, "-H", "Content-Type: application/json",
        "-d", json.dumps({"pipeline": "chain3", "tier": "low", "payload": {"start": 5}}),
        f"{api_server.url}/jobs",
    )  # fmt: skip
    assert headers.startswith("HTTP/1.1 202")
    location = next(
        line.split(":", 1)[1].strip() for line in headers.splitlines()
        if line.lower().startswith("location:")
    )  # fmt: skip
    job = json.loads(_curl("-H", auth, f"{api_server.url}{location}?wait=30"))
    assert (job["state"], job["result"]) == ("SUCCESS", 7)
    assert job["result"] == client.job(job["id"]).result(1)
    assert [run["state"] for run in job["steps"]["flow"]["children"][0]["runs"]] == ["SUCCESS"]

    # A job that takes a while: a short wait returns it unfinished, the events follow it.
    sleeper = client.submit("sleepy", {"sleep_ms": 1500}, tier="low").id
    short = json.loads(_curl("-H", auth, f"{api_server.url}/jobs/{sleeper}?wait=0.2"))
    assert short["state"] in ("PENDING", "STARTED")
    stream = _curl("-N", "-H", auth, f"{api_server.url}/jobs/{sleeper}/events")
    events = [
        (block.split("event: ")[1].split("\n")[0], json.loads(block.split("data: ")[1]))
        for block in stream.strip().split("\n\n")
        if "event: " in block
    ]
    assert [name for name, _ in events] == ["started", "step", "finished"]
    assert events[1][1]["state"] == "SUCCESS" and events[2][1]["state"] == "SUCCESS"
    # Resuming after the step event gives only what came after it.
    again = _curl("-N", "-H", auth, "-H", "Last-Event-ID: 0",
                  f"{api_server.url}/jobs/{sleeper}/events")  # fmt: skip
    assert "event: step" not in again and "event: finished" in again


def test_batch_submits_every_payload(api_server: ApiServer, make_token: MakeToken) -> None:
    token = make_token("submitter")
    body = {"pipeline": "chain3", "tier": "high", "payloads": [{"start": i} for i in range(3)]}
    answer = api_server.call("POST", "/jobs:batch", token, body)
    assert answer.status == 202
    ids = answer.json()["job_ids"]
    results = [api_server.call("GET", f"/jobs/{i}?wait=30", token).json()["result"] for i in ids]
    assert results == [2, 3, 4]
    bad = {**body, "payloads": [{"start": 1}, {"start": "x"}]}
    assert api_server.call("POST", "/jobs:batch", token, bad).status == 422


def test_tokens_cli_shows_once_stores_a_hash_and_revokes(
    api_server: ApiServer, redis_client: redis.Redis
) -> None:
    since = time.time()
    created = run(
        "tokens", "create", "--role", "submitter", "--pipelines", "chain3",
        "--tiers", "low,medium", "--expires", "90d", "--json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)
    secret = token["token"].split(".", 1)[1]
    stored = redis_client.hgetall(TOKEN + token["id"])
    assert stored[b"hash"].startswith(b"$argon2")
    assert all(secret.encode() not in value for value in stored.values())
    assert 89 * 86400 < token["expires_at"] - time.time() <= 90 * 86400
    listed = json.loads(run("tokens", "list", "--json").stdout)
    assert "token" not in next(t for t in listed if t["id"] == token["id"])
    high = {"pipeline": "chain3", "tier": "high"}
    assert api_server.call("POST", "/jobs", token["token"], high).status == 403
    assert api_server.call("POST", "/jobs", token["token"], {**high, "tier": "low"}).status == 202
    assert run("tokens", "revoke", token["id"]).returncode == 0
    assert api_server.call("GET", "/pipelines", token["token"]).status == 401
    plain = run("tokens", "create", "--role", "viewer").stdout  # TOKEN=$(jobrunner tokens ...)
    assert api_server.call("GET", "/pipelines", plain.strip()).status == 200
    assert plain.startswith("jr_") and plain.count("\n") == 1
    bad_tier = run("tokens", "create", "--role", "viewer", "--tiers", "urgent")
    assert "unknown tier 'urgent' in --tiers" in bad_tier.stderr
    trail = json.loads(run("audit", "--since", "1h", "--json").stdout)
    mine = [(e["action"], e["target"]) for e in trail if e["time"] >= since]
    assert ("token create", token["id"]) in mine and ("token revoke", token["id"]) in mine
    assert all(e["who"].startswith("local:") for e in trail if e["action"].startswith("token"))
    assert "payloads: stored in clear" in run("status").stdout


def test_flower_submit_task_is_held_to_a_tokens_scope(
    app: object, make_token: MakeToken, client: Client
) -> None:
    """`jobrunner.submit` (what Flower calls) with a token: the token's scope, as the API."""
    from jobrunner.worker.runtime.remote_submit import SUBMIT_TASK
    from jobrunner.worker.store.tokens import AuthError, Denied

    task = app.tasks[SUBMIT_TASK]  # type: ignore[attr-defined]
    token = make_token("submitter", pipelines=["chain3"], tiers=["low"])
    with pytest.raises(Denied, match="not scoped to tier 'high'"):
        task.run("chain3", {"start": 1}, tier="high", token=token)
    with pytest.raises(AuthError):
        task.run("chain3", {"start": 1}, tier="low", token=token + "x")
    job_id = task.run("chain3", {"start": 1}, tier="low", token=token)
    assert client.job(job_id).result(30) == 3
