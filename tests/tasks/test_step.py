"""`ctx.metric`: what a step may report, so exported label sets stay bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobrunner.tasks.errors import PipelineError
from jobrunner.tasks.step import StepContext


def _ctx(metrics_max: int = 2) -> StepContext:
    return StepContext("job1", "features", "high", "validate", Path("/tmp"), {}, metrics_max)


def test_reported_figures_are_kept_as_floats_latest_value_wins() -> None:
    ctx = _ctx()
    ctx.metric("accuracy", 1)
    ctx.metric("accuracy", 0.93)
    ctx.metric("null_rate", 0.01)
    assert ctx.metrics == {"accuracy": 0.93, "null_rate": 0.01}


@pytest.mark.parametrize("name", ["Accuracy", "null-rate", "", "x" * 65, "job_1|x"])
def test_a_name_that_is_no_identifier_is_refused(name: str) -> None:
    with pytest.raises(PipelineError, match="metric name"):
        _ctx().metric(name, 1.0)


def test_more_names_than_the_bound_are_refused_naming_the_setting() -> None:
    ctx = _ctx(metrics_max=2)
    ctx.metric("a", 1)
    ctx.metric("b", 2)
    ctx.metric("a", 3)  # a known name may be reported again
    with pytest.raises(PipelineError, match="step_metrics_max"):
        ctx.metric("c", 4)
