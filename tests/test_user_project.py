"""jobrunner inside an ordinary application: a folder with its own `tasks.py` (Celery's tutorial
name), `config/` package (cookiecutter-django's) and `worker.py`. Nothing of jobrunner's may be
shadowed by them, and the application's `tasks.py` is a step module like any other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Workers

pytestmark = pytest.mark.integration

# Each of the application's modules fails loudly if anything imports it in place of ours.
SHADOWS = {
    "config/__init__.py": 'raise RuntimeError("the application\'s config package was imported")\n',
    "worker.py": 'raise RuntimeError("the application\'s worker.py was imported")\n',
}
USER_TASKS = """
from typing import Any

from jobrunner import Pipeline, StepContext, StepPayload, register_pipeline, step


class Numbers(StepPayload):
    n: int = 1


@step
def triple(payload: Numbers, upstream: Any, ctx: StepContext) -> int:
    return payload.n * 3


register_pipeline(Pipeline.model_validate({"name": "app_triple", "flow": {"step": "triple"}}))
"""
JOBRUNNER = str(Path(sys.executable).with_name("jobrunner"))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("application")
    for name, text in {**SHADOWS, "tasks.py": USER_TASKS}.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text(text)
    return folder


@pytest.fixture(scope="module")
def app_env(stack_env: dict[str, str]) -> dict[str, str]:
    """The test broker and data dir, the application's `tasks` as the step module, and no
    PYTHONPATH: only the working directory and the installed jobrunner are importable."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, **stack_env, "PYTHONPATH": "", "JOBRUNNER_IMPORTS": "tasks"}


def run(project: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, cwd=project, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done


def test_client_imports(project: Path, app_env: dict[str, str]) -> None:
    code = "from jobrunner import Client; print(Client().pipeline('app_triple').name)"
    assert run(project, app_env, sys.executable, "-c", code).stdout.strip() == "app_triple"


def test_pipelines_lists_the_applications_own(project: Path, app_env: dict[str, str]) -> None:
    listed = json.loads(run(project, app_env, JOBRUNNER, "pipelines", "--json").stdout)
    assert listed["app_triple"]["steps"] == ["triple"]
    assert "features" in listed  # ours load beside it


def test_plain_celery_tooling(project: Path, app_env: dict[str, str]) -> None:
    report = run(project, app_env, sys.executable, "-m", "celery", "-A", "jobrunner", "report")
    assert "jobrunner" in report.stdout


def test_worker_runs_the_applications_step(
    project: Path, app_env: dict[str, str], workers: Workers
) -> None:
    worker = workers.start("general", "application@test", cwd=project, **app_env)
    try:
        done = run(
            project, app_env, JOBRUNNER, "submit", "app_triple", "--payload", '{"n": 14}',
            "--wait", "--timeout", "60", "--priority", "low",
        )  # fmt: skip
        assert json.loads(done.stdout) == 42
    finally:
        worker.terminate()
        worker.wait(timeout=30)
