"""Fixtures that start real servers: a redis-server (the embedded binary) and Celery workers
started the way production starts them (`jobrunner worker --pool NAME`). Each is stopped at the
end of its scope, and each test starts with empty tier queues."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from config import TIERS, get_settings
from tests.support.steps import STARTS
from worker import broker
from worker.app import app, configure
from worker.client import Client
from worker.embedded_redis import EmbeddedRedis
from worker.transport import wake_key

ROOT = Path(__file__).resolve().parents[1]
WORKER_START_TIMEOUT_S = 60


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def stack_env(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment for this process and the workers: our Redis, a temp data dir, test steps."""
    env = {
        "JOBRUNNER_BROKER_URL": redis_url,
        "JOBRUNNER_DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "JOBRUNNER_IMPORTS": "tests.support.steps",
        "PYTHONPATH": str(ROOT),
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    get_settings.cache_clear()
    configure(app, broker.resolve(get_settings()))
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


@pytest.fixture
def redis_client(stack_env: dict[str, str]) -> Iterator[redis.Redis]:
    """A client on the test Redis; the tier queues (and their wake tokens) and the start log are
    emptied first."""
    client = redis.Redis.from_url(stack_env["JOBRUNNER_BROKER_URL"])
    settings = get_settings()
    queues = [settings.queue(tier) for tier in TIERS]
    client.delete(STARTS, *queues, *map(wake_key, queues))
    yield client
    client.close()


@pytest.fixture
def client(stack_env: dict[str, str]) -> Client:
    return Client()


class Workers:
    """Starts `jobrunner worker` processes and stops them all at the end of the scope."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, pool: str, node: str, **env: str) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{node}.log", "wb")  # noqa: SIM115 - the process owns it
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "worker", "--pool", pool, "--node-name", node],
            env={**os.environ, **self.env, **env},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = (self.log_dir / f"{node}.log").read_text()[-2000:]
                raise RuntimeError(f"worker {node} exited with {process.returncode}:\n{tail}")
            try:
                if app.control.ping(destination=[node], timeout=0.5):
                    return process
            except (redis.ConnectionError, OSError):
                # A pooled connection from before a broker restart: the next try reconnects.
                time.sleep(0.1)
        raise RuntimeError(f"worker {node} did not answer a ping in {WORKER_START_TIMEOUT_S} s")

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()


@pytest.fixture(scope="module")
def workers(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workers]:
    started = Workers(stack_env, tmp_path_factory.mktemp("worker-logs"))
    yield started
    started.stop_all()
