"""The bench report's arithmetic and CLI errors (pure logic: the benchmarks themselves run in CI
as `jobrunner bench --quick`)."""

from __future__ import annotations

import pytest

from jobrunner.benchmarks.report import Goal, judged, row
from jobrunner.benchmarks.run import selected
from jobrunner.config import JobrunnerError


def test_ratio_says_how_many_times_better_jobrunner_did() -> None:
    assert row("s", "wait (ms)", "Celery", 5.0, 100.0, "lower").ratio == 20.0
    assert row("s", "rate (jobs/s)", "Celery", 300.0, 600.0, "higher").ratio == 0.5
    assert row("s", "growth (%)", "Celery", 1.0, 0.0, "lower").ratio is None


def test_goals_are_judged_only_with_thresholds() -> None:
    rows = [
        row("s", "p99 (ms)", "Celery", 5.0, 100.0, "lower", Goal("ratio", ">=", 20)),
        row("s", "growth (%)", "Celery", 12.0, 1.0, "lower", Goal("jobrunner", "<", 10)),
        row("s", "median (ms)", "Celery", 5.0, 100.0, "lower"),
    ]
    assert [r.met for r in judged(rows, thresholds=True)] == [True, False, None]
    assert [r.met for r in judged(rows, thresholds=False)] == [None, None, None]


def test_unknown_scenario_is_one_clear_error() -> None:
    with pytest.raises(JobrunnerError, match=r"unknown benchmark 'nope' \(choose from: priority"):
        selected("nope")
    assert selected("chain") == ["chain"]


def test_api_scenario_runs_only_when_not_quick_or_named() -> None:
    assert "api" in selected(None) and "api" not in selected(None, quick=True)
    assert selected("api", quick=True) == ["api"]
