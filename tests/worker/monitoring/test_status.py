"""`jobrunner status` on a real worker: one job's step tree shows a chord's parallel members and
its callback, each with state, worker, wait and run time; the overview shows tiers with their
oldest wait, workers with their headroom, and recent failures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from jobrunner.config import TIERS
from jobrunner.worker.client import Client
from tests.conftest import Workers
from tests.support.cli import run

pytestmark = pytest.mark.integration

NODE = "general-status@test"


@pytest.fixture(scope="module", autouse=True)
def general(workers: Workers) -> Iterator[None]:
    workers.start("general", NODE, JOBRUNNER_POOLS__GENERAL__CONCURRENCY="2")
    yield


def _done_on_our_worker(run: dict[str, Any]) -> None:
    assert run["state"] == "SUCCESS" and run["worker"] == NODE
    assert run["wait_s"] is not None and run["wait_s"] >= 0
    assert run["run_s"] is not None and run["run_s"] >= 0


def test_job_tree_shows_chord_members_and_callback(client: Client) -> None:
    job = client.submit("chord_first", {"start": 20}, tier="high")
    assert job.result(60) == 40

    shown = run("status", job.id, "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["state"] == "SUCCESS"
    steps = data["steps"]
    assert [r["step"] for r in steps["start"]] == ["start"]  # a flow opening in parallel
    chord = steps["flow"]
    assert chord["kind"] == "chord"
    assert [m["step"] for m in chord["members"]] == ["one", "one"]
    for member in chord["members"]:
        (member_run,) = member["runs"]
        _done_on_our_worker(member_run)
    assert chord["then"]["step"] == "total"
    (callback,) = chord["then"]["runs"]
    _done_on_our_worker(callback)
    (join,) = chord["join"]
    assert join["state"] == "SUCCESS"
    assert steps["other"] == []

    text = run("status", job.id)
    assert text.returncode == 0, text.stderr
    for expected in ("chord", "members (in parallel)", "then (callback)", "total", NODE):
        assert expected in text.stdout


def test_failed_member_is_shown_with_its_error(client: Client) -> None:
    job = client.submit("group_fails", tier="medium")
    assert job.wait(60).state == "FAILURE"
    data = json.loads(run("status", job.id, "--json").stdout)
    group = data["steps"]["flow"]["children"][1]
    assert group["kind"] == "group"
    boom = group["members"][1]["runs"][0]
    assert (boom["step"], boom["state"]) == ("explode", "FAILURE")
    assert "boom" in boom["error"]


def test_overview_lists_tiers_workers_and_failures() -> None:
    shown = run("status", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert [t["tier"] for t in data["tiers"]] == list(TIERS)
    assert all("oldest_age_s" in t for t in data["tiers"])
    (worker,) = [w for w in data["workers"] if w["node"] == NODE]
    assert worker["processes"] == 2 and worker["headroom_mb"] > 0
    assert any(f["pipeline"] == "group_fails" for f in data["recent_failures"])

    text = run("status")
    assert text.returncode == 0, text.stderr
    for expected in ("tiers", "oldest waiting", "headroom", "recent failures", NODE):
        assert expected in text.stdout
