"""Process plumbing shared by every benchmark: start worker fleets, wait until they answer,
stop them (and every child they forked) whatever happens, and small statistics helpers.

Every process started here leads its own session, so stopping a fleet kills exactly what this
run started and nothing else on the (shared) machine.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from jobrunner.config import get_settings
from jobrunner.worker.app import create_app
from jobrunner.worker.broker.connection import resolve

if TYPE_CHECKING:
    from celery import Celery

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0

_began = time.monotonic()
_sessions: list[int] = []  # every process started here leads its own session


def progress(message: str) -> None:
    """One line per phase on stderr, so stdout stays the report (or the JSON)."""
    print(f"[{time.monotonic() - _began:6.1f} s] {message}", file=sys.stderr, flush=True)


def adopt(pid: int) -> None:
    """Remember a session leader started elsewhere (e.g. Redis), so `leftovers` covers it."""
    _sessions.append(pid)


def session_members(sid: int) -> list[psutil.Process]:
    """Live processes of the session `sid`: a worker and its prefork children, or Redis."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getsid(proc.pid) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, PermissionError):
            continue
    return found


def leftovers() -> list[psutil.Process]:
    return [proc for sid in _sessions for proc in session_members(sid)]


def kill_leftovers() -> list[int]:
    """SIGKILL whatever this run started and still lives; their pids."""
    left = leftovers()
    for proc in left:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    return [proc.pid for proc in left]


@dataclass(frozen=True)
class Launch:
    """One worker process to start: `ready()` says when it serves (a ping, a first job)."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready: Callable[[], bool] = lambda: True


def jobrunner_worker(pool: str, node: str, env: dict[str, str]) -> Launch:
    """A worker started exactly as the tests start them (`python -m jobrunner worker`)."""
    app = jobrunner_app()
    return Launch(
        node,
        [sys.executable, "-m", "jobrunner", "worker", "--pool", pool, "--node-name", node],
        env,
        lambda: bool(app.control.ping(destination=[node], timeout=0.5)),
    )


class Fleet:
    """Worker processes, each in its own session with its log in `log_dir`."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: dict[str, tuple[subprocess.Popen[bytes], Launch]] = {}

    def start(self, launch: Launch) -> None:
        with open(self.log_dir / f"{launch.name}.log", "wb") as log:
            process = subprocess.Popen(
                launch.argv,
                env={**os.environ, **launch.env},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its session holds its children too, for the kill
            )
        self.processes[launch.name] = (process, launch)
        _sessions.append(process.pid)

    def wait_ready(self) -> None:
        """Until every worker is ready; started together, their start-ups overlap."""
        deadline = time.monotonic() + START_TIMEOUT_S
        for name, (process, launch) in self.processes.items():
            while not launch.ready():
                if process.poll() is not None:
                    tail = (self.log_dir / f"{name}.log").read_text()[-2000:]
                    raise RuntimeError(f"worker {name} exited with {process.returncode}:\n{tail}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker {name} was not ready in {START_TIMEOUT_S:.0f} s")
                time.sleep(0.05)

    def members(self) -> list[psutil.Process]:
        """Every live process of the fleet: the workers and the children they forked."""
        return [
            proc for process, _ in self.processes.values() for proc in session_members(process.pid)
        ]

    def rss_mb(self) -> float:
        """Resident memory of the whole fleet, in MiB."""
        total = 0
        for proc in self.members():
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total / 1024**2

    def stop(self) -> None:
        """Warm shutdown (SIGTERM: running steps finish), then SIGKILL whatever outlives it."""
        for process, _ in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process, _ in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for child in session_members(process.pid):  # children a killed parent left behind
                child.kill()
        self.processes.clear()


@contextmanager
def fleet(log_dir: Path, launches: list[Launch]) -> Iterator[Fleet]:
    """Run `launches` for the block: all ready first, all stopped after, even on Ctrl-C."""
    started = Fleet(log_dir)
    try:
        for launch in launches:
            started.start(launch)
        started.wait_ready()
        yield started
    finally:
        started.stop()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), interpolated between samples."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def wait_until(done: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.01) -> None:
    """Poll `done` until it holds; RuntimeError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": platform.python_version(),
        "load_1m_at_start": round(os.getloadavg()[0], 2),
    }


def configure_environment(redis_url: str, data_dir: Path) -> None:
    """Workers inherit this environment, and `jobrunner_app` reads it."""
    os.environ.update(
        {
            "JOBRUNNER_BROKER_URL": redis_url,
            "JOBRUNNER_DATA_DIR": str(data_dir),
            "JOBRUNNER_IMPORTS": "jobrunner.benchmarks.steps",
            "PYTHONPATH": str(ROOT),
        }
    )
    get_settings.cache_clear()


_APPS: dict[str, Celery] = {}


def jobrunner_app() -> Celery:
    """An app on the benchmark's broker (as `configure_environment` set it), for pings and
    inspections; one per broker URL."""
    settings = resolve(get_settings())
    url = settings.broker_url or ""
    if url not in _APPS:
        _APPS[url] = create_app(settings, set_as_current=False)
    return _APPS[url]


def wait_busy(app: Celery, node: str, count: int, timeout_s: float = 30.0) -> None:
    """Until Celery worker `node` runs `count` tasks at once, i.e. all its processes are busy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        active = app.control.inspect(destination=[node], timeout=0.5, limit=1).active() or {}
        if len(active.get(node, [])) >= count:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{node} never had {count} tasks running")
