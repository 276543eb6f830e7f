"""The local stack as a user runs it with no broker configured: `jobrunner up` starts a private
Redis, the pools and Flower; `jobrunner submit` in another process finds it; `jobrunner down`
(SIGTERM to `up`) stops it all, and SIGKILL of `up` leaves nothing running.
`jobrunner demo` runs the sample pipeline at every tier and cleans up after itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from jobrunner.worker.broker.embedded import free_port
from tests.conftest import ROOT
from tests.support.cli import JOBRUNNER, run

pytestmark = pytest.mark.integration


def _env(data_dir: Path) -> dict[str, str]:
    """This user's environment: no broker configured, a fresh data dir, free Flower and metrics
    ports."""
    env = {k: v for k, v in os.environ.items() if k != "JOBRUNNER_BROKER_URL"}
    env.update(
        JOBRUNNER_DATA_DIR=str(data_dir),
        JOBRUNNER_FLOWER__PORT=str(free_port()),
        JOBRUNNER_METRICS__PORT=str(free_port()),
        JOBRUNNER_API__PORT=str(free_port()),
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
        flat = output.replace("\n", "")  # the console wraps long paths at any character
        assert "Flower: http://127.0.0.1:" in flat and "flower.auth" in flat
        assert "metrics: http://127.0.0.1:" in flat and "metrics.auth" in flat
        children = _descendants(up.pid)
        assert any("redis-server" in " ".join(p.cmdline()) for p in children)
        assert "api: http://127.0.0.1:" in output
        assert any(p.cmdline()[-2:] == ["jobrunner", "api"] for p in children)

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
        # `jobrunner down`, from another terminal, stops it as Ctrl-C would.
        down = subprocess.run([JOBRUNNER, "down"], env=env, capture_output=True, text=True)
        assert down.returncode == 0 and down.stdout.startswith("stopped: up"), down.stderr
        up.wait(timeout=90)
    finally:
        if up.poll() is None:
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


def _up(env: dict[str, str]) -> subprocess.Popen[str]:
    """`jobrunner up` (one small pool, no Flower, no exporter), once it says it runs."""
    up = subprocess.Popen(
        [JOBRUNNER, "up", "--no-flower", "--no-metrics"],
        env={**env, "JOBRUNNER_POOLS__GENERAL__CONCURRENCY": "1"},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert up.stdout is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and up.poll() is None:
        if "running; Ctrl-C stops" in up.stdout.readline():
            return up
    raise AssertionError(f"jobrunner up did not start (exit {up.poll()})")


def _running(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_up_killed_with_sigkill_leaves_nothing_running(tmp_path: Path) -> None:
    env = _env(tmp_path)
    up = _up(env)
    children = _descendants(up.pid)
    assert any("redis-server" in " ".join(p.cmdline()) for p in children)
    up.kill()
    up.wait()
    deadline = time.monotonic() + 30
    while _running(children) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftover = _running(children)
    for process in leftover:  # clean up after a failure
        process.kill()
    assert leftover == []
    # What it left behind is recognized as stale: `down` has nothing to stop.
    down = subprocess.run([JOBRUNNER, "down"], env=env, capture_output=True, text=True, timeout=60)
    assert (down.returncode, down.stdout.strip()) == (0, "no local stack runs")


def test_down_stops_what_a_vanished_up_left_running(tmp_path: Path) -> None:
    """Where children do not die with `up` (not Linux, an older jobrunner), its record names
    them; `down` stops them and forgets the stale broker URL."""
    orphan = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        started = psutil.Process(orphan.pid).create_time()
        gone = {"name": "up", "pid": 2**22 + 1, "started": 0.0}
        record = [gone, {"name": "worker-general", "pid": orphan.pid, "started": started}]
        (tmp_path / "stack.json").write_text(json.dumps(record))
        (tmp_path / "broker.url").write_text("redis://:x@127.0.0.1:1/0\n")
        down = run("down", JOBRUNNER_DATA_DIR=str(tmp_path))
        assert (down.returncode, down.stdout.strip()) == (0, "stopped: worker-general")
        assert orphan.wait(10) == -signal.SIGTERM
        assert not (tmp_path / "stack.json").exists() and not (tmp_path / "broker.url").exists()
    finally:
        orphan.kill()
        orphan.wait()
