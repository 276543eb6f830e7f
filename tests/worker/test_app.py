"""The app factory: everything jobrunner hooks into Celery is on the app it returns."""

from __future__ import annotations

import pytest
from celery import current_app

from jobrunner.config import Settings
from jobrunner.tasks.middleware import installed
from jobrunner.tasks.registry import BUILTIN_STEP_MODULES
from jobrunner.worker.app import CONSUMER_STEPS, TRANSPORT, create_app
from jobrunner.worker.monitoring.step_metrics import StepMetrics
from jobrunner.worker.monitoring.tracing import Tracing
from jobrunner.worker.runtime.tracking import JobTracking

URL = "redis://:pw@127.0.0.1:1/0"  # never connected to: building an app connects to nothing


@pytest.fixture
def settings() -> Settings:
    return Settings(broker_url=URL, imports=["my.steps"])


def test_names_the_runtime_the_config_leaves_out(settings: Settings) -> None:
    app = create_app(settings, set_as_current=False)
    assert app.conf.imports[: len(BUILTIN_STEP_MODULES)] == list(BUILTIN_STEP_MODULES)
    assert "jobrunner.worker.runtime.remote_submit" in app.conf.imports
    assert app.conf.imports[-1] == "my.steps"
    assert app.conf.broker_transport == TRANSPORT
    assert app.conf.result_backend.startswith("jobrunner.worker.runtime.result_backend:")
    assert set(CONSUMER_STEPS) <= app.steps["consumer"]


def test_middleware_is_per_app(settings: Settings) -> None:
    """An app built by the factory runs step metrics, tracing and job tracking, in that order;
    a foreign app in the same process runs no jobrunner hooks, whatever was imported."""
    from celery import Celery

    ours = create_app(settings, set_as_current=False)
    assert [type(m) for m in installed(ours)] == [StepMetrics, Tracing, JobTracking]
    assert installed(ours) is installed(ours)  # built once per app
    assert installed(Celery("theirs", set_as_current=False)) == ()


def test_a_client_app_does_not_become_current(settings: Settings) -> None:
    before = current_app._get_current_object()
    create_app(settings, set_as_current=False)
    assert current_app._get_current_object() is before
