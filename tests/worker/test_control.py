"""Cancel and pause on real Redis and real workers: a job cancelled mid-chord stops its queued
members and (with --terminate) its running step, and ends CANCELLED, not dead-lettered; a paused
tier takes nothing while another tier flows, live, and takes its work again on resume."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis

from jobrunner.config import get_settings
from jobrunner.worker.client import Client, JobError
from jobrunner.worker.monitoring.metrics import JobrunnerCollector
from jobrunner.worker.runtime.remote_submit import CANCEL_TASK
from jobrunner.worker.store.audit import audit_log
from jobrunner.worker.store.dead_letters import DeadLetterStore
from tests.conftest import Workers
from tests.support.cli import run
from tests.support.polling import eventually
from tests.support.steps import STARTS

pytestmark = pytest.mark.integration

ONE_PROCESS = {"JOBRUNNER_POOLS__GENERAL__CONCURRENCY": "1"}


@pytest.fixture(scope="module")
def worker(workers: Workers) -> Iterator[Workers]:
    """One worker with one process for the module (each test leaves it idle)."""
    workers.start("general", "general-control@test", **ONE_PROCESS)
    yield workers
    workers.stop_all()


def _audited(redis_client: redis.Redis, since: float, target: str) -> list[tuple[str, ...]]:
    """(who, action, outcome, detail) of the audit entries on `target` since then."""
    entries = audit_log(redis_client, get_settings()).read(since)
    return [
        (str(e["who"]), str(e["action"]), str(e["outcome"]), str(e["detail"]))
        for e in entries
        if e["target"] == target
    ]


def _cancelled_runs(redis_client: redis.Redis, pipeline: str) -> float:
    """The exporter's jobrunner_step_runs_cancelled_total over the pipeline's steps."""
    return sum(
        sample.value
        for family in JobrunnerCollector(get_settings(), redis_client, redis_client).collect()
        if family.name == "jobrunner_step_runs_cancelled"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels["pipeline"] == pipeline
    )


def test_cancel_mid_chord_terminates_the_running_member_and_drops_the_rest(
    worker: Workers, client: Client, redis_client: redis.Redis
) -> None:
    since = time.time()
    counted = _cancelled_runs(redis_client, "sleep_group")
    # One process: the first member runs (for a minute), the other two wait in the queue.
    job = client.submit("sleep_group", {"sleep_ms": 60_000, "tag": "member"}, tier="medium")
    eventually(lambda: redis_client.llen(STARTS) == 1, 30)

    done = run("cancel", job.id, "--terminate", "--by", "tester")
    assert done.returncode == 0, done.stderr
    assert "CANCELLED" in done.stdout

    # The running member is terminated, so the worker goes on to drop the two queued ones
    # (each recorded in the step tree) long before the first would have slept its minute.
    def dropped() -> int:
        return sum(step["state"] == "CANCELLED" for step in client.store.steps(job.id))

    eventually(lambda: dropped() == 2, 30)
    assert _cancelled_runs(redis_client, "sleep_group") == counted + 2  # and counted as such
    record = job.record()
    assert record.state == "CANCELLED" and record.error == "cancelled by tester"
    assert redis_client.llen(STARTS) == 1  # no other member ever started
    assert DeadLetterStore(client.store.redis).get(job.id) is None  # not dead-lettered
    [(who, *entry)] = _audited(redis_client, since, job.id)
    assert who.startswith("local:") and entry == ["cancel", "ok", "--terminate, by tester"]
    # The worker is free again: a new job runs.
    assert client.submit("chain3", {"start": 1}, tier="high").result(timeout=30) == 3


def test_cancelling_an_unknown_or_finished_job_is_one_line_and_exit_1(
    worker: Workers, client: Client, redis_client: redis.Redis
) -> None:
    since = time.time()
    finished = client.submit("chain3", {"start": 1}, tier="high")
    finished.result(timeout=30)
    with pytest.raises(JobError, match="already finished"):
        client.cancel(finished.id)
    for job_id in ("no-such-job", finished.id):
        bad = run("cancel", job_id)
        assert bad.returncode == 1
        assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("jobrunner: error: ")
        # The refusal is audited too, before its one line.
        assert [e[1:3] for e in _audited(redis_client, since, job_id)] == [("cancel", "failed")]


def test_a_paused_tier_takes_nothing_while_another_flows_and_resumes(
    worker: Workers, client: Client, redis_client: redis.Redis
) -> None:
    since = time.time()
    paused = run("pause", "low", "--by", "tester")
    assert paused.returncode == 0, paused.stderr
    try:
        held = [client.submit("sleepy", {"tag": f"low-{i}"}, tier="low") for i in range(3)]
        flowing = [client.submit("chain3", {"start": i}, tier="medium") for i in range(5)]
        assert [job.result(timeout=30) for job in flowing] == [i + 2 for i in range(5)]
        time.sleep(1.5)  # a fetch or two past the medium jobs: low must still sit
        assert [job.state for job in held] == ["PENDING"] * 3
        assert redis_client.llen(get_settings().queue("low")) == 3  # still queued and counted
        shown = json.loads(run("status", "--json").stdout)["tiers"]
        assert [row["tier"] for row in shown if row["paused"]] == ["low"]  # status marks it
        # What Flower's API sends: it cancels a held job, audited as an operator's call.
        assert client.app.tasks[CANCEL_TASK].run(held[0].id, by="flower") == "CANCELLED"
    finally:
        resumed = run("resume", "low")
    assert resumed.returncode == 0, resumed.stderr
    assert [job.wait(30).state for job in held] == ["CANCELLED", "SUCCESS", "SUCCESS"]
    assert [e[1:] for e in _audited(redis_client, since, "low")] == [
        ("pause", "ok", "by tester"),
        ("resume", "ok", ""),
    ]
    assert _audited(redis_client, since, held[0].id) == [
        ("celery:jobrunner.cancel (operator)", "cancel", "ok", "cancelled by flower")
    ]


def test_a_paused_pipeline_is_parked_while_others_run_and_resumes(
    worker: Workers, client: Client
) -> None:
    client.pause(pipeline="sleepy", by="tester")
    # Workers read paused pipelines on their admission tick (admission.check_interval_s, 0.5 s).
    time.sleep(4 * get_settings().admission.check_interval_s)
    try:
        held = [client.submit("sleepy", {"tag": f"p-{i}"}, tier="medium") for i in range(3)]
        flowing = [client.submit("chain3", {"start": i}, tier="medium") for i in range(3)]
        assert [job.result(timeout=30) for job in flowing] == [i + 2 for i in range(3)]
        eventually(lambda: client.pauses.paused()["pipeline:sleepy"]["parked"] == 3, 30)
        assert [job.state for job in held] == ["PENDING"] * 3  # parked, counted, not run
    finally:
        resumed = run("resume", "--pipeline", "sleepy")
    assert resumed.returncode == 0, resumed.stderr
    assert [job.wait(30).state for job in held] == ["SUCCESS"] * 3


def test_pause_and_resume_reject_bad_input_in_one_line(stack_env: dict[str, str]) -> None:
    for args in (("pause", "urgent"), ("resume", "--pipeline", "chain3")):
        bad = run(*args)
        assert bad.returncode == 1, args
        assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("jobrunner: error: "), args
