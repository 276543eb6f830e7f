"""Steps declaring a resource class run only in pools serving it; a class no pool serves, and
other bad pool settings, stop a worker at start-up with one line."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import Workers
from tests.support.cli import run

pytestmark = pytest.mark.integration

# Not imported from tests.support.gpu_steps: that would register its gpu step in this process,
# whose configuration has no gpu pool.
MARK = "TEST_WORKER_MARK"
WITH_GPU_STEPS = {"JOBRUNNER_IMPORTS": "tests.support.steps,tests.support.gpu_steps"}
GPU_POOL = {
    "JOBRUNNER_POOLS__GPU__TIERS": '["high", "medium", "low"]',
    "JOBRUNNER_POOLS__GPU__CONCURRENCY": "1",
    "JOBRUNNER_POOLS__GPU__RESOURCES": '["gpu"]',
}


@pytest.fixture(scope="module")
def gpu_fleet(workers: Workers) -> Iterator[None]:
    env = {**WITH_GPU_STEPS, **GPU_POOL}
    workers.start("gpu", "gpu-routing@test", **env, **{MARK: "gpu"})
    workers.start(
        "general",
        "general-routing@test",
        **env,
        JOBRUNNER_POOLS__GENERAL__CONCURRENCY="1",
        **{MARK: "general"},
    )
    yield


@pytest.mark.parametrize("tier", ["high", "low"])
def test_resource_step_runs_only_in_its_pool(gpu_fleet: None, tier: str) -> None:
    for _ in range(4):  # either pool may run the plain step; only gpu runs `train`
        result = run(
            "submit", "train", "-p", tier, "--wait", "--json", **WITH_GPU_STEPS, **GPU_POOL
        )
        assert result.returncode == 0, result.stderr
        before, train = json.loads(result.stdout)["result"].split("->")
        assert before in ("gpu", "general") and train == "gpu"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            WITH_GPU_STEPS,
            "step train needs resource class 'gpu', which no pool serves (pools serve: none)",
        ),
        ({"JOBRUNNER_POOLS__GENERAL__CONCURRENCY": "-2"}, "pools.general.concurrency"),
        ({"JOBRUNNER_POOLS__GENERAL__TIERS": '["high", "urgent"]'}, "pools.general.tiers.1"),
        (
            {**GPU_POOL, "JOBRUNNER_POOLS__GPU__TIERS": '["high"]'},
            "resource class 'gpu' has no pool for tier medium, low",
        ),
    ],
)
def test_bad_pool_setup_stops_worker_with_one_line(env: dict[str, str], message: str) -> None:
    result = run("worker", "--pool", "general", **env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
