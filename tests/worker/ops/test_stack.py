"""The local stack as a user runs it with no broker configured: `jobrunner up` starts a private
Redis, the pools and Flower; `jobrunner submit` in another process finds it; SIGTERM stops it all.
`jobrunner demo` runs the sample pipeline at every tier and cleans up after itself."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from jobrunner.worker.broker.embedded import free_port
from tests.conftest import ROOT
from tests.support.cli import JOBRUNNER

pytestmark = pytest.mark.integration


def _env(data_dir: Path) -> dict[str, str]:
    """This user's environment: no broker configured, a fresh data dir, free Flower and metrics
    ports."""
    env = {k: v for k, v in os.environ.items() if k != "JOBRUNNER_BROKER_URL"}
    env.update(
        JOBRUNNER_DATA_DIR=str(data_dir),
        JOBRUNNER_FLOWER__PORT=str(free_port()),
        JOBRUNNER_METRICS__PORT=str(free_port()),
        JOBRUNNER_IMPORTS="tests.support.steps",
        PYTHONPATH=str(ROOT),
    )
    return env


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_up_serves_submit_then_stops_everything(tmp_path: Path) -> None:
    env = _env(tmp_path)
    up = subprocess.Popen([JOBRUNNER, "up"], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert up.stdout is not None
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            lines.append(up.stdout.readline())
            if "running; Ctrl-C stops" in lines[-1] or up.poll() is not None:
                break
        output = "".join(lines)
        assert "running; Ctrl-C stops" in output, output
        assert "Flower: http://127.0.0.1:" in output and "flower.auth" in output
        assert "metrics: http://127.0.0.1:" in output and "metrics.auth" in output
        children = _descendants(up.pid)
        assert any("redis-server" in " ".join(p.cmdline()) for p in children)

        submitted = subprocess.run(
            [JOBRUNNER, "submit", "chain3", "--payload", '{"start": 1}', "--wait"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert submitted.returncode == 0, submitted.stderr
        assert submitted.stdout.strip() == "3"
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=90)
    assert up.returncode == 0
    assert not (tmp_path / "broker.url").exists()
    time.sleep(0.5)
    assert [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []


def test_demo_runs_every_tier_and_cleans_up(tmp_path: Path) -> None:
    result = subprocess.run(
        [JOBRUNNER, "demo", "--jobs", "2"],
        env=_env(tmp_path),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    table = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in table] == ["high", "medium", "low"]
    assert all(row.split("│")[3].strip() == "2" for row in table)  # succeeded, per tier
    assert "Flower: http://127.0.0.1:" in result.stdout
    assert len(list((tmp_path / "features").glob("demo-*-?/_versions/00000001.json"))) == 6
    assert len(list((tmp_path / "lineage").glob("*.json"))) == 6
    assert not (tmp_path / "broker.url").exists()
